//! Parsing of `spec.model.uri`; the CRD's CEL rule enforces the same grammar at admission.

use std::fmt;

/// Where a model artifact comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelUri {
    /// `configmap://NAME/KEY`: one key of a ConfigMap in the MLModel's namespace.
    ConfigMap { name: String, key: String },
    /// `pvc://CLAIM/PATH`: a file on a PersistentVolumeClaim in the MLModel's namespace.
    Pvc { claim: String, path: String },
    /// `http://` or `https://`: fetched by the server at start-up.
    Http(String),
    /// `file:///PATH`: a model baked into the server image.
    File(String),
    /// `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `runs:/RUN_ID/PATH`: a model in an MLflow
    /// tracking server (`spec.model.registry`).
    Registry(RegistryRef),
}

/// A model in an MLflow registry or run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryRef {
    /// `models:/NAME/VERSION`: a pinned version of a registered model.
    Version { name: String, version: u64 },
    /// `models:/NAME@ALIAS`: whatever version the alias points to; polled.
    Alias { name: String, alias: String },
    /// `runs:/RUN_ID/PATH`: the model logged under PATH in a run's artifacts.
    Run { run_id: String, path: String },
}

impl RegistryRef {
    /// The same model with the alias resolved to `version` (a run or a version stays as it is).
    pub fn pinned(&self, version: u64) -> Self {
        match self {
            Self::Alias { name, .. } => Self::Version { name: name.clone(), version },
            other => other.clone(),
        }
    }
}

/// Why a model URI was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelUriError {
    #[error(
        "spec.model.uri {0:?} has an unsupported scheme; use configmap://NAME/KEY, pvc://CLAIM/PATH, http(s)://HOST/PATH, file:///PATH, models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"
    )]
    Scheme(String),
    #[error("spec.model.uri {0:?}: {1}")]
    Malformed(String, &'static str),
}

/// The CEL rule the CRD schema carries for `spec.model.uri` (RE2 syntax).
pub const URI_CEL_RULE: &str = r"self.matches('^(configmap://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^\\s]+|https?://[^/\\s]+(/[^\\s]*)?|file:///[^\\s]+|models:/[^/@\\s]+/[0-9]+|models:/[^/@\\s]+@[-_a-zA-Z0-9]+|runs:/[a-zA-Z0-9]+/[^\\s]+)$') && !self.contains('/../') && !self.endsWith('/..')";
/// The message the API server returns when [`URI_CEL_RULE`] fails.
pub const URI_CEL_MESSAGE: &str = "must be configmap://NAME/KEY, pvc://CLAIM/PATH, http(s)://HOST/PATH, file:///PATH, \
     models:/NAME/VERSION (a number), models:/NAME@ALIAS or runs:/RUN_ID/PATH (no '..' segments)";

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_configmap_key(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

fn has_dotdot(path: &str) -> bool {
    path.split('/').any(|seg| seg == "..")
}

impl ModelUri {
    /// Parses a `spec.model.uri` value.
    pub fn parse(uri: &str) -> Result<Self, ModelUriError> {
        let bad = |why| ModelUriError::Malformed(uri.to_string(), why);
        if uri.chars().any(char::is_whitespace) {
            return Err(bad("must not contain whitespace"));
        }
        if let Some(rest) = uri.strip_prefix("configmap://") {
            let (name, key) = rest.split_once('/').ok_or_else(|| bad("expected configmap://NAME/KEY"))?;
            if !is_dns_subdomain(name) {
                return Err(bad("the ConfigMap name is not a valid Kubernetes name"));
            }
            if !is_configmap_key(key) {
                return Err(bad("the ConfigMap key may hold only letters, digits, '-', '_' and '.'"));
            }
            Ok(Self::ConfigMap { name: name.into(), key: key.into() })
        } else if let Some(rest) = uri.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').ok_or_else(|| bad("expected pvc://CLAIM/PATH"))?;
            if !is_dns_subdomain(claim) {
                return Err(bad("the claim name is not a valid Kubernetes name"));
            }
            if path.is_empty() || has_dotdot(path) {
                return Err(bad("the path must be non-empty and have no '..' segments"));
            }
            Ok(Self::Pvc { claim: claim.into(), path: path.trim_start_matches('/').into() })
        } else if let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) {
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty() {
                return Err(bad("the URL has no host"));
            }
            Ok(Self::Http(uri.into()))
        } else if let Some(path) = uri.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 || has_dotdot(path) {
                return Err(bad("expected an absolute path: file:///PATH"));
            }
            Ok(Self::File(path.into()))
        } else if let Some(rest) = uri.strip_prefix("models:/") {
            Ok(Self::Registry(
                parse_models(rest)
                    .ok_or_else(|| bad("expected models:/NAME/VERSION (VERSION a number) or models:/NAME@ALIAS"))?,
            ))
        } else if let Some(rest) = uri.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').ok_or_else(|| bad("expected runs:/RUN_ID/PATH"))?;
            if run_id.is_empty() || !run_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad("the run id may hold only letters and digits"));
            }
            if path.is_empty() || has_dotdot(path) {
                return Err(bad("expected runs:/RUN_ID/PATH with a non-empty path and no '..' segments"));
            }
            Ok(Self::Registry(RegistryRef::Run { run_id: run_id.into(), path: path.into() }))
        } else {
            Err(ModelUriError::Scheme(uri.into()))
        }
    }
}

