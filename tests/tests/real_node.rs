//! On the real node (kubelet + containerd + kube-proxy, `MODELSHIP_REAL_NODE=1`): our real server
//! image runs under Kubernetes, passes its real probes and answers through its real Service.
//! Traffic goes only to pod IPs and ClusterIPs of this cluster, after `route_is_local` has
//! shown, without sending anything, that they never leave the machine.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use modelship_crds::MLModel;
use modelship_tests::mlflow::Mlflow;
use modelship_tests::real_node::{self, NODE, POD_GATEWAY};
use modelship_tests::{TestNamespace, client, install_crd, kubectl, kubectl_stdin, root, wait_for, wait_ready};

/// Real containers start slower than kwok's fakes; generous on a busy 2-core machine.
const T: Duration = Duration::from_secs(120);

use real_node::setup;

/// Applies examples/iris.yaml in the namespace and waits until it is Ready.
async fn iris_ready(c: &Client, ns: &TestNamespace) -> Api<MLModel> {
    kubectl(&["apply", "-n", &ns.name, "-f", root().join("examples/iris.yaml").to_str().unwrap()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", None, T).await;
    models
}

async fn model_pods(c: &Client, ns: &str, model: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("modelship.dev/model={model}"))).await.unwrap().items
}

#[test]
fn cluster_addresses_route_to_local_devices_or_blackholes() {
    if !real_node::enabled() {
        eprintln!("skipped: no real node");
        return;
    }
    // Unused addresses of every cluster range: none may resolve to the default gateway.
    for addr in ["10.96.255.254", "10.96.0.1", "10.245.0.250", "10.245.200.1", "10.244.3.3"] {
        let route = real_node::route_is_local(addr.parse().unwrap()).unwrap();
        eprintln!("{addr}: {route}");
    }
    // The check itself refuses what is not local: a documentation address goes to the default
    // gateway, or nowhere when there is no default route.
    assert!(real_node::route_is_local("203.0.113.7".parse().unwrap()).is_err());
}

