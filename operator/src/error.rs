//! The operator's error type; each variant has a stable, low-cardinality metric label.

use modelship_crds::reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        /// What we were doing, e.g. "apply Deployment" (static: safe as a label).
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("MLModel has no namespace")]
    MissingNamespace,
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A child's name is taken by an object this MLModel does not control.
    #[error(
        "{kind} {name:?} already exists and is controlled by {controller}, not by this MLModel: it is left \
         untouched; rename the MLModel or remove that {kind}"
    )]
    NameConflict { kind: String, name: String, controller: String },
    /// The API server refused a child we built from the spec (400, 422, ...): retrying cannot help
    /// until the spec changes.
    #[error("the API server refused the {kind} {name:?}: {message}")]
    Rejected { kind: String, name: String, message: String },
    /// A spec field the API server would not accept in a child, found before applying it.
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    /// The effective server image matches none of `--allowed-image-prefixes`.
    #[error(
        "server image {image:?} is not allowed by this operator's image policy (allowed prefixes: {allowed}); \
         set spec.server.image to an allowed image"
    )]
    ImageNotAllowed { image: String, allowed: String },
}

impl Error {
    /// A stable label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { action, .. } => action,
            Self::MissingNamespace => "missing_namespace",
            Self::Serialize { .. } => "serialize",
            Self::NameConflict { .. } => "name_conflict",
            Self::Rejected { .. } => "invalid_child",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::ImageNotAllowed { .. } => "image_not_allowed",
        }
    }

    /// The status reason of an error that the spec (or a neighbour object) causes, which a retry
    /// alone cannot fix: it is reported as `Degraded` with this reason rather than retried fast.
    pub fn blocking_reason(&self) -> Option<&'static str> {
        match self {
            Self::NameConflict { .. } => Some(reason::NAME_CONFLICT),
            Self::Rejected { .. } => Some(reason::INVALID_CHILD),
            Self::InvalidSpec { .. } => Some(reason::INVALID_SPEC),
            Self::ImageNotAllowed { .. } => Some(reason::IMAGE_NOT_ALLOWED),
            Self::Kube { .. } | Self::MissingNamespace | Self::Serialize { .. } => None,
        }
    }
}

/// Whether the API server refused a write for what it says (a 4xx that is not a conflict, rate
/// limit, missing object or type, or missing permission).
pub fn is_refusal(s: &kube::core::Status) -> bool {
    (400..500).contains(&s.code) && !matches!(s.code, 401 | 403 | 404 | 409 | 429)
}

/// Attaches a static action name to a kube error.
pub trait KubeContext<T> {
    fn during(self, action: &'static str) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn during(self, action: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { action, source })
    }
}
