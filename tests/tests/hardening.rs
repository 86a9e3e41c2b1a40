//! The operator's safety nets against a real API server: it never adopts an object it does not
//! control, names that would collide are refused at admission, a child the API server refuses
//! becomes a status condition, leftover children are cleaned up by inventory, and the image
//! policy keeps a forbidden image from running.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::MLModel;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, kubectl, kubectl_stdin, patch_mlmodel, remove_mlmodel_field, root,
    server_image, setup, wait_for, wait_ready,
};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// Applies the iris example (its ConfigMap and the MLModel `iris`).
fn apply_example(ns: &str) {
    kubectl(&["apply", "-n", ns, "-f", &root().join("examples/iris.yaml").to_string_lossy()]).unwrap();
}

/// A namespace with the test's operator and the iris example in it.
async fn with_operator_and_example(prefix: &str) -> (Client, TestNamespace, Operator) {
    let (c, ns) = setup(prefix).await;
    let op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    apply_example(&ns.name);
    (c, ns, op)
}

/// Applies an MLModel `name` serving the iris example's model, with `spec` merged in.
fn apply_model(ns: &str, name: &str, spec: serde_json::Value) -> anyhow::Result<String> {
    let mut doc = json!({
        "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel", "metadata": {"name": name},
        "spec": {"model": {"uri": "configmap://iris-model/model.json", "version": "v1"}},
    });
    if let (Some(s), Some(extra)) = (doc["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(&doc.to_string()))
}

/// Waits until `name` reports `Degraded=True` with `reason` for its current generation.
async fn degraded(models: &Api<MLModel>, name: &str, reason: &str) -> String {
    wait_for(&format!("{name} Degraded ({reason})"), T, || async {
        let m = models.get_opt(name).await.ok().flatten()?;
        let st = m.status?;
        let c = st.condition("Degraded").filter(|c| c.status == "True" && c.reason == reason)?;
        (st.observed_generation == m.metadata.generation).then(|| c.message.clone())
    })
    .await
}

fn event_reasons(ns: &str) -> String {
    kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"])
        .unwrap()
}

/// A Service of someone else's: selector `app=NAME`, and `owner`'s ownerReference if given.
fn service(name: &str, labels: BTreeMap<String, String>, owner: Option<&MLModel>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            owner_references: owner.and_then(|m| m.controller_owner_ref(&())).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort { port: 80, ..Default::default() }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// What must stay byte-identical on an object we do not control.
fn fingerprint(s: &Service) -> (Option<String>, String, String) {
    let sel = serde_json::to_string(&s.spec.as_ref().and_then(|s| s.selector.clone())).unwrap();
    (s.resource_version(), sel, serde_json::to_string(&s.metadata.owner_references).unwrap())
}

#[tokio::test]
async fn an_unrelated_service_is_never_adopted_changed_or_deleted() {
    let (c, ns, _op) = with_operator_and_example("conflict").await;
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let theirs = services.create(&PostParams::default(), &service("web", BTreeMap::new(), None)).await.unwrap();
    let before = fingerprint(&theirs);

    apply_model(&ns.name, "web", json!({})).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let msg = degraded(&models, "web", "NameConflict").await;
    assert!(msg.contains(r#"Service "web""#) && msg.contains("no owner"), "names the object and its owner: {msg}");
    let ready = models.get("web").await.unwrap().status.unwrap();
    assert_eq!(ready.condition("Ready").map(|c| c.status.as_str()), Some("False"));
    wait_for("a NameConflict Event", T, || async { event_reasons(&ns.name).contains("NameConflict").then_some(()) })
        .await;
    assert_eq!(fingerprint(&services.get("web").await.unwrap()), before, "selector and ownerReferences untouched");

    // Deleting the MLModel leaves the Service: it never got our ownerReference, so neither the
    // operator nor the garbage collector has a claim on it.
    kubectl(&["delete", "mlmodel", "web", "-n", &ns.name, "--wait=true"]).unwrap();
    assert!(models.get_opt("web").await.unwrap().is_none());
    let after = services.get("web").await.unwrap();
    assert_eq!(fingerprint(&after), before, "still there, unchanged");
    // The other model in the namespace is not affected.
    wait_ready(&models, "iris", Some("v1"), T).await;
}

#[tokio::test]
async fn names_that_could_collide_are_refused_at_admission_naming_the_field() {
    let (_c, ns) = setup("names").await;
    let long = "a".repeat(57);
    for name in ["iris-canary", "iris-stable", "my.model", "1st-model", long.as_str()] {
        let err = apply_model(&ns.name, name, json!({})).expect_err(name).to_string();
        assert!(err.contains("metadata.name must be a DNS-1035 label"), "{name}: {err}");
        assert!(err.contains("-canary"), "{name}: says which suffixes are reserved: {err}");
    }
    apply_model(&ns.name, &"a".repeat(56), json!({})).unwrap();
    apply_model(&ns.name, "canary-v2", json!({})).unwrap();
    let models = kubectl(&["get", "mlmodels", "-n", &ns.name, "-o", "name"]).unwrap();
    assert_eq!(models.lines().count(), 2, "only the valid names were stored: {models}");
}

#[tokio::test]
async fn a_child_the_api_server_refuses_becomes_degraded_and_a_fixed_spec_recovers() {
    let (c, ns, op) = with_operator_and_example("refused").await;
    let resources = |request: &str| json!({"server": {"resources": {"requests": {"memory": request}, "limits": {"memory": "256Mi"}}}});
    apply_model(&ns.name, "big", resources("512Mi")).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let msg = degraded(&models, "big", "InvalidChild").await;
    assert!(msg.contains(r#"refused the Deployment "big""#), "names the child: {msg}");
    assert!(msg.contains("must be less than or equal to memory limit"), "the API server's message: {msg}");
    wait_for("an InvalidChild Event", T, || async { event_reasons(&ns.name).contains("InvalidChild").then_some(()) })
        .await;
    if op.is_own() {
        // Backed off, not retried hot: a handful of attempts, not one per few milliseconds.
        let errors = op.metric(r#"modelship_operator_reconcile_errors_total{error="invalid_child"}"#).await;
        assert!((1.0..=5.0).contains(&errors), "{errors} refused attempts so far");
    }

    // A malformed quantity (the API server fails such an apply with a 500) is named too.
    patch_mlmodel(&ns.name, "big", &json!({"spec": resources("lots")}).to_string());
    let msg = degraded(&models, "big", "InvalidSpec").await;
    assert!(msg.contains(r#"spec.server.resources.requests.memory: "lots" is not a quantity"#), "{msg}");

    patch_mlmodel(&ns.name, "big", &json!({"spec": resources("128Mi")}).to_string());
    let m = wait_ready(&models, "big", Some("v1"), T).await;
    let st = m.status.unwrap();
    assert_eq!(st.condition("Degraded").map(|c| c.reason.as_str()), Some("AsExpected"), "{st:?}");
}

#[tokio::test]
async fn track_services_left_behind_are_removed_by_inventory() {
    let (c, ns, _op) = with_operator_and_example("inventory").await;
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let iris = wait_ready(&models, "iris", Some("v1"), T).await;

    // What Gateway mode leaves when the Gateway API is missing (the route never applies, so
    // status never says Gateway) and spec.traffic is then removed: a track Service of ours.
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let ours = BTreeMap::from([("modelship.dev/model".to_string(), "iris".to_string())]);
    services.create(&PostParams::default(), &service("iris-stable", ours.clone(), Some(&iris))).await.unwrap();
    // Someone's Service with our label but not our ownerReference is not ours to delete.
    let foreign = services.create(&PostParams::default(), &service("iris-canary", ours, None)).await.unwrap();

    wait_for("the leftover track Service deleted", T, || async {
        services.get_opt("iris-stable").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(fingerprint(&services.get("iris-canary").await.unwrap()), fingerprint(&foreign));
    assert!(services.get_opt("iris").await.unwrap().is_some(), "the model's own Service stays");
    wait_ready(&models, "iris", Some("v1"), T).await;
}

#[tokio::test]
async fn the_image_policy_keeps_a_forbidden_image_from_running() {
    let (c, ns) = setup("images").await;
    let opts = OperatorOptions {
        extra_args: vec![format!("--allowed-image-prefixes={},registry.example/ml/", server_image())],
        ..OperatorOptions::for_namespace(&ns.name)
    };
    let _op = Operator::start_own(&opts);
    apply_example(&ns.name);
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", Some("v1"), T).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let running = deployments.get("iris").await.unwrap();

    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"server":{"image":"docker.io/library/busybox:latest"}}}"#);
    let msg = degraded(&models, "iris", "ImageNotAllowed").await;
    assert!(msg.contains("docker.io/library/busybox:latest") && msg.contains("registry.example/ml/"), "{msg}");
    let now = deployments.get("iris").await.unwrap();
    assert_eq!(now.metadata.generation, running.metadata.generation, "the running Deployment is untouched");
    assert_eq!(now.spec.unwrap().template.spec.unwrap().containers[0].image, Some(server_image()));

    remove_mlmodel_field(&ns.name, "iris", "/spec/server");
    wait_ready(&models, "iris", Some("v1"), T).await;
}