/// `NAME/VERSION` or `NAME@ALIAS` (after `models:/`).
fn parse_models(rest: &str) -> Option<RegistryRef> {
    let name_ok = |n: &str| !n.is_empty() && !n.contains(['/', '@']);
    if let Some((name, alias)) = rest.split_once('@') {
        let alias_ok = !alias.is_empty() && alias.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        return (name_ok(name) && alias_ok).then(|| RegistryRef::Alias { name: name.into(), alias: alias.into() });
    }
    let (name, version) = rest.split_once('/')?;
    let version = version.bytes().all(|b| b.is_ascii_digit()).then(|| version.parse().ok()).flatten()?;
    name_ok(name).then(|| RegistryRef::Version { name: name.into(), version })
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version { name, version } => write!(f, "models:/{name}/{version}"),
            Self::Alias { name, alias } => write!(f, "models:/{name}@{alias}"),
            Self::Run { run_id, path } => write!(f, "runs:/{run_id}/{path}"),
        }
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigMap { name, key } => write!(f, "configmap://{name}/{key}"),
            Self::Pvc { claim, path } => write!(f, "pvc://{claim}/{path}"),
            Self::Http(url) => f.write_str(url),
            Self::File(path) => write!(f, "file://{path}"),
            Self::Registry(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            ModelUri::parse("configmap://iris-model/model.json").unwrap(),
            ModelUri::ConfigMap { name: "iris-model".into(), key: "model.json".into() }
        );
        assert_eq!(
            ModelUri::parse("pvc://models/iris/v2/model.json").unwrap(),
            ModelUri::Pvc { claim: "models".into(), path: "iris/v2/model.json".into() }
        );
        assert_eq!(
            ModelUri::parse("https://example.com/m.json").unwrap(),
            ModelUri::Http("https://example.com/m.json".into())
        );
        assert_eq!(ModelUri::parse("file:///models/iris.json").unwrap(), ModelUri::File("/models/iris.json".into()));
        assert_eq!(
            ModelUri::parse("models:/iris/3").unwrap(),
            ModelUri::Registry(RegistryRef::Version { name: "iris".into(), version: 3 })
        );
        let alias = RegistryRef::Alias { name: "iris".into(), alias: "champion".into() };
        assert_eq!(ModelUri::parse("models:/iris@champion").unwrap(), ModelUri::Registry(alias.clone()));
        assert_eq!(alias.pinned(2).to_string(), "models:/iris/2");
        assert_eq!(
            ModelUri::parse("runs:/abc123/model").unwrap(),
            ModelUri::Registry(RegistryRef::Run { run_id: "abc123".into(), path: "model".into() })
        );
    }

    #[test]
    fn display_round_trips() {
        for uri in [
            "configmap://a/b.json",
            "pvc://c/d/e",
            "http://h:8080/x",
            "file:///m",
            "models:/iris/3",
            "models:/iris@champion",
            "runs:/0a1b/model",
        ] {
            assert_eq!(ModelUri::parse(uri).unwrap().to_string(), uri);
        }
    }

    #[test]
    fn refuses_bad_uris() {
        for uri in [
            "s3://bucket/key",
            "configmap://Iris/model",
            "configmap://iris",
            "configmap://iris/a b",
            "configmap://iris/a/b",
            "pvc://models/",
            "pvc://models/../etc/passwd",
            "https:///path",
            "file://relative",
            "file:///a/../b",
            "models:/",
            "models:/iris",
            "models:/x/notanumber",
            "models:/x/-1",
            "models:/x@",
            "models:/x@a.b",
            "models:/a/b/1",
            "runs:/",
            "runs:/abc",
            "runs:/abc/",
            "runs:/abc/../x",
            "",
        ] {
            assert!(ModelUri::parse(uri).is_err(), "{uri:?} should be refused");
        }
    }
}
