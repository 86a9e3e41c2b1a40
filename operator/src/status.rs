//! Pure status computation: the live Deployment and pods (and any model-source problem) in,
//! the MLModel status out. Ready means the current generation is fully rolled out and available.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use modelship_crds::condition::{DEGRADED, PROGRESSING, READY};
use modelship_crds::{MLModel, MLModelStatus};

use crate::desired;

/// A problem with the model source that stops us from rolling out the current spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceProblem {
    InvalidReference(String),
    ConfigMapNotFound { name: String },
    ConfigMapKeyNotFound { name: String, key: String },
    PvcNotFound { claim: String },
}

impl SourceProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidReference(_) => "InvalidModelReference",
            Self::ConfigMapNotFound { .. } => "ConfigMapNotFound",
            Self::ConfigMapKeyNotFound { .. } => "ConfigMapKeyNotFound",
            Self::PvcNotFound { .. } => "PersistentVolumeClaimNotFound",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::InvalidReference(m) => m.clone(),
            Self::ConfigMapNotFound { name } => {
                format!("ConfigMap {name:?} referenced by spec.model.uri does not exist")
            }
            Self::ConfigMapKeyNotFound { name, key } => {
                format!("ConfigMap {name:?} has no key {key:?} (spec.model.uri)")
            }
            Self::PvcNotFound { claim } => {
                format!("PersistentVolumeClaim {claim:?} referenced by spec.model.uri does not exist")
            }
        }
    }
}

/// Where the Deployment's rollout stands, by kubectl's `rollout status` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Not created yet.
    Missing,
    InProgress(String),
    DeadlineExceeded(String),
    Complete,
}

/// kubectl's rule (rollout_status.go), applied to the live Deployment.
pub fn rollout(d: Option<&Deployment>) -> Rollout {
    let Some(d) = d else { return Rollout::Missing };
    let st = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0) {
        return Rollout::InProgress("waiting for the Deployment controller to observe the new spec".into());
    }
    let conds = st.conditions.unwrap_or_default();
    if let Some(c) = conds.iter().find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        let detail = c.message.clone().unwrap_or_default();
        return Rollout::DeadlineExceeded(format!("rollout exceeded its progress deadline: {detail}"));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Rollout::InProgress(format!("{} old replicas are pending termination", replicas - updated));
    }
    if available < updated {
        return Rollout::InProgress(format!("{available} of {updated} updated replicas are available"));
    }
    Rollout::Complete
}

/// Waiting reasons that mean a pod will not come up by itself (kubectl's list).
const BAD_WAITING: &[&str] =
    &["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError"];

/// The marker `modelship-server` prints when the model fails to load (see server `main.rs`).
const LOAD_FAILED: &str = "model failed to load";

/// Longest condition message we write.
const MAX_MESSAGE: usize = 1024;

/// A reason and message for pods that cannot become ready, if any. The message never names a
/// pod, so it stays stable across reconciles while the problem lasts.
pub fn pod_problem(pods: &[Pod]) -> Option<(String, String)> {
    let mut found: Option<(String, String)> = None;
    let mut count = 0;
    for pod in pods {
        let st = pod.status.clone().unwrap_or_default();
        let all =
            st.init_container_statuses.unwrap_or_default().into_iter().chain(st.container_statuses.unwrap_or_default());
        for cs in all {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
            let terminated = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .or(cs.state.as_ref().and_then(|s| s.terminated.as_ref()));
            let term_msg = terminated.and_then(|t| t.message.clone()).unwrap_or_default();
            let load_failed = term_msg.lines().find(|l| l.contains(LOAD_FAILED)).map(str::to_string);
            let oom = terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled");
            let problem = match (waiting.as_deref(), load_failed) {
                (_, Some(line)) => Some(("ModelLoadFailed".to_string(), line.trim().to_string())),
                (Some(w), None) if BAD_WAITING.contains(&w) => {
                    let detail = if oom {
                        "the container was OOMKilled; raise spec.server.resources.limits.memory".to_string()
                    } else {
                        cs.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.message.clone())
                            .unwrap_or_default()
                    };
                    Some((w.to_string(), detail))
                }
                _ => None,
            };
            if let Some(p) = problem {
                count += 1;
                found.get_or_insert(p);
            }
        }
    }
    found.map(|(reason, detail)| {
        let mut msg = format!("{count} server container(s) cannot start ({reason})");
        if !detail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&detail);
        }
        (reason, truncate(msg))
    })
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// What reconcile observed this pass.
#[derive(Default)]
pub struct Observed<'a> {
    /// The live Deployment (after our apply, when we applied).
    pub deployment: Option<&'a Deployment>,
    /// The model's server pods (listed only while not Ready).
    pub pods: &'a [Pod],
    /// Why the current spec could not be applied, if it could not.
    pub source_problem: Option<&'a SourceProblem>,
}

fn condition(
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
                "Blocked",
                "the current spec cannot be rolled out until the model source exists".into(),
            ),
            c(DEGRADED, true, p.reason(), p.message()),
        )
    } else {
        let state = rollout(obs.deployment);
        let problem = if state == Rollout::Complete { None } else { pod_problem(obs.pods) };
        let degraded = match (&state, &problem) {
            (_, Some((reason, msg))) => c(DEGRADED, true, reason, msg.clone()),
            (Rollout::DeadlineExceeded(msg), None) => c(DEGRADED, true, "ProgressDeadlineExceeded", msg.clone()),
            _ => c(DEGRADED, false, "AsExpected", "no problems detected".into()),
        };
        match state {
            Rollout::Missing => (
                c(READY, false, "Creating", "the server Deployment is being created".into()),
                c(PROGRESSING, true, "Creating", "the server Deployment is being created".into()),
                degraded,
            ),
            Rollout::InProgress(msg) => (
                c(READY, false, "RolloutInProgress", msg.clone()),
                c(PROGRESSING, true, "RolloutInProgress", msg),
                degraded,
            ),
            Rollout::DeadlineExceeded(msg) => (
                c(READY, false, "ProgressDeadlineExceeded", msg.clone()),
                c(PROGRESSING, false, "ProgressDeadlineExceeded", msg),
                degraded,
            ),
            Rollout::Complete if desired_replicas == 0 => (
                c(READY, false, "ScaledToZero", "0 replicas requested; the model is not serving".into()),
                c(PROGRESSING, false, "RolloutComplete", "scaled to zero".into()),
                degraded,
            ),
            Rollout::Complete => (
                c(
                    READY,
                    true,
                    "Available",
                    format!("{ready_replicas}/{desired_replicas} replicas ready and up to date"),
                ),
                c(PROGRESSING, false, "RolloutComplete", "the current spec is fully rolled out".into()),
                degraded,
            ),
        }
    };

    MLModelStatus {
        observed_generation: generation,
        conditions: vec![ready, progressing, degraded],
        replicas: d_status.replicas.unwrap_or(0),
        ready_replicas,
        updated_replicas: d_status.updated_replicas.unwrap_or(0),
        replica_summary: Some(format!("{ready_replicas}/{desired_replicas}")),
        url: Some(desired::service_url(model)),
        model_version: model.spec.model.version.clone(),
        selector: Some(desired::pod_selector_string(model)),
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