#[tokio::test]
async fn iris_runs_on_the_real_node_and_answers_through_its_service() {
    let Some((c, ns, _op)) = setup("real-iris").await else { return };
    iris_ready(&c, &ns).await;

    let pods = model_pods(&c, &ns.name, "iris").await;
    assert_eq!(pods.len(), 1, "one pod");
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE), "the pod runs on the real node");
    let status = pod.status.as_ref().unwrap();
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready, "the container passed its real readiness probe");
    assert!(
        cs.container_id.as_deref().is_some_and(|id| id.starts_with("containerd://")),
        "a real container: {:?}",
        cs.container_id
    );
    assert_eq!(cs.restart_count, 0, "the restricted pod (UID 65532, read-only root) started first time");

    // The pod IP, then the Service: both local, kube-proxy synced, then a bounded few requests.
    let pod_ip = status.pod_ip.as_deref().unwrap();
    real_node::route_is_local(pod_ip.parse().unwrap()).unwrap();
    let ready = reqwest::get(format!("http://{pod_ip}:8080/readyz")).await.unwrap();
    assert!(ready.status().is_success(), "/readyz on the pod IP");
    real_node::wait_kube_proxy_synced().await;
    let ip = real_node::cluster_ip(&ns.name, "iris").unwrap();
    let resp = real_node::post_until_answered(&format!("http://{ip}/predict"), r#"{"features":[5.1,3.5,1.4,0.2]}"#, 40)
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-model-version"], "v1");
    assert_eq!(resp.text().await.unwrap(), r#"{"prediction":[0]}"#, "the tutorial's prediction through the ClusterIP");
}

#[tokio::test]
async fn a_wrong_checksum_crash_loops_for_real_and_says_why() {
    let Some((c, ns, _op)) = setup("real-sha").await else { return };
    let text = std::fs::read_to_string(root().join("examples/iris.yaml")).unwrap();
    let good = text.lines().find_map(|l| l.trim().strip_prefix("sha256: ")).unwrap().trim().to_string();
    // Wrong from the start: no last good model to roll back to, so the load failure itself shows.
    let bad = "ab".repeat(32);
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&text.replace(&good, &bad))).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);

    // The real container exits, kubelet restarts it, and the server's own line reaches status.
    let degraded = wait_for("Degraded ModelLoadFailed with the checksum reason", T, || async {
        let m = models.get_opt("iris").await.ok().flatten()?;
        let d = m.status.as_ref()?.condition("Degraded")?.clone();
        (d.status == "True" && d.reason == "ModelLoadFailed").then_some(d)
    })
    .await;
    assert!(degraded.message.contains("sha256"), "the server's reason: {}", degraded.message);
    let restarted = wait_for("kubelet restarted the failing container", T, || async {
        let pods = model_pods(&c, &ns.name, "iris").await;
        pods.iter()
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
            .find(|cs| cs.restart_count >= 1 && cs.image_id.contains("sha256:"))
            .map(|cs| cs.restart_count)
    })
    .await;
    assert!(restarted >= 1);

    modelship_tests::patch_mlmodel(&ns.name, "iris", &format!(r#"{{"spec":{{"model":{{"sha256":"{good}"}}}}}}"#));
    let m = wait_ready(&models, "iris", None, T).await;
    let d = m.status.as_ref().unwrap().condition("Degraded").unwrap();
    assert_eq!(d.status, "False", "recovered: {d:?}");
}

/// A file of a docker-archive tarball, read with the real `tar`.
fn archive_file(archive: &std::path::Path, member: &str) -> Vec<u8> {
    let out = std::process::Command::new("tar").arg("-xOf").arg(archive).arg(member).output().unwrap();
    assert!(out.status.success(), "tar -xOf {} {member}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `ENTRYPOINT`, `EXPOSE` and the inherited `USER` of one Dockerfile target (`FROM base AS NAME`).
fn dockerfile_target(name: &str) -> (serde_json::Value, Option<String>, String) {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let block = |header: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with(header))
            .skip(1)
            .take_while(|l| !l.starts_with("FROM "))
            .map(str::to_string)
            .collect()
    };
    let target = block(&format!("FROM base AS {name}"));
    let value =
        |lines: &[String], key: &str| lines.iter().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()));
    let entrypoint = serde_json::from_str(&value(&target, "ENTRYPOINT ").expect("ENTRYPOINT")).unwrap();
    let expose = value(&target, "EXPOSE ").map(|p| if p.contains('/') { p } else { format!("{p}/tcp") });
    let base = block("FROM ${DISTROLESS} AS base");
    (entrypoint, expose, value(&base, "USER ").expect("USER in the base stage"))
}

#[test]
fn the_images_match_the_dockerfile_and_are_small_nonroot_and_shell_free() {
    if !real_node::enabled() {
        eprintln!("skipped: no real node");
        return;
    }
    for (kind, limit_mb) in [("server", 30.0), ("operator", 60.0)] {
        let archive = real_node::image_dir().join(format!("{kind}.tar"));
        let manifest: serde_json::Value = serde_json::from_slice(&archive_file(&archive, "manifest.json")).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config: serde_json::Value = serde_json::from_slice(&archive_file(&archive, config_name)).unwrap();
        let (entrypoint, expose, user) = dockerfile_target(kind);
        assert_eq!(config["config"]["Entrypoint"], entrypoint, "{kind}: the Dockerfile's entrypoint");
        assert_eq!(config["config"]["User"], user.as_str(), "{kind}: the Dockerfile's user");
        assert_eq!(user, "65532:65532");
        let ports: Vec<String> =
            config["config"]["ExposedPorts"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        assert_eq!(ports, expose.into_iter().collect::<Vec<_>>(), "{kind}: the Dockerfile's ports");

        let layer = archive_file(&archive, manifest[0]["Layers"][0].as_str().unwrap());
        let size_mb = layer.len() as f64 / 1e6;
        eprintln!("{kind} image: {size_mb:.1} MB uncompressed");
        assert!(size_mb <= limit_mb, "{kind} image is {size_mb:.1} MB, over {limit_mb} MB");
        let mut list = std::process::Command::new("tar")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut list.stdin.take().unwrap(), &layer).unwrap();
        let files = String::from_utf8(list.wait_with_output().unwrap().stdout).unwrap();
        let shells: Vec<&str> = files
            .lines()
            .filter(|f| ["sh", "bash", "dash", "busybox", "ash"].contains(&f.rsplit('/').next().unwrap_or_default()))
            .collect();
        assert!(shells.is_empty(), "{kind} image has a shell: {shells:?}");
        let entry = entrypoint[0].as_str().unwrap().trim_start_matches('/');
        assert!(files.lines().any(|f| f == entry), "{kind} image holds its entrypoint {entry}");
    }
}

