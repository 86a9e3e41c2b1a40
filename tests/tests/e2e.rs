//! The integration suite: the operator (run out of cluster from the freshly built binary) against
//! a real API server, driven with real kubectl where a user would use it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use modelship_crds::MLModel;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, is_ready, kubectl, kubectl_stdin, patch_mlmodel, remove_mlmodel_field,
    root, server_image, setup, wait_for, wait_ready,
};

const T: Duration = Duration::from_secs(60);

fn example() -> String {
    root().join("examples/iris.yaml").to_str().unwrap().to_string()
}

async fn wait_condition(models: &Api<MLModel>, name: &str, type_: &str, status: &str, reason: &str) -> MLModel {
    wait_for(&format!("{name} {type_}={status} ({reason})"), T, || async {
        models.get_opt(name).await.ok().flatten().filter(|m| {
            m.status.as_ref().and_then(|s| s.condition(type_)).is_some_and(|c| c.status == status && c.reason == reason)
        })
    })
    .await
}

/// Deploys examples/iris.yaml with kubectl and waits until it is Ready.
async fn iris(c: &Client, ns: &TestNamespace) -> (Api<MLModel>, MLModel) {
    kubectl(&["apply", "-n", &ns.name, "-f", &example()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let m = wait_ready(&models, "iris", None, T).await;
    (models, m)
}

#[tokio::test]
async fn the_cluster_runs_the_pinned_version_with_a_ready_node() {
    let (c, _ns) = setup("version").await;
    // tests/run sets this from tests/cluster/versions.env; the kind workflow from its node image.
    let want = std::env::var("MODELSHIP_EXPECT_K8S_VERSION")
        .expect("MODELSHIP_EXPECT_K8S_VERSION names the expected server version");
    assert_eq!(c.apiserver_version().await.unwrap().git_version, want);
    let version = kubectl(&["version", "-o", "json"]).unwrap();
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], want.as_str(), "kubectl version reports the pinned version");
    let nodes =
        kubectl(&["get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"]).unwrap();
    assert!(nodes.split_whitespace().any(|s| s == "True"), "a Ready node: {nodes}");
}

#[tokio::test]
async fn crd_is_established_and_documented() {
    let (_c, _ns) = setup("crd").await;
    let crd = kubectl(&[
        "get",
        "crd",
        "mlmodels.modelship.dev",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    ])
    .unwrap();
    assert_eq!(crd, "True");
    let explain = wait_for("kubectl explain to know MLModel", T, || async {
        kubectl(&["explain", "mlmodel.spec.model.uri"]).ok()
    })
    .await;
    assert!(explain.contains("configmap://NAME/KEY") && explain.contains("pvc://CLAIM/PATH"), "{explain}");
    let explain = kubectl(&["explain", "mlmodel.status.conditions"]).unwrap();
    assert!(explain.contains("fully rolled out"), "{explain}");
}

