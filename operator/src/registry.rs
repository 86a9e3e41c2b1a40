//! Resolving `models:/` and `runs:/` URIs through an MLflow tracking server's REST API: which
//! version an alias points to, where the version's artifacts are, and which flavor its `MLmodel`
//! file declares.
//!
//! The operator authenticates with its own credentials (flags or env from a Secret the chart
//! mounts) and sends them only to its default tracking server: a model may name any tracking
//! URI, and the operator's credentials must not go to a server of the model author's choosing.

use std::time::Duration;

use modelship_crds::mlflow::{self, DownloadUriBody, ErrorBody, LoggedModelBody, MlModel, ModelVersionBody, RunBody};
use modelship_crds::reason;
use modelship_crds::{ModelSpec, RegistryRef};
use serde::de::DeserializeOwned;

/// How the operator signs in to its default tracking server.
#[derive(Clone)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Never print a secret, not even in a debug dump of the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Operator-wide MLflow settings.
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    /// `--mlflow-tracking-uri`: used when `spec.model.registry.trackingURI` is not set.
    pub default_tracking_uri: Option<String>,
    /// Sent to the default tracking server only.
    pub credentials: Option<Credentials>,
}

impl RegistrySettings {
    /// The tracking server of `spec`: its own `registry.trackingURI`, else the operator's default.
    pub fn tracking_uri(&self, spec: &ModelSpec) -> Option<String> {
        spec.registry
            .as_ref()
            .and_then(|r| r.tracking_uri.clone())
            .or_else(|| self.default_tracking_uri.clone())
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// The credentials for a request to `url`: only to the default tracking server itself.
    fn credentials_for(&self, url: &str) -> Option<&Credentials> {
        let default = self.default_tracking_uri.as_deref()?;
        mlflow::same_origin(default, url).then_some(self.credentials.as_ref()).flatten()
    }
}

/// Why a registry reference could not be resolved. Each variant has a status reason.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error(
        "spec.model.uri {0} needs an MLflow tracking server: set spec.model.registry.trackingURI or start the \
         operator with --mlflow-tracking-uri"
    )]
    NotConfigured(String),
    #[error("MLflow tracking server unavailable at {url}: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("MLflow has no {what}: {message}")]
    NotFound { what: String, message: String },
    #[error("the MLflow tracking server {tracking} refused the credentials (HTTP {code})")]
    CredentialsRefused { tracking: String, code: u16 },
    #[error("{what} cannot be served: {reason}")]
    Unsupported { what: String, reason: String },
}

impl RegistryError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConfigured(_) => reason::REGISTRY_NOT_CONFIGURED,
            Self::Unavailable { .. } => REGISTRY_UNAVAILABLE,
            Self::NotFound { .. } => reason::REGISTRY_MODEL_NOT_FOUND,
            Self::CredentialsRefused { .. } => reason::REGISTRY_CREDENTIALS_REFUSED,
            Self::Unsupported { .. } => reason::REGISTRY_MODEL_UNSUPPORTED,
        }
    }

    /// Whether the tracking server may answer later by itself (the running version keeps serving).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Reason of the registry condition while the tracking server does not answer.
pub const REGISTRY_UNAVAILABLE: &str = reason::REGISTRY_UNAVAILABLE;

/// What a registry reference resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The reference the pods get: an alias replaced by the version it points to.
    pub pinned: RegistryRef,
    /// The registered model version (none for `runs:/`).
    pub version: Option<String>,
    /// The artifact directory MLflow gives for it.
    pub source: String,
    /// The `MLmodel` flavor served.
    pub flavor: String,
}

/// An HTTP client for MLflow's REST API.
#[derive(Clone, Debug)]
pub struct Registry {
    http: reqwest::Client,
    pub settings: RegistrySettings,
}

impl Registry {
    pub fn new(settings: RegistrySettings) -> Self {
        // Bounded: a reconcile must not hang on a tracking server that accepts and never answers.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self { http, settings }
    }

