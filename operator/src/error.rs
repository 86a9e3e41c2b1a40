//! The operator's error type; each variant has a stable, low-cardinality metric label.

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
}

impl Error {
    /// A stable label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { action, .. } => action,
            Self::MissingNamespace => "missing_namespace",
            Self::Serialize { .. } => "serialize",
        }
    }
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
