//! "Pod template smoke": start the real `modelship-server` with the exact args, env and mounted
//! files of the container the operator generated, and serve a prediction from it.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use kube::Api;
use modelship_crds::MLModel;
use modelship_tests::pod_template::PodTemplateServer;
use modelship_tests::{Operator, OperatorOptions, TestNamespace, binary, client, install_crd, kubectl, root, wait_for};

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

    let mut server = PodTemplateServer::start(&c, &ns.name, "iris").await;
    let base = &server.base;
    let http = reqwest::Client::new();
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
    server.stop();
    let model_path = server.model_path().to_string();
    std::fs::write(&model_path, std::fs::read_to_string(&model_path).unwrap().replace("setosa", "setosb")).unwrap();
    let out = Command::new(binary("modelship-server")).args(&server.args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model failed to load: model checksum mismatch"), "{stderr}");
}
