//! The health rules: how a track's rollout stands (kubectl's rule), which pod problems mean it
//! will not come up by itself, and what that makes of one version's health. Shared by status
//! (what Ready and Degraded say) and rollback (when to go back); pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use modelship_crds::labels;
use modelship_crds::reason;

/// How one track's current rollout is going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Progressing,
    Available,
    Failed { reason: String, message: String },
}

/// The pods of `track` whose pod template has rollout hash `hash` (one version's pods).
pub fn pods_of(pods: &[Pod], track: &str, hash: &str) -> Vec<Pod> {
    let get = |m: Option<&std::collections::BTreeMap<String, String>>, k: &str| m.and_then(|m| m.get(k)).cloned();
    pods.iter()
        .filter(|p| get(p.metadata.labels.as_ref(), labels::TRACK).as_deref() == Some(track))
        .filter(|p| get(p.metadata.annotations.as_ref(), labels::ROLLOUT_HASH).as_deref() == Some(hash))
        .cloned()
        .collect()
}

/// The rollout hash of a Deployment's pod template.
pub fn template_hash(d: &Deployment) -> Option<&str> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(labels::ROLLOUT_HASH).map(String::as_str)
}

/// How the live Deployment's rollout of the version with rollout hash `hash` is going; `pods`
/// are that version's pods. A Deployment still on another template is Progressing.
pub fn health(live: Option<&Deployment>, hash: &str, pods: &[Pod]) -> Health {
    let Some(d) = live.filter(|d| template_hash(d) == Some(hash)) else {
        return Health::Progressing;
    };
    match rollout(Some(d)) {
        Rollout::Complete => Health::Available,
        Rollout::DeadlineExceeded(message) => {
            Health::Failed { reason: reason::PROGRESS_DEADLINE_EXCEEDED.into(), message }
        }
        Rollout::Missing | Rollout::InProgress(_) => match pod_problem(pods) {
            Some((reason, message)) => Health::Failed { reason, message },
            None => Health::Progressing,
        },
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
    // kubectl calls a scale-down done once the ReplicaSet is resized; we wait for the pods to go,
    // so a canary's share is really in place before Ready (and the split in status is real).
    if replicas > want {
        return Rollout::InProgress(format!("{} surplus replicas are being removed", replicas - want));
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
                (_, Some(line)) => Some((reason::MODEL_LOAD_FAILED.to_string(), line.trim().to_string())),
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

pub(crate) fn truncate(mut s: String) -> String {
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