#[tokio::test]
async fn invalid_mlmodels_are_rejected_naming_the_field() {
    let (_c, ns) = setup("invalid").await;
    let cases = [
        (r#"{"model":{"uri":"s3://bucket/key"}}"#, "spec.model.uri"),
        (r#"{"model":{"uri":"configmap://m/k","sha256":"xyz"}}"#, "spec.model.sha256"),
        (r#"{"model":{"uri":"configmap://m/k","format":"pmml"}}"#, "spec.model.format"),
        (r#"{"model":{"uri":"configmap://m/k"},"replicas":-1}"#, "spec.replicas"),
        (
            r#"{"model":{"uri":"configmap://m/k"},"autoscaling":{"minReplicas":4,"maxReplicas":2}}"#,
            "minReplicas must be less than or equal to maxReplicas",
        ),
        (r#"{"model":{"uri":"configmap://m/k"},"server":{"port":80}}"#, "spec.server.port"),
        (r#"{"model":{"uri":"configmap://m/k"},"server":{"limits":{"maxRows":0}}}"#, "spec.server.limits.maxRows"),
        (
            r#"{"model":{"uri":"configmap://m/k"},"server":{"limits":{"maxBodyBytes":10}}}"#,
            "spec.server.limits.maxBodyBytes",
        ),
        (r#"{"model":{"uri":"pvc://claim/../etc"}}"#, "spec.model.uri"),
        (r#"{"replicas":1}"#, "spec.model: Required value"),
    ];
    for (spec, want) in cases {
        let doc = format!(
            r#"{{"apiVersion":"modelship.dev/v1alpha1","kind":"MLModel","metadata":{{"name":"bad"}},"spec":{spec}}}"#
        );
        let err = kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&doc)).expect_err(spec).to_string();
        assert!(err.contains(want), "{spec}: error does not name {want:?}: {err}");
    }
    let models = kubectl(&["get", "mlmodels", "-n", &ns.name, "-o", "name"]).unwrap();
    assert!(models.trim().is_empty(), "nothing was stored: {models}");
}

#[tokio::test]
async fn iris_becomes_ready_and_a_noop_reconcile_writes_nothing() {
    let (c, ns) = setup("iris").await;
    let op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let (models, m) = iris(&c, &ns).await;
    let st = m.status.clone().unwrap();
    assert_eq!(st.observed_generation, m.metadata.generation);
    assert_eq!(st.ready_replicas, 1);
    assert_eq!(st.url.as_deref(), Some(format!("http://iris.{}.svc", ns.name).as_str()));

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let d = deployments.get("iris").await.unwrap();
    let available = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    assert!(available, "Deployment Available");
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), &ns.name);
    wait_for("a ready endpoint behind the Service", T, || async {
        let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=iris")).await.ok()?;
        list.items
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .then_some(())
    })
    .await;

    let table = kubectl(&["get", "mlm", "-n", &ns.name]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "VERSION", "REPLICAS", "URL", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["iris", "True", "v1", "1/1", &format!("http://iris.{}.svc", ns.name)]);

    // Let the operator settle, then trigger a reconcile that has nothing to do.
    let deadline = tokio::time::Instant::now() + T;
    let mut last = -1.0;
    loop {
        let now = op.metric("modelship_operator_reconciles_total").await;
        if now == last {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the operator never went quiet");
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let rv = |o: Option<String>| o.unwrap_or_default();
    let before = (
        rv(deployments.get("iris").await.unwrap().resource_version()),
        rv(services.get("iris").await.unwrap().resource_version()),
    );
    let writes = op.metric("modelship_operator_status_writes_total").await;
    let reconciles = op.metric("modelship_operator_reconciles_total").await;
    let sent = op.writes_sent().await;
    // Finished reconciles: the duration histogram counts a reconcile when it ends.
    let finished = || async { op.metric("modelship_operator_reconcile_duration_seconds_count").await };
    let before_poke = finished().await;
    kubectl(&["annotate", "-n", &ns.name, "mlmodel", "iris", "example.com/poke=1"]).unwrap();
    let poked = rv(models.get("iris").await.unwrap().resource_version());
    wait_for("a reconcile after the annotation, finished", T, || async {
        (op.metric("modelship_operator_reconciles_total").await > reconciles && finished().await > before_poke)
            .then_some(())
    })
    .await;
    let after = (
        rv(deployments.get("iris").await.unwrap().resource_version()),
        rv(services.get("iris").await.unwrap().resource_version()),
    );
    assert_eq!(before, after, "a no-op reconcile changed a child");
    assert_eq!(rv(models.get("iris").await.unwrap().resource_version()), poked, "a no-op reconcile wrote the MLModel");
    // A shared operator's counter also counts other models' writes; our own process's is exact.
    if op.is_own() {
        assert_eq!(op.metric("modelship_operator_status_writes_total").await, writes, "a no-op reconcile wrote status");
        assert_eq!(op.writes_sent().await, sent, "a no-op reconcile sent a write request (an apply of no change)");
    }
}

#[tokio::test]
async fn a_spec_change_rolls_out_and_ready_goes_false_then_true() {
    let (c, ns) = setup("rollout").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let (models, m) = iris(&c, &ns).await;
    let generation = m.metadata.generation.unwrap();

    let stream =
        watcher::watcher(models.clone(), watcher::Config::default().fields("metadata.name=iris")).applied_objects();
    let (mut listed, watching) = modelship_tests::started();
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(m)) = stream.try_next().await {
            listed.done();
            let st = m.status.clone().unwrap_or_default();
            let ready = st.condition("Ready").map(|c| c.status.clone()).unwrap_or_default();
            seen.push((st.observed_generation.unwrap_or(0), ready.clone()));
            if st.observed_generation == Some(generation + 1) && ready == "True" {
                break;
            }
        }
        seen
    });
    watching.wait("the MLModel watch").await;
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);
    let seen = tokio::time::timeout(T, seen).await.expect("rollout finished").unwrap();
    let new_gen: Vec<&String> = seen.iter().filter(|(g, _)| *g == generation + 1).map(|(_, r)| r).collect();
    assert_eq!(
        new_gen.first().map(|s| s.as_str()),
        Some("False"),
        "Ready must be False first for the new generation: {seen:?}"
    );
    assert_eq!(new_gen.last().map(|s| s.as_str()), Some("True"), "{seen:?}");

    let rs: Api<ReplicaSet> = Api::namespaced(c.clone(), &ns.name);
    let sets = rs.list(&ListParams::default().labels("modelship.dev/model=iris")).await.unwrap().items;
    assert_eq!(sets.len(), 2, "a new ReplicaSet for the new template");
    let live = models.get("iris").await.unwrap();
    assert_eq!(live.status.unwrap().model_version.as_deref(), Some("v2"));

    // Editing the ConfigMap the model comes from rolls out too.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["modelship.dev/rollout-hash"]
            .clone()
    };
    let before = hash(&deployments.get("iris").await.unwrap());
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let mut data = cms.get("iris-model").await.unwrap().data.unwrap();
    let json = data.get_mut("model.json").unwrap();
    json.push(' ');
    cms.patch("iris-model", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": data}))).await.unwrap();
    wait_for("a new pod template after the ConfigMap changed", T, || async {
        let d = deployments.get("iris").await.ok()?;
        (hash(&d) != before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_scale_and_autoscaling() {
    let (c, ns) = setup("scale").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let (models, _) = iris(&c, &ns).await;
    kubectl(&["scale", "mlmodel", "iris", "-n", &ns.name, "--replicas=3"]).unwrap();
    let m = wait_for("3 ready replicas", T, || async {
        models.get("iris").await.ok().filter(|m| is_ready(m, None) && m.status.as_ref().unwrap().ready_replicas == 3)
    })
    .await;
    assert_eq!(m.status.unwrap().replica_summary.as_deref(), Some("3/3"));
    let scale =
        kubectl(&["get", "--raw", &format!("/apis/modelship.dev/v1alpha1/namespaces/{}/mlmodels/iris/scale", ns.name)])
            .unwrap();
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "modelship.dev/model=iris");

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"autoscaling":{"minReplicas":2,"maxReplicas":5}}}"#);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), &ns.name);
    let hpa = wait_for("the HPA", T, || async { hpas.get_opt("iris").await.ok().flatten() }).await;
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas, spec.scale_target_ref.name.as_str()), (Some(2), 5, "iris"));
    wait_for("the operator to stop owning spec.replicas", T, || async {
        let d = deployments.get("iris").await.ok()?;
        (!d.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some("modelship-operator")
                && m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        }))
        .then_some(d)
    })
    .await;
    // The handover must not reset the live count to 1.
    for _ in 0..10 {
        let d = deployments.get("iris").await.unwrap();
        assert!(d.spec.unwrap().replicas.unwrap_or(0) >= 2, "replicas dropped below minReplicas during the handover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    remove_mlmodel_field(&ns.name, "iris", "/spec/autoscaling");
    wait_for("the HPA to be deleted", T, || async { hpas.get_opt("iris").await.ok().filter(|h| h.is_none()) }).await;
    wait_for("replicas back to spec.replicas", T, || async {
        let d = deployments.get("iris").await.ok()?;
        (d.spec.unwrap().replicas == Some(3)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn edited_or_deleted_children_are_restored() {
    let (c, ns) = setup("drift").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let (_models, _) = iris(&c, &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    kubectl(&["set", "image", "-n", &ns.name, "deployment/iris", "server=evil:latest"]).unwrap();
    kubectl(&["scale", "-n", &ns.name, "deployment/iris", "--replicas=4"]).unwrap();
    wait_for("the edit to be reverted", T, || async {
        let d = deployments.get("iris").await.ok()?;
        let spec = d.spec.unwrap();
        let image = spec.template.spec.unwrap().containers[0].image.clone().unwrap_or_default();
        (image == server_image() && spec.replicas == Some(1)).then_some(())
    })
    .await;
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let uid = services.get("iris").await.unwrap().uid();
    kubectl(&["delete", "service", "iris", "-n", &ns.name, "--wait=true"]).unwrap();
    wait_for("the Service to be recreated", T, || async {
        services.get_opt("iris").await.ok().flatten().filter(|s| s.uid() != uid)
    })
    .await;
    kubectl(&["delete", "deployment", "iris", "-n", &ns.name, "--wait=true"]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the Deployment to be recreated", T, || async { deployments.get_opt("iris").await.ok().flatten() }).await;
    wait_ready(&models, "iris", None, T).await;
}

#[tokio::test]
async fn a_missing_configmap_degrades_then_recovers() {
    let (c, ns) = setup("missing").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let doc = r#"{"apiVersion":"modelship.dev/v1alpha1","kind":"MLModel","metadata":{"name":"late"},
        "spec":{"model":{"uri":"configmap://late-model/model.json","version":"v1"}}}"#;
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(doc)).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let m = wait_condition(&models, "late", "Degraded", "True", "ConfigMapNotFound").await;
    let msg = &m.status.as_ref().unwrap().condition("Degraded").unwrap().message;
    assert!(msg.contains("late-model"), "{msg}");
    assert_eq!(m.status.as_ref().unwrap().condition("Ready").unwrap().status, "False");
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    assert!(deployments.get_opt("late").await.unwrap().is_none(), "no Deployment that could only crash-loop");
    let events = kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "involvedObject.name=late",
        "-o",
        "jsonpath={.items[*].reason}",
    ])
    .unwrap();
    assert!(events.contains("ConfigMapNotFound"), "an Event names the cause: {events}");

    // A key that is not there is its own reason.
    kubectl(&["create", "configmap", "late-model", "-n", &ns.name, "--from-literal=other.json={}"]).unwrap();
    wait_condition(&models, "late", "Degraded", "True", "ConfigMapKeyNotFound").await;
    let data = std::fs::read_to_string(root().join("examples/iris.yaml")).unwrap();
    let cm: serde_yaml::Value = serde_yaml::from_str(data.split("\n---\n").next().unwrap()).unwrap();
    let model_json = cm["data"]["model.json"].as_str().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    cms.patch(
        "late-model",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"model.json": model_json}})),
    )
    .await
    .unwrap();
    wait_ready(&models, "late", None, T).await;
    wait_condition(&models, "late", "Degraded", "False", "AsExpected").await;
}