#[tokio::test]
async fn per_model_limits_from_the_spec_reach_the_real_server() {
    let Some((c, ns, _op)) = setup("real-limits").await else { return };
    let models = iris_ready(&c, &ns).await;
    modelship_tests::patch_mlmodel(
        &ns.name,
        "iris",
        r#"{"spec":{"server":{"limits":{"maxBodyBytes":1024,"maxRows":2}}}}"#,
    );
    wait_ready(&models, "iris", None, T).await;
    // The old pod drains (still serving, not ready) before it exits: wait until it is gone, then
    // talk to the new pod itself, so the answer is the limited server's.
    let pod_ip = wait_for("only the new pod left", T, || async {
        let pods = model_pods(&c, &ns.name, "iris").await;
        let [pod] = pods.as_slice() else { return None };
        pod.status.as_ref()?.pod_ip.clone()
    })
    .await;
    real_node::route_is_local(pod_ip.parse().unwrap()).unwrap();
    let url = format!("http://{pod_ip}:8080/predict");
    let two = r#"{"features":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}"#;
    let resp = real_node::post_until_answered(&url, two, 40).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), r#"{"prediction":[0,2]}"#);

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let three = r#"{"features":[[5.1,3.5,1.4,0.2],[5.1,3.5,1.4,0.2],[5.1,3.5,1.4,0.2]]}"#;
    let resp = http.post(&url).body(three).send().await.unwrap();
    assert_eq!(resp.status(), 400, "spec.server.limits.maxRows=2 refuses 3 rows");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().is_some_and(|e| e.contains('2')), "names the limit: {body}");
    let big = format!(r#"{{"features":[5.1,3.5,1.4,0.2],"pad":"{}"}}"#, "x".repeat(2048));
    let resp = http.post(&url).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413, "spec.server.limits.maxBodyBytes=1024 refuses a 2 KiB body");
}

