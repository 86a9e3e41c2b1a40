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