    /// Resolves `r` (from `spec.model.uri`) against the tracking server of `spec`.
    pub async fn resolve(&self, spec: &ModelSpec, r: &RegistryRef) -> Result<Resolution, RegistryError> {
        let tracking = self.settings.tracking_uri(spec).ok_or_else(|| RegistryError::NotConfigured(r.to_string()))?;
        let (version, source) = match r {
            RegistryRef::Run { run_id, path } => {
                let what = format!("run {run_id}");
                let url = mlflow::api_url(&tracking, "runs/get", &[("run_id", run_id)]);
                let run: RunBody = self.get_json(&tracking, &url, &what).await?;
                let mut logged = Vec::new();
                for output in &run.run.outputs.model_outputs {
                    let url = mlflow::logged_model_url(&tracking, &output.model_id);
                    let body: LoggedModelBody = self.get_json(&tracking, &url, &what).await?;
                    logged.push(body.model.info);
                }
                (None, mlflow::run_model_dir(&run.run, path, &logged))
            }
            RegistryRef::Alias { name, alias } => {
                let what = format!("alias {alias} of registered model {name}");
                let url = mlflow::api_url(&tracking, "registered-models/alias", &[("name", name), ("alias", alias)]);
                let mv: ModelVersionBody = self.get_json(&tracking, &url, &what).await?;
                let version = mv.model_version.version;
                (Some(version.clone()), self.download_uri(&tracking, name, &version).await?)
            }
            RegistryRef::Version { name, version } => {
                (Some(version.to_string()), self.download_uri(&tracking, name, &version.to_string()).await?)
            }
        };
        let what = format!("{r}");
        let unsupported = |reason: String| RegistryError::Unsupported { what: what.clone(), reason };
        let mlmodel_url =
            mlflow::artifact_url(&tracking, &source, "MLmodel").map_err(|e| unsupported(e.to_string()))?;
        let text = self.get_text(&tracking, &mlmodel_url, &format!("MLmodel file of {r}")).await?;
        let mlmodel = MlModel::parse(&text).map_err(|e| unsupported(e.to_string()))?;
        mlmodel.servable().map_err(|e| unsupported(e.to_string()))?;
        let pinned = match &version {
            Some(v) => r.pinned(v.parse().map_err(|_| unsupported(format!("MLflow returned version {v:?}")))?),
            None => r.clone(),
        };
        Ok(Resolution { pinned, version, source, flavor: mlmodel.flavor_name() })
    }

    /// Where the artifacts of version `version` of `name` are.
    async fn download_uri(&self, tracking: &str, name: &str, version: &str) -> Result<String, RegistryError> {
        let url = mlflow::api_url(tracking, "model-versions/get-download-uri", &[("name", name), ("version", version)]);
        let what = format!("version {version} of registered model {name}");
        let body: DownloadUriBody = self.get_json(tracking, &url, &what).await?;
        Ok(body.artifact_uri)
    }

    async fn get_json<T: DeserializeOwned>(&self, tracking: &str, url: &str, what: &str) -> Result<T, RegistryError> {
        let text = self.get_text(tracking, url, what).await?;
        serde_json::from_str(&text).map_err(|e| RegistryError::Unavailable {
            url: url.to_string(),
            reason: format!("the answer is not MLflow's JSON: {e}"),
        })
    }

    async fn get_text(&self, tracking: &str, url: &str, what: &str) -> Result<String, RegistryError> {
        let unavailable = |reason: String| RegistryError::Unavailable { url: url.to_string(), reason };
        let mut req = self.http.get(url);
        // To the default tracking server only: not to another one a model names, nor to an
        // artifact location on another host that a version's source names.
        req = match self.settings.credentials_for(url) {
            Some(Credentials::Basic { username, password }) => req.basic_auth(username, Some(password)),
            Some(Credentials::Bearer(token)) => req.bearer_auth(token),
            None => req,
        };
        let resp = req.send().await.map_err(|e| unavailable(error_chain(&e.without_url())))?;
        let code = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| unavailable(error_chain(&e)))?;
        match code {
            200..=299 => Ok(text),
            401 | 403 => Err(RegistryError::CredentialsRefused { tracking: tracking.to_string(), code }),
            // MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE, a missing version with 404.
            400 | 404 => {
                let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                let message = if body.message.is_empty() { format!("HTTP {code}") } else { body.message };
                Err(RegistryError::NotFound { what: what.to_string(), message })
            }
            _ => Err(unavailable(format!("HTTP {code}"))),
        }
    }
}

/// The error and its causes on one line ("error sending request: ... Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_default_tracking_server() {
        let s = RegistrySettings {
            default_tracking_uri: Some("http://MLflow.mlflow.svc:5000/".into()),
            credentials: Some(Credentials::Bearer("t0ken".into())),
        };
        assert!(s.credentials_for("http://mlflow.mlflow.svc:5000/api/2.0/mlflow/registered-models/alias").is_some());
        assert!(
            s.credentials_for("http://mlflow.mlflow.svc:5000/api/2.0/mlflow-artifacts/artifacts/1/MLmodel").is_some()
        );
        assert!(s.credentials_for("http://files.example/mlflow.mlflow.svc:5000/MLmodel").is_none());
        assert!(s.credentials_for("http://evil.example:5000").is_none());
        assert!(s.credentials_for("https://mlflow.mlflow.svc:5000").is_none());
        assert!(!format!("{s:?}").contains("t0ken"));
    }
}