/// Sends `n` requests to `url`, each on a new connection (kube-proxy balances connections, not
/// requests), and counts the answers by their `x-model-version`; failures under "error".
async fn versions_answering(url: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let key = match http.post(url).body(r#"{"features":[5.1,3.5,1.4,0.2]}"#).send().await {
            Ok(r) if r.status().is_success() => {
                r.headers().get("x-model-version").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string()
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(_) => "error".to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_20_percent_canary_answers_its_share_of_real_service_traffic() {
    let Some((c, ns, _op)) = setup("real-canary").await else { return };
    let models = iris_ready(&c, &ns).await;
    let canary = serde_json::json!({"spec": {"replicas": 5, "canary": {
        "model": modelship_tests::iris_model("v2"), "trafficPercent": 20}}});
    modelship_tests::patch_mlmodel(&ns.name, "iris", &canary.to_string());
    let m = wait_ready(&models, "iris", None, T).await;
    let st = m.status.unwrap();
    assert_eq!((st.stable_ready_replicas, st.canary_ready_replicas), (Some(4), Some(1)), "4 + 1 real pods");
    // Every model pod is on the real node and the Service's endpoints are exactly the 5 ready pods.
    wait_for("5 ready endpoints behind the Service", T, || async {
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(c.clone(), &ns.name);
        let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=iris")).await.ok()?;
        let ready = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        let pods = model_pods(&c, &ns.name, "iris").await;
        (ready == 5 && pods.len() == 5).then_some(())
    })
    .await;
    real_node::wait_kube_proxy_synced().await;
    let ip = real_node::cluster_ip(&ns.name, "iris").unwrap();
    let url = format!("http://{ip}/predict");
    real_node::post_until_answered(&url, r#"{"features":[5.1,3.5,1.4,0.2]}"#, 40).await.unwrap();

    let n = 2000;
    let counts = versions_answering(&url, n).await;
    eprintln!("answers by version over {n} connections: {counts:?}");
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(counts.get("v1").copied().unwrap_or(0) + v2, n, "every request answered by v1 or v2: {counts:?}");
    // Binomial(2000, 0.2): mean 400, sd 17.9; ±5 sd fails a fair split once in ~3.5 million runs.
    let (mean, sd) = (n as f64 * 0.2, (n as f64 * 0.2 * 0.8).sqrt());
    assert!((v2 as f64 - mean).abs() <= 5.0 * sd, "v2 answered {v2} of {n}, expected {mean} ± {:.0}", 5.0 * sd);
}

#[tokio::test]
async fn a_rollout_under_load_through_the_service_drops_no_request() {
    let Some((c, ns, _op)) = setup("real-rollout").await else { return };
    let models = iris_ready(&c, &ns).await;
    modelship_tests::patch_mlmodel(&ns.name, "iris", r#"{"spec":{"replicas":2}}"#);
    wait_ready(&models, "iris", None, T).await;
    real_node::wait_kube_proxy_synced().await;
    let ip = real_node::cluster_ip(&ns.name, "iris").unwrap();
    let url = format!("http://{ip}/predict");
    real_node::post_until_answered(&url, r#"{"features":[5.1,3.5,1.4,0.2]}"#, 40).await.unwrap();

    // A load loop on new connections through the Service while the model rolls to v2; it stops
    // once the rollout is Ready and every old pod has exited (bounded by the test's deadline).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, done) = (url.clone(), done.clone());
        tokio::spawn(async move {
            let mut total = std::collections::BTreeMap::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
            while !done.load(std::sync::atomic::Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                for (k, v) in versions_answering(&url, 20).await {
                    *total.entry(k).or_insert(0) += v;
                }
            }
            total
        })
    };
    modelship_tests::patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);
    wait_ready(&models, "iris", Some("v2"), T).await;
    wait_for("the old pods gone", T, || async { (model_pods(&c, &ns.name, "iris").await.len() == 2).then_some(()) })
        .await;
    // A little v2-only traffic after the old pods are gone, then stop.
    wait_for("v2 answering", T, || async {
        let counts = versions_answering(&url, 5).await;
        (counts.get("v2") == Some(&5)).then_some(())
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = load.await.unwrap();
    eprintln!("answers during the rollout: {total:?}");
    let answered: usize = total.iter().filter(|(k, _)| k.starts_with('v')).map(|(_, v)| v).sum();
    let failed: usize = total.iter().filter(|(k, _)| !k.starts_with('v')).map(|(_, v)| v).sum();
    assert!(answered >= 100, "the load loop ran through the rollout: {total:?}");
    assert!(total.contains_key("v1") && total.contains_key("v2"), "both versions answered: {total:?}");
    assert_eq!(failed, 0, "no request failed during the rollout: {total:?}");
}

#[tokio::test]
async fn the_operator_installed_by_the_chart_runs_in_cluster_and_serves_iris() {
    if !real_node::enabled() || std::env::var("MODELSHIP_OPERATOR").as_deref() == Ok("external") {
        eprintln!("skipped: needs the real node, and no external operator (it would reconcile the models too)");
        return;
    }
    let c = client().await;
    install_crd().await;
    // The operator's namespace is not annotated for the real node: the chart's values put it there.
    let op_ns = TestNamespace::new(&c, "real-op").await;
    let ns = real_node::namespace(&c, "real-incluster").await;
    let op = real_node::InClusterOperator::install(&op_ns.name, &ns.name).unwrap();

    let pods = Api::<Pod>::namespaced(c.clone(), &op_ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1, "one operator pod");
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE), "the chart's nodeSelector/tolerations put it on the real node");
    assert_eq!(spec.service_account_name.as_deref(), Some(op.release.as_str()), "the chart's ServiceAccount");
    let cs = &pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.container_id.as_deref().is_some_and(|id| id.starts_with("containerd://")), "{cs:?}");
    assert!(cs.image.contains("modelship-operator:"), "the image from tests/cluster/images: {}", cs.image);

    // It leads on its own Lease, then reconciles iris through the `kubernetes` Service.
    let pod_name = pod.metadata.name.clone().unwrap();
    wait_for("the in-cluster operator holds its Lease", T, || async {
        let holder =
            kubectl(&["-n", &op_ns.name, "get", "lease", &op.release, "-o", "jsonpath={.spec.holderIdentity}"]).ok()?;
        (holder == pod_name).then_some(())
    })
    .await;
    iris_ready(&c, &ns).await;
    let sa = format!("system:serviceaccount:{}:{}", op_ns.name, op.release);
    assert!(real_node::audited_status_writer(&sa, &ns.name), "the status was written by {sa}");

    let pods = model_pods(&c, &ns.name, "iris").await;
    assert_eq!(pods.len(), 1, "one model pod");
    assert_eq!(pods[0].spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    let model_cs = &pods[0].status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(model_cs.ready, "the model's container passed its real /readyz");
    real_node::wait_kube_proxy_synced().await;
    let ip = real_node::cluster_ip(&ns.name, "iris").unwrap();
    let resp = real_node::post_until_answered(&format!("http://{ip}/predict"), r#"{"features":[5.1,3.5,1.4,0.2]}"#, 40)
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), r#"{"prediction":[0]}"#, "the tutorial's prediction through the ClusterIP");
}

#[tokio::test]
async fn the_hpa_scales_on_real_cpu_and_falls_back() {
    let Some((c, ns, _op)) = setup("real-hpa").await else { return };
    let models = iris_ready(&c, &ns).await;
    let autoscaling =
        r#"{"spec":{"autoscaling":{"minReplicas":1,"maxReplicas":3,"targetCPUUtilizationPercentage":50}}}"#;
    modelship_tests::patch_mlmodel(&ns.name, "iris", autoscaling);
    wait_ready(&models, "iris", None, T).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), &ns.name);
    // metrics-server reports the idle pod's CPU through the aggregation layer.
    let idle = wait_for("the HPA reads the pod's CPU from metrics-server", T, || async {
        let st = hpas.get_opt("iris").await.ok().flatten()?.status?;
        let cpu = st.current_metrics?.first()?.resource.as_ref()?.current.average_utilization?;
        Some((cpu, st.desired_replicas))
    })
    .await;
    eprintln!("idle: {}% CPU of the request, {} replica(s) wanted", idle.0, idle.1);
    real_node::wait_kube_proxy_synced().await;
    let ip = real_node::cluster_ip(&ns.name, "iris").unwrap();
    let url = format!("http://{ip}/predict");
    real_node::post_until_answered(&url, r#"{"features":[5.1,3.5,1.4,0.2]}"#, 40).await.unwrap();

    // Two connections of back-to-back requests through the Service: bounded at 3 min and 2M requests.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(real_node::load(url.clone(), 2, 1_000_000, Duration::from_secs(180), stop.clone()));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let busy = wait_for("the HPA scales iris above minReplicas under load", Duration::from_secs(150), || async {
        let st = hpas.get_opt("iris").await.ok().flatten()?.status?;
        let cpu = st.current_metrics?.first()?.resource.as_ref()?.current.average_utilization?;
        let replicas = deployments.get_opt("iris").await.ok().flatten()?.spec?.replicas?;
        (replicas > 1).then_some((cpu, replicas))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = load.await.unwrap();
    eprintln!("under load: {}% CPU, {} replicas; {answered} requests answered", busy.0, busy.1);
    assert!(answered > 0, "the load went through the Service");

    let back = wait_for("back to minReplicas once the load stops", Duration::from_secs(180), || async {
        let st = hpas.get_opt("iris").await.ok().flatten()?.status?;
        let replicas = deployments.get_opt("iris").await.ok().flatten()?.spec?.replicas?;
        (replicas == 1 && st.desired_replicas == 1).then_some(st.current_metrics)
    })
    .await;
    eprintln!("after the load: {back:?}");
}

/// The stable Deployment's server args name `uri` and its rollout is complete.
async fn serving(deployments: &Api<Deployment>, name: &str, uri: &str) -> Option<Deployment> {
    let d = deployments.get(name).await.ok()?;
    let spec = d.spec.as_ref()?;
    let args = spec.template.spec.as_ref()?.containers.first()?.args.clone().unwrap_or_default();
    let status = d.status.as_ref()?;
    let complete = status.observed_generation == d.metadata.generation
        && status.updated_replicas == spec.replicas
        && status.available_replicas == spec.replicas
        && status.replicas == spec.replicas;
    (args.iter().any(|a| a == uri) && complete).then_some(d)
}

#[tokio::test]
async fn an_mlflow_alias_moved_to_a_broken_version_is_rolled_back_for_real() {
    let Some((c, ns, _op)) = setup("real-mlflow").await else { return };
    // MLflow on the host side of the pods' bridge: the operator resolves aliases there and the
    // real pods download the model from it.
    real_node::route_is_local(POD_GATEWAY.parse().unwrap()).unwrap();
    let mlflow = Mlflow::start_on(POD_GATEWAY, false);
    let good = mlflow.log_model("iris", "pickle");
    let broken = mlflow.log_broken_model("iris");
    let fixed = mlflow.log_model("iris", "pickle");
    assert_eq!((good.version, broken.version, fixed.version), (1, 2, 3));
    mlflow.set_alias("iris", "champion", 1);
    let m = serde_json::json!({
        "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel", "metadata": {"name": "champion"},
        "spec": {"replicas": 1, "model": {"uri": "models:/iris@champion",
                 "registry": {"trackingURI": mlflow.url, "pollSeconds": 3}}},
    });
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&m.to_string())).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "champion", Some("1"), T).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    serving(&deployments, "champion", "models:/iris/1").await.expect("version 1 serves");

    // The alias moves to the version whose file is garbage: its real pod cannot load it, and
    // the operator goes back to version 1, saying which alias and version failed.
    mlflow.set_alias("iris", "champion", 2);
    let m = wait_for("RolledBack after the alias moved to version 2", T, || async {
        let m = models.get("champion").await.ok()?;
        let d = m.status.as_ref()?.condition("Degraded")?;
        (d.status == "True" && d.reason == "RolledBack").then_some(m)
    })
    .await;
    let st = m.status.as_ref().unwrap();
    let msg = &st.condition("Degraded").unwrap().message;
    assert!(msg.starts_with("models:/iris@champion (version 2) failed") && msg.contains("rolled back to 1"), "{msg}");
    assert_eq!(st.condition("Ready").unwrap().reason, "RolledBack");
    assert_eq!(st.model_version.as_deref(), Some("1"), "status shows the version that serves");
    assert_eq!(st.last_good_model.as_ref().unwrap().uri, "models:/iris/1");
    let d = wait_for("version 1 serving again", T, || serving(&deployments, "champion", "models:/iris/1")).await;
    let rolled_back_generation = d.metadata.generation;

    // Not retried in a loop: over several polls (3 s each) the alias still names version 2,
    // and the Deployment stays on version 1.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(12) {
        let d = deployments.get("champion").await.unwrap();
        assert_eq!(d.metadata.generation, rolled_back_generation, "the failed version was tried again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = models.get("champion").await.unwrap();
    assert_eq!(m.status.as_ref().unwrap().condition("Degraded").unwrap().reason, "RolledBack");

    // The alias moves on to a good version: rolled out, Ready, the rollback cleared.
    mlflow.set_alias("iris", "champion", 3);
    let m = wait_ready(&models, "champion", Some("3"), T).await;
    let st = m.status.unwrap();
    assert!(st.rollback.as_ref().is_none_or(|r| r.failed_stable.is_none()), "{:?}", st.rollback);
    assert_eq!(st.last_good_model.unwrap().uri, "models:/iris/3");
    serving(&deployments, "champion", "models:/iris/3").await.expect("version 3 serves");
}
