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
}

/// Why a model URI was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelUriError {
    #[error(
        "spec.model.uri {0:?} has an unsupported scheme; use configmap://NAME/KEY, pvc://CLAIM/PATH, http(s)://HOST/PATH or file:///PATH"
    )]
    Scheme(String),
    #[error("spec.model.uri {0:?}: {1}")]
    Malformed(String, &'static str),
}

/// The CEL rule the CRD schema carries for `spec.model.uri` (RE2 syntax).
pub const URI_CEL_RULE: &str = r"self.matches('^(configmap://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^\\s]+|https?://[^/\\s]+(/[^\\s]*)?|file:///[^\\s]+)$') && !self.contains('/../') && !self.endsWith('/..')";
/// The message the API server returns when [`URI_CEL_RULE`] fails.
pub const URI_CEL_MESSAGE: &str =
    "must be configmap://NAME/KEY, pvc://CLAIM/PATH, http(s)://HOST/PATH or file:///PATH (no '..' segments)";

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
        } else {
            Err(ModelUriError::Scheme(uri.into()))
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
    }

    #[test]
    fn display_round_trips() {
        for uri in ["configmap://a/b.json", "pvc://c/d/e", "http://h:8080/x", "file:///m"] {
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
            "",
        ] {
            assert!(ModelUri::parse(uri).is_err(), "{uri:?} should be refused");
        }
    }
}
