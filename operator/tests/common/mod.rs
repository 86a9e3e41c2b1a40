//! Fixtures shared by the operator's unit tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use modelship_crds::{MLModel, MLModelSpec};
use modelship_operator::desired::Settings;

pub fn model(uri: &str) -> MLModel {
    let spec: MLModelSpec = serde_json::from_value(serde_json::json!({
        "model": {"uri": uri, "sha256": "a".repeat(64), "version": "v1"},
    }))
    .expect("spec");
    MLModel {
        metadata: ObjectMeta {
            name: Some("iris".into()),
            namespace: Some("ml".into()),
            uid: Some("0b3c-uid".into()),
            generation: Some(3),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// An MLModel as ArgoCD applies it: tracking label and annotations, plus a label of the user's.
pub fn argocd_model() -> MLModel {
    let mut m = model("configmap://iris-model/model.json");
    m.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/instance".into(), "models-prod".into()),
        ("argocd.argoproj.io/instance".into(), "models-prod".into()),
        ("team".into(), "fraud".into()),
    ]));
    m.metadata.annotations = Some(BTreeMap::from([
        ("argocd.argoproj.io/tracking-id".into(), "models-prod:modelship.dev/MLModel:ml/iris".into()),
        ("argocd.argoproj.io/sync-wave".into(), "2".into()),
        ("kubectl.kubernetes.io/last-applied-configuration".into(), "{}".into()),
    ]));
    m
}

pub fn settings() -> Settings {
    Settings::new("ghcr.io/modelship/modelship-server:test")
}

/// What the API server holds after applying `body`: the fields it sets and defaults it adds; a
/// Deployment fully rolled out.
pub fn as_live<K: serde::de::DeserializeOwned>(body: &serde_json::Value) -> K {
    let mut live = body.clone();
    let uid = format!("{}-uid", live["metadata"]["name"].as_str().unwrap_or_default());
    live["metadata"]["uid"] = serde_json::json!(uid);
    live["metadata"]["resourceVersion"] = serde_json::json!("11");
    live["metadata"]["generation"] = serde_json::json!(1);
    if live["kind"] == "Deployment" {
        let want = live["spec"]["replicas"].as_i64().unwrap_or(1);
        live["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = serde_json::json!("25%");
        if let Some(container) = live.pointer_mut("/spec/template/spec/containers/0") {
            container["terminationMessagePath"] = serde_json::json!("/dev/termination-log");
        }
        live["status"] = serde_json::json!({
            "observedGeneration": 1, "replicas": want, "updatedReplicas": want, "readyReplicas": want,
            "availableReplicas": want,
            "conditions": [{"type": "Available", "status": "True"},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        });
    } else if live["kind"] == "Service" {
        live["spec"]["clusterIP"] = serde_json::json!("10.96.0.10");
        if let Some(port) = live.pointer_mut("/spec/ports/0") {
            port["protocol"] = serde_json::json!("TCP");
        }
    }
    serde_json::from_value(live).expect("a live object")
}
