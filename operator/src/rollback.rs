//! Rollback decisions. Pure: a track's live Deployment and pods in, what to serve out.
//!
//! A new version (stable or canary) has failed when its pods cannot start (crash loop, image
//! pull, model load failure) or its rollout passed `spec.rollout.progressDeadlineSeconds`. A
//! failed stable version is replaced by `status.lastGoodModel`; a failed canary is scaled to
//! zero. The failed rollout hash is kept in `status.rollback` so it is not retried until the
//! spec names something else.

use modelship_crds::ModelSpec;

use crate::health::Health;

/// What the stable Deployment should run.
#[derive(Clone, Debug, PartialEq)]
pub enum StableChoice {
    /// `spec.model`, as the spec says.
    Spec,
    /// The last good model, because `spec.model` failed (now, or before: `newly` says which).
    LastGood { model: ModelSpec, newly: Option<String> },
}

/// Decides the stable track. `desired_hash` is the rollout hash of `spec.model`; `failed` is
/// `status.rollback.failedStable`; `resolved_version` is the MLflow version an alias in
/// `spec.model.uri` points to, named in the message. A failure rolls back only when there is a
/// last good model that differs from the spec (a first deploy that fails has nothing to go back to).
pub fn stable_choice(
    spec_model: &ModelSpec,
    desired_hash: &str,
    health: &Health,
    last_good: Option<&ModelSpec>,
    failed: Option<&str>,
    resolved_version: Option<&str>,
) -> StableChoice {
    let Some(good) = last_good.filter(|g| *g != spec_model) else {
        return StableChoice::Spec;
    };
    if failed == Some(desired_hash) {
        return StableChoice::LastGood { model: good.clone(), newly: None };
    }
    match health {
        Health::Failed { reason, message } => {
            let version = match (&spec_model.version, resolved_version) {
                (Some(v), _) => v.clone(),
                (None, Some(r)) => format!("{} (version {r})", spec_model.uri),
                (None, None) => "the new model".into(),
            };
            let back = good.version.as_deref().unwrap_or("the last good model");
            StableChoice::LastGood {
                model: good.clone(),
                newly: Some(format!("{version} failed ({reason}: {message}); rolled back to {back}")),
            }
        }
        _ => StableChoice::Spec,
    }
}

/// `Some(message)` when the canary with rollout hash `hash` has just failed; `None` while it is
/// fine, and when it already failed before (`failed` is `status.rollback.failedCanary`).
pub fn canary_failed_now(health: &Health, hash: &str, failed: Option<&str>) -> Option<String> {
    if failed == Some(hash) {
        return None;
    }
    match health {
        Health::Failed { reason, message } => Some(format!("canary failed ({reason}: {message}); scaled to zero")),
        _ => None,
    }
}
