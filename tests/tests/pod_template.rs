//! "Pod template smoke": start the real `modelship-server` with the exact args, env and mounted
//! files of the container the operator generated, and serve a prediction from it.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use modelship_crds::MLModel;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, binary, client, free_port, install_crd, kubectl, root, wait_for,
};

#[tokio::test]
async fn the_generated_pod_spec_serves_predictions() {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "podspec").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    kubectl(&["apply", "-n", &ns.name, "-f", root().join("examples/iris.yaml").to_str().unwrap()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_for("iris Ready", Duration::from_secs(60), || async {
        models
            .get("iris")
            .await
            .ok()
            .filter(|m| m.status.as_ref().and_then(|s| s.condition("Ready")).is_some_and(|c| c.status == "True"))
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let pod = deployments.get("iris").await.unwrap().spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let dir = std::env::temp_dir().join(format!("modelship-podspec-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();

    // Materialise every ConfigMap volume the container mounts, as the kubelet would.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
        let Some(cm_source) = &volume.config_map else {
            continue;
        };
        let cm = cms.get(&cm_source.name).await.unwrap();
        let local = dir.join(&m.name);
        std::fs::create_dir_all(&local).unwrap();
        for item in cm_source.items.iter().flatten() {
            let data = cm.data.as_ref().unwrap().get(&item.key).unwrap();
            std::fs::write(local.join(&item.path), data).unwrap();
        }
        mounts.push((m.mount_path.clone(), local.to_str().unwrap().to_string()));
    }
    assert!(!mounts.is_empty(), "the iris pod mounts its ConfigMap");

    // The container's own arguments, with mount paths mapped to the local copies and the port
    // moved to a free one (the only two things a pod would provide).
    let port = free_port();
    let mut args: Vec<String> = container.args.clone().unwrap();
    for a in args.iter_mut() {
        for (mount, local) in &mounts {
            if let Some(rest) = a.strip_prefix(mount.as_str()) {
                *a = format!("{local}{rest}");
            }
        }
    }
    let i = args.iter().position(|a| a == "--port").unwrap();
    args[i + 1] = port.to_string();
    let mut cmd = Command::new(binary("modelship-server"));
    cmd.args(&args).env_clear().env("PATH", "/usr/bin:/bin").stdout(Stdio::null()).stderr(Stdio::piped());
    for e in container.env.iter().flatten() {
        cmd.env(&e.name, e.value.clone().unwrap_or_default());
    }
    let mut server = cmd.spawn().unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("the server's readiness probe path", Duration::from_secs(20), || async {
        let probe = container.readiness_probe.as_ref()?.http_get.as_ref()?.path.clone()?;
        http.get(format!("{base}{probe}")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let resp = http
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"features": [5.1, 3.5, 1.4, 0.2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-model-version"], "v1");
    assert_eq!(resp.headers()["x-model-name"], "iris");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"prediction": [0]}));
    let ready: serde_json::Value =
        http.get(format!("{base}/v2/models/iris/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["ready"], true);

    // The checksum in the pod spec is really checked: a tampered file makes the server exit 1.
    let _ = server.kill();
    let _ = server.wait();
    let model_path = &args[args.iter().position(|a| a == "--model").unwrap() + 1];
    std::fs::write(model_path, std::fs::read_to_string(model_path).unwrap().replace("setosa", "setosb")).unwrap();
    let out = Command::new(binary("modelship-server")).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model failed to load: model checksum mismatch"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
