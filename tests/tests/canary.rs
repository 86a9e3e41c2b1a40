//! Versioned rollouts on a real API server: a canary at a share of traffic (replica split and
//! Gateway API HTTPRoute), automatic rollback of a canary or stable version whose pods fail, and
//! a promotion that never drops the ready pods below the desired count.
//!
//! Failing pods come from the local plane's kwok stages (tests/cluster/kwok-stages): a pod whose
//! version label is `fault-crash-loop` crash-loops, one labelled `fault-never-ready` never
//! becomes ready. Where pods really run (kind), `MODELSHIP_TEST_FAULTS=real` makes them fail for
//! real instead (see `failing_model`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kube::{Api, Client};
use modelship_crds::MLModel;
use modelship_tests::{
    Fault, Operator, OperatorOptions, TestNamespace, client, failing_model, install_crd, iris_model, kubectl,
    patch_mlmodel, real_faults, remove_mlmodel_field, root, wait_for, wait_ready,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

async fn setup(prefix: &str, replicas: i32) -> (Client, TestNamespace, Operator, Api<MLModel>) {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, prefix).await;
    let op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    kubectl(&["apply", "-n", &ns.name, "-f", &root().join("examples/iris.yaml").to_string_lossy()]).unwrap();
    patch_mlmodel(&ns.name, "iris", &format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#));
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", Some("v1"), T).await;
    (c, ns, op, models)
}

/// A merge patch that sets `spec.canary` to `model` at `percent`, plus `extra` spec fields.
fn canary_patch(model: Value, percent: i32, extra: Value) -> String {
    let mut spec = json!({"canary": {"model": model, "trafficPercent": percent}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"spec": spec}).to_string()
}

fn replicas(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1);
    (want, d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0))
}

async fn condition(models: &Api<MLModel>, type_: &str, status: &str, reason: &str) -> MLModel {
    wait_for(&format!("{type_}={status} ({reason})"), T, || async {
        models.get_opt("iris").await.ok().flatten().filter(|m| {
            let s = m.status.clone().unwrap_or_default();
            s.observed_generation == m.metadata.generation
                && s.condition(type_).is_some_and(|c| c.status == status && c.reason == reason)
        })
    })
    .await
}

fn event_reasons(ns: &str) -> String {
    kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"])
        .unwrap()
}

#[tokio::test]
async fn a_canary_at_20_percent_gets_one_of_five_pods_and_ends_when_removed() {
    let (c, ns, _op, models) = setup("canary", 5).await;
    patch_mlmodel(&ns.name, "iris", &canary_patch(iris_model("v2"), 20, json!({})));
    let m = condition(&models, "CanaryReady", "True", "Available").await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let stable = wait_for("stable at 4 replicas", T, || async {
        deployments.get("iris").await.ok().filter(|d| replicas(d) == (4, 4))
    })
    .await;
    let canary = deployments.get("iris-canary").await.unwrap();
    assert_eq!(replicas(&canary), (1, 1));
    let labels = canary.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["modelship.dev/track"], "canary");
    assert_eq!(labels["app.kubernetes.io/version"], "v2");
    assert_eq!(stable.spec.unwrap().template.metadata.unwrap().labels.unwrap()["app.kubernetes.io/version"], "v1");

    let m = wait_ready(&models, "iris", None, T).await.status.unwrap_or(m.status.unwrap());
    let traffic = m.traffic.clone().unwrap();
    assert_eq!((traffic.mode.as_str(), traffic.stable_percent, traffic.canary_percent), ("Replicas", 80, 20));
    assert_eq!((m.stable_version.as_deref(), m.canary_version.as_deref()), (Some("v1"), Some("v2")));
    assert_eq!((m.stable_ready_replicas, m.canary_ready_replicas), (Some(4), Some(1)));
    assert_eq!(m.replica_summary.as_deref(), Some("5/5"));
    // One Service over both tracks: five ready endpoints.
    wait_for("5 ready endpoints behind the Service", T, || async {
        let out = kubectl(&[
            "get",
            "endpointslices",
            "-n",
            &ns.name,
            "-l",
            "kubernetes.io/service-name=iris",
            "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}",
        ])
        .ok()?;
        (out.len() == 5).then_some(())
    })
    .await;
    let printed = kubectl(&["get", "mlm", "iris", "-n", &ns.name, "--no-headers"]).unwrap();
    assert!(printed.contains("True") && printed.contains("5/5"), "{printed}");

    // Ending the experiment: the stable track takes all five pods back, then the canary goes.
    remove_mlmodel_field(&ns.name, "iris", "/spec/canary");
    wait_for("the canary Deployment deleted", T, || async {
        deployments.get_opt("iris-canary").await.ok().flatten().is_none().then_some(())
    })
    .await;
    let m = wait_ready(&models, "iris", Some("v1"), T).await;
    assert_eq!(replicas(&deployments.get("iris").await.unwrap()), (5, 5));
    let st = m.status.unwrap();
    assert!(st.condition("CanaryReady").is_none() && st.traffic.is_none() && st.canary_version.is_none(), "{st:?}");
}

