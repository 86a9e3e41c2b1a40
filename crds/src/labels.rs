//! Label and annotation keys the operator puts on the objects it manages.

/// Identity label of every child of an MLModel; part of every selector (so it never changes).
pub const MODEL: &str = "modelship.dev/model";
/// Which track a Deployment serves (`stable` or `canary`); part of the Deployment selector.
pub const TRACK: &str = "modelship.dev/track";
/// Pod-template annotation: a hash of everything whose change must roll out new pods.
pub const ROLLOUT_HASH: &str = "modelship.dev/rollout-hash";
/// Annotation on each child: a digest of the object as the operator last applied it (an apply is
/// sent only when this or a field the operator sets differs).
pub const APPLIED: &str = "modelship.dev/applied";

pub const NAME: &str = "app.kubernetes.io/name";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const VERSION: &str = "app.kubernetes.io/version";
/// ArgoCD's default tracking label: copying it onto children makes ArgoCD prune them.
pub const ARGOCD_INSTANCE: &str = "app.kubernetes.io/instance";
/// Prefix of ArgoCD's own labels and annotations.
pub const ARGOCD_PREFIX: &str = "argocd.argoproj.io/";

/// The track of the stable (non-canary) Deployment.
pub const TRACK_STABLE: &str = "stable";
/// The track of the canary Deployment (`spec.canary`).
pub const TRACK_CANARY: &str = "canary";

/// Whether a label on the MLModel may be copied onto its children.
///
/// ArgoCD's tracking metadata and the keys we set ourselves are never copied.
pub fn is_copyable(key: &str) -> bool {
    key != ARGOCD_INSTANCE
        && !key.starts_with(ARGOCD_PREFIX)
        && !key.starts_with("modelship.dev/")
        && !key.starts_with("app.kubernetes.io/")
        && key != "kubectl.kubernetes.io/last-applied-configuration"
}

/// The copyable labels of an MLModel or MLBatchJob (see [`is_copyable`]), for its children.
pub fn copyable(
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    labels.into_iter().flatten().filter(|(k, _)| is_copyable(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argocd_and_own_keys_are_not_copyable() {
        for key in [
            "app.kubernetes.io/instance",
            "argocd.argoproj.io/instance",
            "argocd.argoproj.io/sync-wave",
            "modelship.dev/model",
            "app.kubernetes.io/name",
        ] {
            assert!(!is_copyable(key), "{key} must not be copied");
        }
        for key in ["team", "cost-center", "example.com/owner"] {
            assert!(is_copyable(key), "{key} should be copied");
        }
    }
}
