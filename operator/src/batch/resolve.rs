//! Which model a run scores with: `spec.model`, or for `spec.modelRef` the model the MLModel's
//! stable Deployment serves right now. Pure: the MLModel is observed by the caller.

use kube::ResourceExt;
use modelship_crds::batch_job::ResolvedBatchModel;
use modelship_crds::{MLBatchJob, MLModel, ModelSpec, ModelUri};

/// A run's model.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedModel {
    pub spec: ModelSpec,
    pub uri: ModelUri,
    /// The MLModel it was taken from, for `modelRef`.
    pub from: Option<String>,
}

impl ResolvedModel {
    /// As recorded in `status.model`.
    pub fn status(&self) -> ResolvedBatchModel {
        ResolvedBatchModel {
            uri: self.spec.uri.clone(),
            version: self.spec.version.clone(),
            sha256: self.spec.sha256.clone(),
            from: self.from.clone(),
        }
    }
}

/// Why no run can start yet; each is reported with its reason, and a change of the spec or of
/// the referenced MLModel triggers a new attempt.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unresolved {
    #[error("spec.modelRef: MLModel {0:?} does not exist in this namespace")]
    ModelNotFound(String),
    #[error("spec.modelRef: MLModel {0:?} serves no model yet (it has not been Ready)")]
    ModelNotServing(String),
    #[error("{field}: {message}")]
    Unsupported { field: &'static str, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl Unresolved {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ModelNotFound(_) => "ModelNotFound",
            Self::ModelNotServing(_) => "ModelNotServing",
            Self::Unsupported { .. } => "ModelSourceUnsupported",
            Self::Invalid { .. } => "InvalidSpec",
        }
    }
}

/// The model of the next run. `referenced` is the MLModel `spec.modelRef` names, as observed.
pub fn resolve(job: &MLBatchJob, referenced: Option<&MLModel>) -> Result<ResolvedModel, Unresolved> {
    let (spec, from, field) = match (&job.spec.model, &job.spec.model_ref) {
        (Some(model), _) => (model.clone(), None, "spec.model.uri"),
        (None, Some(r)) => {
            let model = referenced.ok_or_else(|| Unresolved::ModelNotFound(r.name.clone()))?;
            (
                served(model).ok_or_else(|| Unresolved::ModelNotServing(r.name.clone()))?,
                Some(model.name_any()),
                "spec.modelRef",
            )
        }
        (None, None) => {
            return Err(Unresolved::Invalid { field: "spec", message: "set spec.model or spec.modelRef".into() });
        }
    };
    let uri = ModelUri::parse(&spec.uri).map_err(|e| Unresolved::Invalid { field, message: e.to_string() })?;
    if matches!(uri, ModelUri::Registry(_)) {
        return Err(Unresolved::Unsupported {
            field,
            message: format!(
                "{} is an MLflow model; batch runs take configmap://, pvc://, http(s):// and file:// models for now",
                spec.uri
            ),
        });
    }
    Ok(ResolvedModel { spec, uri, from })
}

/// What an MLModel's stable Deployment serves now: `spec.model` once that generation is Ready
/// and not rolled back, else the last good model; `None` before it was ever Ready.
pub fn served(model: &MLModel) -> Option<ModelSpec> {
    let status = model.status.as_ref()?;
    let current = status.observed_generation == model.metadata.generation
        && status.rollback.is_none()
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if current { Some(model.spec.model.clone()) } else { status.last_good_model.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use modelship_crds::MLModelStatus;

    fn batch(spec: serde_json::Value) -> MLBatchJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "modelship.dev/v1alpha1", "kind": "MLBatchJob",
            "metadata": {"name": "nightly", "namespace": "ns"}, "spec": spec,
        }))
        .expect("MLBatchJob")
    }

    fn mlmodel(uri: &str, version: &str, ready: bool, last_good: Option<&str>) -> MLModel {
        let mut m: MLModel = serde_json::from_value(serde_json::json!({
            "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel",
            "metadata": {"name": "iris", "namespace": "ns", "generation": 3},
            "spec": {"model": {"uri": uri, "version": version}},
        }))
        .expect("MLModel");
        m.status = Some(MLModelStatus {
            observed_generation: Some(3),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "x".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
                observed_generation: None,
            }],
            last_good_model: last_good.map(|v| {
                serde_json::from_value(serde_json::json!({"uri": "configmap://old/model.json", "version": v}))
                    .expect("ModelSpec")
            }),
            ..Default::default()
        });
        m
    }

    const IO: &str = r#"{"input": {"uri": "pvc://data/in.csv"}, "output": {"uri": "pvc://data/out"}}"#;

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut spec: serde_json::Value = serde_json::from_str(IO).unwrap();
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec
    }

    #[test]
    fn an_inline_model_is_taken_as_it_is() {
        let job = batch(with(serde_json::json!({"model": {"uri": "configmap://m/model.json", "version": "v1"}})));
        let r = resolve(&job, None).expect("resolved");
        assert_eq!(r.uri, ModelUri::ConfigMap { name: "m".into(), key: "model.json".into() });
        assert_eq!(r.status().version.as_deref(), Some("v1"));
        assert_eq!(r.from, None);
    }

    #[test]
    fn a_model_ref_follows_what_the_mlmodel_serves() {
        let job = batch(with(serde_json::json!({"modelRef": {"name": "iris"}})));
        let ready = mlmodel("configmap://new/model.json", "v2", true, Some("v1"));
        let r = resolve(&job, Some(&ready)).expect("resolved");
        assert_eq!((r.spec.version.as_deref(), r.from.as_deref()), (Some("v2"), Some("iris")));
        // Rolling out v2 (not Ready yet): v1 still serves.
        let rolling = mlmodel("configmap://new/model.json", "v2", false, Some("v1"));
        assert_eq!(resolve(&job, Some(&rolling)).expect("resolved").spec.version.as_deref(), Some("v1"));
        // Rolled back: the last good model serves, even while Ready.
        let mut rolled = ready.clone();
        rolled.status.as_mut().unwrap().rollback = Some(Default::default());
        assert_eq!(resolve(&job, Some(&rolled)).expect("resolved").spec.version.as_deref(), Some("v1"));
        let never = mlmodel("configmap://new/model.json", "v2", false, None);
        assert_eq!(resolve(&job, Some(&never)), Err(Unresolved::ModelNotServing("iris".into())));
        assert_eq!(resolve(&job, None), Err(Unresolved::ModelNotFound("iris".into())));
    }

    #[test]
    fn mlflow_models_are_refused_with_the_field_named() {
        let job = batch(with(serde_json::json!({"model": {"uri": "models:/iris/3"}})));
        let err = resolve(&job, None).expect_err("unsupported");
        assert_eq!(err.reason(), "ModelSourceUnsupported");
        assert!(err.to_string().starts_with("spec.model.uri: models:/iris/3"), "{err}");
    }
}