#[tokio::test]
async fn gateway_mode_routes_by_httproute_weights() {
    let (c, ns, _op, models) = setup("gateway", 2).await;
    static GATEWAY_API: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    GATEWAY_API
        .get_or_init(|| async {
            let crds = root().join("tests/testdata/gateway-api/standard-install.yaml");
            kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crds.to_string_lossy()]).unwrap();
            kubectl(&[
                "wait",
                "--for=condition=Established",
                "crd/httproutes.gateway.networking.k8s.io",
                "--timeout=60s",
            ])
            .unwrap();
        })
        .await;
    patch_mlmodel(
        &ns.name,
        "iris",
        &canary_patch(
            iris_model("v2"),
            30,
            json!({"traffic": {"gateway": {"name": "public", "namespace": "infra", "sectionName": "http"}}}),
        ),
    );
    let m = wait_ready(&models, "iris", None, T).await;
    let traffic = m.status.unwrap().traffic.unwrap();
    assert_eq!((traffic.mode.as_str(), traffic.stable_percent, traffic.canary_percent), ("Gateway", 70, 30));

    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let route = routes.get("iris").await.unwrap();
    let spec = &route.data["spec"];
    assert_eq!(spec["parentRefs"][0]["name"], "public");
    assert_eq!(spec["parentRefs"][0]["namespace"], "infra");
    assert_eq!(spec["parentRefs"][0]["sectionName"], "http");
    let backends: Vec<(String, i64)> = spec["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["weight"].as_i64().unwrap()))
        .collect();
    assert_eq!(backends, [("iris-stable".to_string(), 70), ("iris-canary".to_string(), 30)]);
    for track in ["stable", "canary"] {
        let sel =
            kubectl(&["get", "service", &format!("iris-{track}"), "-n", &ns.name, "-o", "jsonpath={.spec.selector}"])
                .unwrap();
        assert!(sel.contains(&format!("\"modelship.dev/track\":\"{track}\"")), "{sel}");
    }
    // With a Gateway the stable Deployment keeps every replica; the canary is sized for 30%.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    assert_eq!(replicas(&deployments.get("iris").await.unwrap()), (2, 2));
    assert_eq!(replicas(&deployments.get("iris-canary").await.unwrap()), (1, 1));

    // A weight change is an edit of the spec.
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"canary":{"trafficPercent":55}}}"#);
    wait_for("weights 45/55", T, || async {
        let r = routes.get("iris").await.ok()?;
        (r.data["spec"]["rules"][0]["backendRefs"][1]["weight"] == 55).then_some(())
    })
    .await;

    // Leaving Gateway mode removes the route and the per-track Services.
    remove_mlmodel_field(&ns.name, "iris", "/spec/traffic");
    wait_for("the HTTPRoute deleted", T, || async {
        routes.get_opt("iris").await.ok().flatten().is_none().then_some(())
    })
    .await;
    wait_for("the track Services deleted", T, || async {
        kubectl(&["get", "service", "iris-stable", "-n", &ns.name]).is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_crash_looping_canary_is_scaled_to_zero_with_degraded_and_an_event() {
    let (c, ns, _op, models) = setup("canary-crash", 4).await;
    patch_mlmodel(&ns.name, "iris", &canary_patch(failing_model(Fault::CrashLoop), 25, json!({})));
    let m = condition(&models, "Degraded", "True", "CanaryRolledBack").await;
    let st = m.status.unwrap();
    let msg = &st.condition("Degraded").unwrap().message;
    assert!(msg.contains("scaled to zero"), "{msg}");
    assert!(msg.contains(if real_faults() { "failed (" } else { "CrashLoopBackOff" }), "{msg}");
    assert_eq!(st.condition("CanaryReady").unwrap().status, "False");
    assert_eq!(st.condition("Ready").unwrap().status, "False", "the spec is not what serves");
    assert!(st.rollback.as_ref().unwrap().failed_canary.is_some());
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    wait_for("canary at 0 and stable back at 4", T, || async {
        let s = deployments.get("iris").await.ok()?;
        let k = deployments.get("iris-canary").await.ok()?;
        (replicas(&s) == (4, 4) && replicas(&k).0 == 0).then_some(())
    })
    .await;
    let traffic = models.get("iris").await.unwrap().status.unwrap().traffic.unwrap();
    assert_eq!((traffic.stable_percent, traffic.canary_percent), (100, 0), "traffic returned to the stable version");
    wait_for("a CanaryRolledBack Event", T, || async {
        event_reasons(&ns.name).contains("CanaryRolledBack").then_some(())
    })
    .await;

    // A fixed canary is tried again.
    let mut fixed = iris_model("v2");
    fixed["sha256"] = Value::Null; // a merge patch null removes the bad checksum of a real fault
    patch_mlmodel(&ns.name, "iris", &json!({"spec": {"canary": {"model": fixed}}}).to_string());
    let m = condition(&models, "CanaryReady", "True", "Available").await;
    assert!(m.status.unwrap().rollback.is_none_or(|r| r.failed_canary.is_none()));
}

#[tokio::test]
async fn a_canary_never_ready_within_the_deadline_is_rolled_back() {
    let (_c, ns, _op, models) = setup("canary-deadline", 2).await;
    patch_mlmodel(
        &ns.name,
        "iris",
        &canary_patch(failing_model(Fault::NeverReady), 50, json!({"rollout": {"progressDeadlineSeconds": 6}})),
    );
    let m = condition(&models, "Degraded", "True", "CanaryRolledBack").await;
    let msg = m.status.unwrap().condition("Degraded").unwrap().message.clone();
    // A real unreachable URL may also end in a crash loop once the server's connect timeout hits.
    assert!(msg.contains("ProgressDeadlineExceeded") || (real_faults() && msg.contains("failed (")), "{msg}");
}

#[tokio::test]
async fn a_crash_looping_stable_version_is_rolled_back_to_the_last_good_one() {
    let (c, ns, _op, models) = setup("rollback", 2).await;
    let good = models.get("iris").await.unwrap().status.unwrap().last_good_model.expect("lastGoodModel once Ready");
    assert_eq!(good.version.as_deref(), Some("v1"));

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let min_available = AvailableWatch::start(&deployments, &["iris"]);
    wait_for("the watch to list the Deployment", T, || async { (!min_available.sums().is_empty()).then_some(()) })
        .await;
    patch_mlmodel(&ns.name, "iris", &json!({"spec": {"model": failing_model(Fault::CrashLoop)}}).to_string());
    let m = condition(&models, "Degraded", "True", "RolledBack").await;
    let st = m.status.unwrap();
    let msg = &st.condition("Degraded").unwrap().message;
    assert!(msg.contains("fault-crash-loop failed") && msg.contains("rolled back to v1"), "{msg}");
    assert_eq!(st.condition("Ready").unwrap().reason, "RolledBack");
    assert_eq!(st.model_version.as_deref(), Some("v1"), "status shows the version that serves");
    assert_eq!(st.last_good_model.unwrap().version.as_deref(), Some("v1"));
    let d = wait_for("the Deployment back on v1, fully available", T, || async {
        deployments.get("iris").await.ok().filter(|d| {
            let labels = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
            labels["app.kubernetes.io/version"] == "v1" && complete(d)
        })
    })
    .await;
    assert_eq!(replicas(&d), (2, 2));
    wait_for("a RolledBack Event", T, || async { event_reasons(&ns.name).contains("RolledBack").then_some(()) }).await;
    let printed = kubectl(&["get", "mlm", "iris", "-n", &ns.name, "--no-headers"]).unwrap();
    assert!(printed.contains("False") && printed.contains("v1"), "{printed}");
    assert!(
        min_available.min() >= 2,
        "ready pods dropped below 2 during the failed rollout: {:?}",
        min_available.sums()
    );

    // The next spec is tried again, and becomes the last good model.
    let mut fixed = iris_model("v3");
    fixed["sha256"] = json!(good.sha256);
    patch_mlmodel(&ns.name, "iris", &json!({"spec": {"model": fixed}}).to_string());
    let m = wait_ready(&models, "iris", Some("v3"), T).await;
    let st = m.status.unwrap();
    assert!(st.rollback.is_none(), "{:?}", st.rollback);
    assert_eq!(st.last_good_model.unwrap().version.as_deref(), Some("v3"));
}

fn complete(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    d.metadata.generation == s.observed_generation
        && s.updated_replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.replicas == Some(want)
}

/// Watches Deployments and records, at every change, the sum of the named ones' available
/// replicas (a deleted one counts as 0).
struct AvailableWatch {
    sums: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AvailableWatch {
    fn start(api: &Api<Deployment>, names: &[&str]) -> Self {
        let stream = watcher::watcher(api.clone(), watcher::Config::default());
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let sums = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = sums.clone();
        let task = tokio::spawn(async move {
            let mut current = std::collections::BTreeMap::<String, i32>::new();
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(event)) = stream.try_next().await {
                let (d, deleted) = match event {
                    watcher::Event::Apply(d) | watcher::Event::InitApply(d) => (d, false),
                    watcher::Event::Delete(d) => (d, true),
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                let name = d.metadata.name.clone().unwrap_or_default();
                if names.contains(&name) {
                    current.insert(name, if deleted { 0 } else { replicas(&d).1 });
                    // Only once every Deployment was listed: the initial list arrives one by one.
                    if current.len() == names.len() {
                        out.lock().unwrap().push(current.values().sum());
                    }
                }
            }
        });
        Self { sums, task }
    }

    fn sums(&self) -> Vec<i32> {
        self.sums.lock().unwrap().clone()
    }

    /// The lowest sum seen; panics if nothing was seen.
    fn min(&self) -> i32 {
        let sums = self.sums();
        assert!(!sums.is_empty(), "the watch saw no Deployment");
        sums.into_iter().min().unwrap()
    }
}

impl Drop for AvailableWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn promotion_by_a_spec_edit_never_drops_ready_pods_below_desired() {
    let (c, ns, _op, models) = setup("promote", 4).await;
    patch_mlmodel(&ns.name, "iris", &canary_patch(iris_model("v2"), 25, json!({})));
    wait_ready(&models, "iris", None, T).await;
    condition(&models, "CanaryReady", "True", "Available").await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    wait_for("3 stable + 1 canary", T, || async {
        let s = deployments.get("iris").await.ok()?;
        let k = deployments.get("iris-canary").await.ok()?;
        (replicas(&s) == (3, 3) && replicas(&k) == (1, 1)).then_some(())
    })
    .await;

    let watch = AvailableWatch::start(&deployments, &["iris", "iris-canary"]);
    wait_for("the watch to list both Deployments", T, || async { (!watch.sums().is_empty()).then_some(()) }).await;
    // Promotion is one commit: the canary's model becomes spec.model and spec.canary goes.
    patch_mlmodel(
        &ns.name,
        "iris",
        r#"{"spec":{"model":{"uri":"configmap://iris-model/model.json","version":"v2"},"canary":null}}"#,
    );
    wait_ready(&models, "iris", Some("v2"), T).await;
    wait_for("the canary Deployment deleted", T, || async {
        deployments.get_opt("iris-canary").await.ok().flatten().is_none().then_some(())
    })
    .await;
    let d = deployments.get("iris").await.unwrap();
    assert_eq!(replicas(&d), (4, 4));
    wait_for("the watch to see the canary gone", T, || async { (watch.sums().last() == Some(&4)).then_some(()) }).await;
    let sums = watch.sums();
    assert!(sums.len() >= 3, "the watch saw the rollout: {sums:?}");
    assert!(watch.min() >= 4, "ready pods dropped below the desired 4 during promotion: {sums:?}");
    assert_eq!(*sums.last().unwrap(), 4, "{sums:?}");
}
