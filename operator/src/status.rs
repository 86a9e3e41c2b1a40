//! Pure status computation: the live Deployment and pods (and any model-source problem) in,
//! the MLModel status out. Ready means the current generation is fully rolled out and available.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use modelship_crds::condition::{CANARY_READY, DEGRADED, PROGRESSING, READY, REGISTRY};
use modelship_crds::reason;
use modelship_crds::{CanarySpec, MLModel, MLModelStatus, ModelSpec, RollbackStatus, TrafficStatus};

use crate::desired;
use crate::health::{Health, Rollout, pod_problem, rollout, truncate};
use crate::registry::REGISTRY_UNAVAILABLE;

/// A problem with the model source that stops us from rolling out the current spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceProblem {
    InvalidReference(String),
    ConfigMapNotFound {
        name: String,
    },
    ConfigMapKeyNotFound {
        name: String,
        key: String,
    },
    PvcNotFound {
        claim: String,
    },
    /// An MLflow `models:/` or `runs:/` reference could not be resolved.
    Registry {
        reason: &'static str,
        message: String,
    },
}

impl SourceProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidReference(_) => reason::INVALID_MODEL_REFERENCE,
            Self::ConfigMapNotFound { .. } => reason::CONFIGMAP_NOT_FOUND,
            Self::ConfigMapKeyNotFound { .. } => reason::CONFIGMAP_KEY_NOT_FOUND,
            Self::PvcNotFound { .. } => reason::PVC_NOT_FOUND,
            Self::Registry { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> String {
        self.message_for("spec.model.uri")
    }

    /// The message, naming `field` as the reference (`spec.canary.model.uri` for the canary).
    pub fn message_for(&self, field: &str) -> String {
        match self {
            Self::InvalidReference(m) => m.clone(),
            Self::ConfigMapNotFound { name } => format!("ConfigMap {name:?} referenced by {field} does not exist"),
            Self::ConfigMapKeyNotFound { name, key } => format!("ConfigMap {name:?} has no key {key:?} ({field})"),
            Self::PvcNotFound { claim } => {
                format!("PersistentVolumeClaim {claim:?} referenced by {field} does not exist")
            }
            Self::Registry { message, .. } => format!("{field}: {message}"),
        }
    }
}

/// What reconcile observed this pass.
#[derive(Default)]
pub struct Observed<'a> {
    /// The live Deployment (after our apply, when we applied).
    pub deployment: Option<&'a Deployment>,
    /// The stable track's server pods (listed only while not Ready).
    pub pods: &'a [Pod],
    /// Why the current spec could not be applied, if it could not.
    pub source_problem: Option<&'a SourceProblem>,
    /// The model the stable Deployment runs, when not `spec.model` (after a rollback).
    pub served: Option<&'a ModelSpec>,
    /// Why the stable track runs the last good model instead of `spec.model`.
    pub rolled_back: Option<&'a str>,
    /// The canary track, while `spec.canary` is set.
    pub canary: Option<CanaryObserved<'a>>,
    /// The traffic split in effect, while `spec.canary` is set.
    pub traffic: Option<TrafficStatus>,
    /// The rollback record to keep in status.
    pub rollback: Option<RollbackStatus>,
    /// Why the Gateway route could not be applied (the Gateway API is not installed).
    pub gateway_problem: Option<&'a str>,
    /// For an MLflow `spec.model.uri`: what it resolved to, and whether the tracking server answered.
    pub registry: Option<&'a desired::RegistrySource>,
    /// `spec.model` with an MLflow alias pinned to its resolved version (the last good model to keep).
    pub pinned: Option<&'a ModelSpec>,
}

/// What reconcile observed of the canary track.
pub struct CanaryObserved<'a> {
    pub spec: &'a CanarySpec,
    /// The live canary Deployment.
    pub deployment: Option<&'a Deployment>,
    /// How its rollout is going.
    pub health: Health,
    /// Why the canary's model source is unusable, if it is.
    pub source_problem: Option<&'a SourceProblem>,
    /// Why the canary is scaled to zero, when it failed.
    pub rolled_back: Option<&'a str>,
}

pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: truncate(message),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Computes the status. `now` is used only for conditions whose status changed (see
/// [`keep_transition_times`]).
pub fn compute(model: &MLModel, obs: &Observed<'_>, now: &Time) -> MLModelStatus {
    let generation = model.metadata.generation;
    let d_status = obs.deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let desired_replicas =
        obs.deployment.and_then(|d| d.spec.as_ref().and_then(|s| s.replicas)).unwrap_or(model.spec.replicas);
    let ready_replicas = d_status.ready_replicas.unwrap_or(0);
    let c = |t: &str, s: bool, r: &str, m: String| condition(t, s, r, m, generation, now);

    let (ready, progressing, degraded) = if let Some(p) = obs.source_problem {
        let serving = if ready_replicas > 0 {
            format!("; the previous version keeps serving on {ready_replicas} replica(s)")
        } else {
            String::new()
        };
        (
            c(READY, false, p.reason(), format!("{}{serving}", p.message())),
            c(
                PROGRESSING,
                false,
                reason::BLOCKED,
                "the current spec cannot be rolled out until the model source exists".into(),
            ),
            c(DEGRADED, true, p.reason(), p.message()),
        )
    } else {
        let state = rollout(obs.deployment);
        let problem = if state == Rollout::Complete { None } else { pod_problem(obs.pods) };
        let degraded = match (&state, &problem) {
            (_, Some((reason, msg))) => c(DEGRADED, true, reason, msg.clone()),
            (Rollout::DeadlineExceeded(msg), None) => {
                c(DEGRADED, true, reason::PROGRESS_DEADLINE_EXCEEDED, msg.clone())
            }
            _ => c(DEGRADED, false, reason::AS_EXPECTED, "no problems detected".into()),
        };
        match state {
            Rollout::Missing => (
                c(READY, false, reason::CREATING, "the server Deployment is being created".into()),
                c(PROGRESSING, true, reason::CREATING, "the server Deployment is being created".into()),
                degraded,
            ),
            Rollout::InProgress(msg) => (
                c(READY, false, reason::ROLLOUT_IN_PROGRESS, msg.clone()),
                c(PROGRESSING, true, reason::ROLLOUT_IN_PROGRESS, msg),
                degraded,
            ),
            Rollout::DeadlineExceeded(msg) => (
                c(READY, false, reason::PROGRESS_DEADLINE_EXCEEDED, msg.clone()),
                c(PROGRESSING, false, reason::PROGRESS_DEADLINE_EXCEEDED, msg),
                degraded,
            ),
            Rollout::Complete if desired_replicas == 0 => (
                c(READY, false, reason::SCALED_TO_ZERO, "0 replicas requested; the model is not serving".into()),
                c(PROGRESSING, false, reason::ROLLOUT_COMPLETE, "scaled to zero".into()),
                degraded,
            ),
            Rollout::Complete => (
                c(
                    READY,
                    true,
                    reason::AVAILABLE,
                    format!("{ready_replicas}/{desired_replicas} replicas ready and up to date"),
                ),
                c(PROGRESSING, false, reason::ROLLOUT_COMPLETE, "the current spec is fully rolled out".into()),
                degraded,
            ),
        }
    };

    let stable_good = obs.source_problem.is_none()
        && obs.rolled_back.is_none()
        && ready.status == "True"
        && obs.served.is_none_or(|m| *m == model.spec.model);
    let (mut ready, mut progressing, mut degraded) = (ready, progressing, degraded);
    if let Some(msg) = obs.rolled_back {
        let serving = obs.served.and_then(|m| m.version.as_deref()).unwrap_or("the last good model");
        ready = c(READY, false, reason::ROLLED_BACK, format!("{msg}; {ready_replicas} replica(s) serve {serving}"));
        progressing = c(
            PROGRESSING,
            false,
            reason::ROLLED_BACK,
            "the failed version is not retried until spec.model changes".into(),
        );
        degraded = c(DEGRADED, true, reason::ROLLED_BACK, msg.to_string());
    }

    let mut conditions = vec![];
    let mut canary_fields = (None, None, 0, 0);
    if let Some(canary) = &obs.canary {
        let cst = canary.deployment.and_then(|d| d.status.clone()).unwrap_or_default();
        let c_ready = cst.ready_replicas.unwrap_or(0);
        let c_desired = canary.deployment.and_then(|d| d.spec.as_ref().and_then(|s| s.replicas)).unwrap_or(0);
        let version = canary.spec.model.version.clone().unwrap_or_else(|| "the canary".into());
        let share = obs.traffic.as_ref().map(|t| t.canary_percent).unwrap_or(0);
        let canary_ready = match (canary.source_problem, canary.rolled_back, &canary.health) {
            (Some(p), _, _) => c(CANARY_READY, false, p.reason(), p.message_for("spec.canary.model.uri")),
            (None, Some(msg), _) => c(CANARY_READY, false, reason::CANARY_ROLLED_BACK, msg.to_string()),
            (None, None, Health::Available) => c(
                CANARY_READY,
                true,
                reason::AVAILABLE,
                format!("canary {version}: {c_ready}/{c_desired} replicas ready, serving {share}% of requests"),
            ),
            (None, None, Health::Failed { reason, message }) => c(CANARY_READY, false, reason, message.clone()),
            (None, None, Health::Progressing) => {
                let msg = format!("canary {version}: {c_ready}/{c_desired} replicas ready, taking over its share");
                c(CANARY_READY, false, reason::ROLLOUT_IN_PROGRESS, msg)
            }
        };
        if canary_ready.status != "True" && degraded.status != "True" {
            if let Some(p) = canary.source_problem {
                degraded = c(DEGRADED, true, p.reason(), p.message_for("spec.canary.model.uri"));
            } else if let Some(msg) = canary.rolled_back {
                degraded = c(DEGRADED, true, reason::CANARY_ROLLED_BACK, msg.to_string());
            }
        }
        if canary_ready.status != "True" && ready.status == "True" {
            ready = c(READY, false, &canary_ready.reason, canary_ready.message.clone());
            if canary.source_problem.is_none() && canary.rolled_back.is_none() {
                progressing = c(PROGRESSING, true, reason::CANARY_ROLLOUT_IN_PROGRESS, canary_ready.message.clone());
            }
        }
        conditions.push(canary_ready);
        canary_fields = (canary.spec.model.version.clone(), Some(c_ready), cst.replicas.unwrap_or(0), c_desired);
    }
    if let Some(msg) = obs.gateway_problem {
        if degraded.status != "True" {
            degraded = c(DEGRADED, true, reason::GATEWAY_API_UNAVAILABLE, msg.to_string());
        }
        if ready.status == "True" {
            ready = c(READY, false, reason::GATEWAY_API_UNAVAILABLE, msg.to_string());
        }
    }
    conditions.splice(0..0, [ready, progressing, degraded]);
    if let Some(r) = obs.registry {
        conditions.push(match &r.unavailable {
            Some(e) => c(REGISTRY, false, REGISTRY_UNAVAILABLE, format!("{e}; the running version keeps serving")),
            None => {
                c(REGISTRY, true, reason::RESOLVED, format!("{} resolved at {}", model.spec.model.uri, r.tracking_uri))
            }
        });
    } else if let Some(p @ SourceProblem::Registry { .. }) = obs.source_problem {
        conditions.push(c(REGISTRY, false, p.reason(), p.message()));
    }

    let (canary_version, canary_ready_replicas, canary_pods, canary_desired) = canary_fields;
    let all_ready = ready_replicas + canary_ready_replicas.unwrap_or(0);
    let served = obs.served.unwrap_or(&model.spec.model);
    MLModelStatus {
        observed_generation: generation,
        conditions,
        replicas: d_status.replicas.unwrap_or(0) + canary_pods,
        ready_replicas: all_ready,
        updated_replicas: d_status.updated_replicas.unwrap_or(0),
        replica_summary: Some(format!("{all_ready}/{}", desired_replicas + canary_desired)),
        url: Some(desired::service_url(model)),
        model_version: served.version.clone().or_else(|| {
            let r = obs.served.is_none().then_some(obs.registry).flatten()?;
            r.status.resolved_version.clone()
        }),
        selector: Some(desired::pod_selector_string(model)),
        stable_version: obs.canary.as_ref().and(served.version.clone()),
        stable_ready_replicas: obs.canary.as_ref().map(|_| ready_replicas),
        canary_version,
        canary_ready_replicas,
        traffic: obs.traffic.clone(),
        last_good_model: if stable_good {
            Some(obs.pinned.unwrap_or(&model.spec.model).clone())
        } else {
            model.status.as_ref().and_then(|s| s.last_good_model.clone())
        },
        rollback: obs.rollback.clone(),
        model: obs.registry.map(|r| r.status.clone()).or_else(|| {
            // While the source is unusable, keep what the running pods were resolved from.
            obs.source_problem.and(model.status.as_ref().and_then(|s| s.model.clone()))
        }),
    }
}

/// Keeps each condition's `lastTransitionTime` from `old` when its status did not change, so a
/// reconcile that changes nothing computes a status equal to the stored one.
pub fn keep_transition_times(old: Option<&MLModelStatus>, new: &mut MLModelStatus) {
    let Some(old) = old else { return };
    for c in &mut new.conditions {
        if let Some(prev) = old.condition(&c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// Whether the model's Ready condition is True for its current generation.
pub fn is_ready(model: &MLModel, status: &MLModelStatus) -> bool {
    status.observed_generation == model.metadata.generation
        && status.condition(READY).is_some_and(|c| c.status == "True")
}

/// The status of a model whose spec cannot be applied (a name conflict, a child the API server
/// refuses, an image the policy forbids): the stored status with Ready False, Progressing False
/// and Degraded True, naming `reason` and the cause. Whatever already runs is left as it is.
pub fn blocked(model: &MLModel, reason: &str, message: &str, now: &Time) -> MLModelStatus {
    let generation = model.metadata.generation;
    let mut st = model.status.clone().unwrap_or_default();
    let c = |t: &str, s: bool, r: &str, m: String| condition(t, s, r, m, generation, now);
    let others = st.conditions.iter().filter(|c| ![READY, PROGRESSING, DEGRADED].contains(&c.type_.as_str()));
    let mut conditions = vec![
        c(READY, false, reason, message.to_string()),
        c(
            PROGRESSING,
            false,
            reason::BLOCKED,
            "the current spec cannot be rolled out until the problem is fixed".into(),
        ),
        c(DEGRADED, true, reason, message.to_string()),
    ];
    conditions.extend(others.cloned());
    st.observed_generation = generation;
    st.conditions = conditions;
    if st.selector.is_none() {
        st.selector = Some(desired::pod_selector_string(model));
    }
    st
}