#[tokio::test]
async fn deleting_the_model_collects_every_child() {
    let (c, ns) = setup("gc").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let (_models, _) = iris(&c, &ns).await;
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"autoscaling":{"minReplicas":1,"maxReplicas":2}}}"#);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the HPA", T, || async { hpas.get_opt("iris").await.ok().flatten() }).await;
    kubectl(&["delete", "mlmodel", "iris", "-n", &ns.name]).unwrap();
    wait_for("every child to be garbage-collected", T, || async {
        let left = kubectl(&[
            "get",
            "deployments,replicasets,services,hpa,pods",
            "-n",
            &ns.name,
            "-l",
            "modelship.dev/model=iris",
            "-o",
            "name",
        ])
        .ok()?;
        left.trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn argocd_tracking_metadata_stays_off_children_and_spec_is_never_written() {
    let (c, ns) = setup("argocd").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let text = std::fs::read_to_string(root().join("examples/iris.yaml")).unwrap();
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&text)).unwrap();
    kubectl(&["label", "-n", &ns.name, "mlmodel", "iris", "app.kubernetes.io/instance=models-prod", "team=fraud"])
        .unwrap();
    kubectl(&[
        "annotate",
        "-n",
        &ns.name,
        "mlmodel",
        "iris",
        "argocd.argoproj.io/tracking-id=models-prod:modelship.dev/MLModel:x/iris",
        "argocd.argoproj.io/sync-wave=2",
    ])
    .unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let m = wait_ready(&models, "iris", None, T).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the user label on children", T, || async {
        deployments.get("iris").await.ok().filter(|d| d.labels().get("team").map(String::as_str) == Some("fraud"))
    })
    .await;
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let d = deployments.get("iris").await.unwrap();
    let s = services.get("iris").await.unwrap();
    for (what, labels, annotations) in
        [("Deployment", d.labels(), d.annotations()), ("Service", s.labels(), s.annotations())]
    {
        assert!(!labels.contains_key("app.kubernetes.io/instance"), "{what} carries ArgoCD's tracking label");
        assert!(annotations.keys().all(|k| !k.starts_with("argocd.argoproj.io/")), "{what}: {annotations:?}");
    }
    let pod_annotations = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap_or_default();
    assert!(pod_annotations.keys().all(|k| !k.starts_with("argocd.argoproj.io/")));
    // Only kubectl ever wrote the spec: the operator's managed fields cover status alone.
    for mf in m.metadata.managed_fields.iter().flatten().filter(|f| f.manager.as_deref() == Some("modelship-operator"))
    {
        assert_eq!(mf.subresource.as_deref(), Some("status"), "the operator wrote outside status: {mf:?}");
    }
}

