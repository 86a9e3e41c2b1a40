//! Disruptive scenarios, in their own test binary so they never overlap the parallel suite:
//! the API server restarted under a running operator.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use kube::Api;
use modelship_crds::MLModel;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, client, install_crd, kubectl, patch_mlmodel, root, wait_ready,
};

#[tokio::test]
async fn the_operator_survives_an_api_server_restart() {
    // tests/run sets this to tests/cluster/restart-apiserver; the kind workflow to its own command.
    let restart = std::env::var("MODELSHIP_APISERVER_RESTART_CMD")
        .expect("MODELSHIP_APISERVER_RESTART_CMD must name a command that restarts the API server");
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "apirestart").await;
    let op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    kubectl(&["apply", "-n", &ns.name, "-f", root().join("examples/iris.yaml").to_str().unwrap()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", Some("v1"), Duration::from_secs(60)).await;

    let status = Command::new("bash").args(["-c", &restart]).status().unwrap();
    assert!(status.success(), "{restart} failed");
    let c = client().await;
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);

    // The operator's watches must have resumed: a change made after the restart is reconciled.
    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);
    wait_ready(&models, "iris", Some("v2"), Duration::from_secs(120)).await;
    assert!(op.metric("modelship_operator_leader").await == 1.0, "the operator is still running and leading");
    let log = op.log_text();
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
}
