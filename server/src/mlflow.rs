//! Models from an MLflow tracking server (`models:/NAME/VERSION`, `models:/NAME@ALIAS`,
//! `runs:/RUN_ID/PATH`): the model's artifact directory is found through the REST API, its
//! `MLmodel` file says which flavor and file to load, and the file is downloaded through the
//! tracking server's artifact API (`--serve-artifacts`) or an http(s) artifact location.
//!
//! Credentials come from MLflow's own environment variables (`MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD`, or `MLFLOW_TRACKING_TOKEN`), which the operator fills from the
//! Secret `spec.model.registry.credentialsSecret` names.

// The operator's URI grammar and MLflow REST shapes, compiled into the server too: one source,
// without making the server (and its fuzz build) depend on the CRD crate's kube and k8s-openapi.
#[path = "../../crds/src/mlflow.rs"]
pub mod rest;
#[path = "../../crds/src/model_uri.rs"]
pub mod uri;

use rest as mlflow;
use rest::{DownloadUriBody, Flavor, LoggedModelBody, MlModel, ModelVersionBody, RunBody, SignatureInputs};
use uri::{ModelUri, ModelUriError, RegistryRef};

use crate::artifact::Artifact;
use crate::load::{self, HttpAuth, LoadError};

/// Why an MLflow model cannot be served; one line each.
#[derive(Debug, thiserror::Error)]
pub enum MlflowLoadError {
    #[error("{0} is an MLflow model: give --mlflow-tracking-uri (or MLFLOW_TRACKING_URI)")]
    NoTrackingUri(String),
    #[error("{0}")]
    Uri(#[from] ModelUriError),
    #[error("{0}")]
    Mlflow(#[from] mlflow::MlflowError),
    #[error("the MLflow tracking server {0} refused the credentials")]
    CredentialsRefused(String),
    #[error("unexpected answer from {url}: {reason}")]
    Answer { url: String, reason: String },
    #[error("the MLflow model's serialization_format {0:?} is not supported (pickle, cloudpickle, skops)")]
    Serialization(String),
    #[error("the MLmodel signature has {signature} inputs but the model expects {model} features")]
    FeatureCount { signature: usize, model: usize },
}

/// Whether `source` names an MLflow model rather than a file or URL.
pub fn is_mlflow_uri(source: &str) -> bool {
    source.starts_with("models:/") || source.starts_with("runs:/")
}

/// MLflow credentials from the environment (empty values count as unset: the operator maps
/// optional Secret keys).
pub fn auth_from_env() -> Option<HttpAuth> {
    let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
    match (var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD"), var("MLFLOW_TRACKING_TOKEN")) {
        (Some(username), Some(password), _) => Some(HttpAuth::Basic { username, password }),
        (_, _, Some(token)) => Some(HttpAuth::Bearer(token)),
        _ => None,
    }
}

/// Downloads and reads the MLflow model `source` (at most `max_bytes` per file).
pub async fn load(
    source: &str,
    tracking: Option<&str>,
    auth: Option<&HttpAuth>,
    max_bytes: u64,
) -> Result<Artifact, LoadError> {
    let tracking = tracking.ok_or_else(|| MlflowLoadError::NoTrackingUri(source.into()))?.trim_end_matches('/');
    let ModelUri::Registry(r) = ModelUri::parse(source).map_err(MlflowLoadError::from)? else {
        return Err(MlflowLoadError::NoTrackingUri(source.into()).into());
    };
    let client = Client { tracking, auth, max_bytes };
    let dir = client.artifact_dir(&r).await?;
    let text = client.get(&mlflow::artifact_url(tracking, &dir, "MLmodel").map_err(MlflowLoadError::from)?).await?;
    let mlmodel = MlModel::parse(&String::from_utf8_lossy(&text)).map_err(MlflowLoadError::from)?;
    let (file, sklearn) = match mlmodel.servable().map_err(MlflowLoadError::from)? {
        Flavor::Sklearn(flavor) => match flavor.serialization.as_str() {
            // The file's own signature picks the reader (sklearn::format), all three without running code.
            "pickle" | "cloudpickle" | "skops" => (flavor.file, true),
            other => return Err(MlflowLoadError::Serialization(other.into()).into()),
        },
        Flavor::Onnx { file } => (file, false),
    };
    let url = mlflow::artifact_url(tracking, &dir, &file).map_err(MlflowLoadError::from)?;
    let bytes = client.get(&url).await?;
    let mut artifact = crate::sklearn::format::read_artifact(&bytes)?;
    // An ONNX graph names and shapes its own inputs; a scikit-learn model takes the signature's columns.
    if sklearn && let Some(inputs) = mlmodel.inputs().map_err(MlflowLoadError::from)? {
        apply_signature(&mut artifact, inputs)?;
    }
    Ok(artifact)
}

/// The signature's input names become the feature names; its count must match the model's.
fn apply_signature(artifact: &mut Artifact, inputs: SignatureInputs) -> Result<(), MlflowLoadError> {
    let model = artifact.feature_names.len();
    if let Some(signature) = inputs.count.filter(|n| *n != model) {
        return Err(MlflowLoadError::FeatureCount { signature, model });
    }
    if !inputs.names.is_empty() {
        artifact.feature_names = inputs.names;
    }
    Ok(())
}

struct Client<'a> {
    tracking: &'a str,
    auth: Option<&'a HttpAuth>,
    max_bytes: u64,
}

impl Client<'_> {
    async fn get(&self, url: &str) -> Result<Vec<u8>, LoadError> {
        // The credentials go to the tracking server only, not to an artifact location elsewhere.
        let auth = self.auth.filter(|_| mlflow::same_origin(self.tracking, url));
        match load::download(url, self.max_bytes, auth).await {
            // `download` reports a refused request by its status line.
            Err(LoadError::Download { reason, .. })
                if reason.starts_with("HTTP status 401") || reason.starts_with("HTTP status 403") =>
            {
                Err(MlflowLoadError::CredentialsRefused(self.tracking.into()).into())
            }
            other => other,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, LoadError> {
        let url = mlflow::api_url(self.tracking, endpoint, query);
        let bytes = self.get(&url).await?;
        serde_json::from_slice(&bytes).map_err(|e| MlflowLoadError::Answer { url, reason: e.to_string() }.into())
    }

    /// The artifact directory of the model `r` names.
    async fn artifact_dir(&self, r: &RegistryRef) -> Result<String, LoadError> {
        let (name, version) = match r {
            RegistryRef::Run { run_id, path } => {
                let run: RunBody = self.json("runs/get", &[("run_id", run_id)]).await?;
                let mut logged = Vec::new();
                for output in &run.run.outputs.model_outputs {
                    let url = mlflow::logged_model_url(self.tracking, &output.model_id);
                    let bytes = self.get(&url).await?;
                    let body: LoggedModelBody = serde_json::from_slice(&bytes)
                        .map_err(|e| MlflowLoadError::Answer { url, reason: e.to_string() })?;
                    logged.push(body.model.info);
                }
                return Ok(mlflow::run_model_dir(&run.run, path, &logged));
            }
            RegistryRef::Alias { name, alias } => {
                let mv: ModelVersionBody =
                    self.json("registered-models/alias", &[("name", name), ("alias", alias)]).await?;
                (name, mv.model_version.version)
            }
            RegistryRef::Version { name, version } => (name, version.to_string()),
        };
        let uri: DownloadUriBody =
            self.json("model-versions/get-download-uri", &[("name", name), ("version", &version)]).await?;
        Ok(uri.artifact_uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_names_the_features_and_must_match_their_count() {
        let bytes =
            crate::train::train(&crate::train::iris(), crate::train::Algorithm::Logistic, 1).expect("trains").to_vec();
        let mut a = Artifact::from_slice(&bytes).expect("reads");
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        apply_signature(&mut a, SignatureInputs { names: names.clone(), count: Some(4) }).expect("4 features");
        assert_eq!(a.feature_names, names);
        let e = apply_signature(&mut a, SignatureInputs { names: vec![], count: Some(3) }).expect_err("3 != 4");
        assert_eq!(e.to_string(), "the MLmodel signature has 3 inputs but the model expects 4 features");
    }
}