#[tokio::test]
async fn the_operator_restarted_mid_rollout_converges() {
    let (c, ns) = setup("restart").await;
    let opts = OperatorOptions::for_namespace(&ns.name);
    let op = Operator::start(&opts);
    let (models, m) = iris(&c, &ns).await;
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v9"},"replicas":2}}"#);
    op.kill();
    // A crash leaves the Lease held: the new process (another identity) waits for it to expire.
    let mut restarted = opts.clone();
    restarted.identity.push_str("-2");
    let _op = Operator::start(&restarted);
    let live = wait_for("the new generation Ready", Duration::from_secs(90), || async {
        models.get("iris").await.ok().filter(|x| is_ready(x, None) && x.metadata.generation > m.metadata.generation)
    })
    .await;
    assert_eq!(live.status.unwrap().model_version.as_deref(), Some("v9"));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let args =
        deployments.get("iris").await.unwrap().spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.windows(2).any(|w| w[0] == "--model-version" && w[1] == "v9"), "{args:?}");
    assert_eq!(deployments.get("iris").await.unwrap().spec.unwrap().replicas, Some(2), "the replicas of the patch");
    assert_eq!(live.spec.replicas, 2);
}

#[tokio::test]
async fn two_replicas_with_leader_election_never_both_write() {
    let (c, ns) = setup("leader").await;
    let opts = OperatorOptions::for_namespace(&ns.name);
    let a = Operator::start_own(&OperatorOptions { identity: "replica-a".into(), ..opts.clone() });
    let b = Operator::start_own(&OperatorOptions { identity: "replica-b".into(), ..opts.clone() });
    let (models, _) = iris(&c, &ns).await;
    let (a_leads, b_leads) = (leader_of(&a).await, leader_of(&b).await);
    assert!(a_leads ^ b_leads, "exactly one leader (a: {a_leads}, b: {b_leads})");
    let (leader, standby) = if a_leads { (a, b) } else { (b, a) };
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);
    wait_ready(&models, "iris", Some("v2"), T).await;
    assert!(writes(&leader).await > 0.0);
    assert_eq!(writes(&standby).await, 0.0, "the standby wrote while the leader held the lease");

    // A clean shutdown releases the lease: the standby takes over at once and serves changes.
    assert!(leader.terminate(), "the leader exits cleanly on SIGTERM");
    wait_for("the standby to lead", Duration::from_secs(20), || async { leader_of(&standby).await.then_some(()) })
        .await;
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v3"}}}"#);
    wait_ready(&models, "iris", Some("v3"), T).await; // through the new leader
    let lease =
        kubectl(&["get", "lease", &opts.lease_name, "-n", &ns.name, "-o", "jsonpath={.spec.holderIdentity}"]).unwrap();
    assert!(lease.starts_with("replica-"), "{lease}");
}

async fn leader_of(op: &Operator) -> bool {
    op.metric("modelship_operator_leader").await == 1.0
}

async fn writes(op: &Operator) -> f64 {
    op.metric(r#"modelship_operator_applies_total{action="apply Deployment"}"#).await
        + op.metric("modelship_operator_status_writes_total").await
}
