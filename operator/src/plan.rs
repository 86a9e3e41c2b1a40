//! The pure middle of a reconcile: what [`observe`](crate::observe) read in, the writes to send
//! and the decisions that status reports out. No I/O, so it is unit-tested without a cluster.
//!
//! The decisions, in order: the canary (scaled to zero once it failed), the stable track
//! (`spec.model`, or the last good model after `spec.model` failed), the replica split between
//! them, then every child to apply (only those that differ from the live copy, see [`intent`])
//! and to delete (by inventory: what carries our label and controller ownerReference and the plan
//! no longer names).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use modelship_crds::{CanarySpec, FIELD_MANAGER, MLModel, ModelSpec, ModelUri, RollbackStatus, TrafficStatus, labels};
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use crate::desired::{self, ServerPods, Settings, SourceVersion, Track};
use crate::error::Error;
use crate::health::{self, Health, Rollout};
use crate::rollback::{self, StableChoice};
use crate::source::Resolved;
use crate::{intent, ownership, traffic};

/// Everything a reconcile reads before it writes.
#[derive(Clone, Debug)]
pub struct Observation {
    /// `spec.model.uri`, resolved.
    pub resolved: Resolved,
    /// `spec.canary.model.uri`, resolved, while `spec.canary` is set.
    pub canary: Option<Resolved>,
    /// `status.lastGoodModel`, resolved, when it differs from `spec.model` (a rollback target).
    pub last_good: Option<Resolved>,
    pub stable_deployment: Option<Deployment>,
    pub canary_deployment: Option<Deployment>,
    /// The model's pods, all tracks, sorted by name.
    pub pods: Vec<Pod>,
    /// The Services that carry the model's label, and any of the names it applies.
    pub services: Vec<Service>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The HTTPRoute, when Gateway mode is or was in use.
    pub route: Option<DynamicObject>,
}

impl Observation {
    /// Nothing in the cluster yet, with `spec.model` resolved to `resolved`.
    pub fn empty(resolved: Resolved) -> Self {
        Self {
            resolved,
            canary: None,
            last_good: None,
            stable_deployment: None,
            canary_deployment: None,
            pods: vec![],
            services: vec![],
            hpa: None,
            route: None,
        }
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.metadata.name.as_deref() == Some(name))
    }
}

/// The kinds of children a model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Deployment,
    HorizontalPodAutoscaler,
    HttpRoute,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::Deployment => "Deployment",
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Self::HttpRoute => "HTTPRoute",
        }
    }
}

/// One request the apply phase sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Forced server-side apply under [`FIELD_MANAGER`] of `body` (stamped with its digest).
    Apply { kind: Kind, name: String, action: &'static str, body: Value },
    /// Pins the Deployment's `spec.replicas` at its live value under a second manager, before
    /// we stop sending it (the HPA takes over), so the API server does not reset it to 1.
    HandOverReplicas { name: String, replicas: i32 },
    /// Deletes a child this model controls, on the condition that its uid is still `uid`.
    Delete { kind: Kind, name: String, action: &'static str, uid: Option<String> },
}

impl Write {
    /// `(verb, kind, name)`, for tests and logs.
    pub fn summary(&self) -> (&'static str, Kind, &str) {
        match self {
            Self::Apply { kind, name, .. } => ("apply", *kind, name),
            Self::HandOverReplicas { name, .. } => ("hand over replicas", Kind::Deployment, name),
            Self::Delete { kind, name, .. } => ("delete", *kind, name),
        }
    }
}

/// Events worth announcing once the writes went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// The server Deployment did not exist.
    Created,
    /// The pod template changed: new pods roll out.
    RolloutStarted,
}

/// The canary this reconcile runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryDecision {
    /// How its rollout is going, as status reports it (Progressing while the stable track has
    /// not yet handed it its share).
    pub health: Health,
    /// This canary version failed before: it stays scaled to zero.
    pub failed: bool,
}

/// What to write, and the decisions status reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The requests to send, in order.
    pub writes: Vec<Write>,
    /// Applies not sent because the live copy already matches (by action, for metrics).
    pub unchanged: Vec<&'static str>,
    /// The rollback record to keep in status.
    pub rollback: RollbackStatus,
    /// The last good model, when the stable track serves it instead of `spec.model`.
    pub served: Option<ModelSpec>,
    /// The canary, while `spec.canary` resolves.
    pub canary: Option<CanaryDecision>,
    /// The canary Deployment is deleted (the experiment ended).
    pub canary_removed: bool,
    /// Gateway mode: the HTTPRoute weights applied.
    pub gateway_weights: Option<TrafficStatus>,
    pub announce: Option<Announcement>,
}

impl Plan {
    /// Whether this plan applies the `kind` named `name`.
    pub fn applies(&self, kind: Kind, name: &str) -> bool {
        self.writes.iter().any(|w| matches!(w, Write::Apply { kind: k, name: n, .. } if *k == kind && n == name))
    }
}

/// Decides what to write. Fails only on a name conflict: a child's name is taken by an object
/// this model does not control (nothing is written then).
pub fn plan(model: &MLModel, seen: &Observation, settings: &Settings) -> Result<Plan, Error> {
    let name = model.name_any();
    let canary_name = Track::Canary.name(model);
    let deployment_meta = |d: &Option<Deployment>| d.as_ref().map(|d| d.metadata.clone());
    // Checked first, as the replicas hand-over writes before the Deployment's apply.
    ownership::check(deployment_meta(&seen.stable_deployment).as_ref(), model, "Deployment", &name)?;
    ownership::check(deployment_meta(&seen.canary_deployment).as_ref(), model, "Deployment", &canary_name)?;
    let previous = model.status.clone().unwrap_or_default();
    let mut rollback = previous.rollback.clone().unwrap_or_default();
    let mut w = Writes { model, writes: vec![], unchanged: vec![] };

    let canary = canary_track(model, seen, settings, &mut rollback);
    let served = stable_track(model, seen, settings, previous.last_good_model.as_ref(), &mut rollback);
    let gateway = model.spec.traffic.as_ref().and_then(|t| t.gateway.as_ref());
    let live_canary = canary.as_ref().filter(|c| !c.failed);
    let canary_available = seen.canary_deployment.as_ref().map(available).unwrap_or(0);
    let split = replica_split(model, live_canary.map(|c| c.spec), gateway.is_some(), canary_available);
    let autoscaled = model.spec.autoscaling.is_some();

    // The stable track; a broken source never replaces a working version (nothing is applied).
    let mut announce = None;
    let mut stable_changes = false;
    if let Ok((uri, version)) = &seen.resolved {
        let (m, u, v) = served.as_ref().map(|(m, u, v)| (m, u, v)).unwrap_or((&model.spec.model, uri, version));
        let pods = ServerPods {
            track: Track::Stable,
            model: m,
            uri: u,
            source: v,
            replicas: (!autoscaled).then_some(split.stable),
        };
        let deployment = desired::deployment(model, &pods, settings);
        w.apply(Kind::Service, &desired::service(model), seen.service(&name), "apply Service")?;
        if let Some(live) = seen.stable_deployment.as_ref().filter(|d| autoscaled && we_own_replicas(d)) {
            let replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            w.writes.push(Write::HandOverReplicas { name: name.clone(), replicas });
        }
        stable_changes = w.apply(Kind::Deployment, &deployment, seen.stable_deployment.as_ref(), "apply Deployment")?;
        match desired::hpa(model) {
            Some(hpa) => {
                w.apply(Kind::HorizontalPodAutoscaler, &hpa, seen.hpa.as_ref(), "apply HorizontalPodAutoscaler")?;
            }
            None => {
                let hpa = seen.hpa.as_ref().map(|h| &h.metadata);
                w.delete(Kind::HorizontalPodAutoscaler, hpa, "delete HorizontalPodAutoscaler");
            }
        }
        announce = match &seen.stable_deployment {
            None => Some(Announcement::Created),
            Some(b) if health::template_hash(b) != health::template_hash(&deployment) => {
                Some(Announcement::RolloutStarted)
            }
            Some(_) => None,
        };
    }

    // The canary track.
    let mut canary_removed = false;
    match &canary {
        Some(c) => {
            let pods = ServerPods {
                track: Track::Canary,
                model: &c.spec.model,
                uri: c.uri,
                source: c.version,
                replicas: Some(if c.failed { 0 } else { split.canary }),
            };
            let deployment = desired::deployment(model, &pods, settings);
            w.apply(Kind::Deployment, &deployment, seen.canary_deployment.as_ref(), "apply canary Deployment")?;
        }
        // The experiment ended: remove the canary once the stable pods carry the whole load.
        None if model.spec.canary.is_none() => {
            let stable_done = !stable_changes && health::rollout(seen.stable_deployment.as_ref()) == Rollout::Complete;
            if let Some(old) = seen.canary_deployment.as_ref().filter(|_| stable_done) {
                w.delete(Kind::Deployment, Some(&old.metadata), "delete canary Deployment");
                (rollback.failed_canary, rollback.canary_message) = (None, None);
                canary_removed = true;
            }
        }
        // The canary's source is missing: leave the running canary as it is.
        None => {}
    }

    // Traffic: the Gateway route and a Service per track, or only the model's Service.
    let gateway_weights = match gateway {
        Some(gw) => {
            let percent = model.spec.canary.as_ref().map(|c| c.traffic_percent).unwrap_or(0);
            let weights = traffic::gateway_weights(percent, live_canary.is_some() && canary_available > 0);
            let mut keep = vec![name.clone()];
            let mut tracks = vec![Track::Stable];
            tracks.extend(canary.is_some().then_some(Track::Canary));
            for track in tracks {
                let (svc, svc_name) = (traffic::track_service(model, track), traffic::track_service_name(model, track));
                let action = if track == Track::Stable { "apply stable Service" } else { "apply canary Service" };
                w.apply(Kind::Service, &svc, seen.service(&svc_name), action)?;
                keep.push(svc_name);
            }
            w.prune_services(&seen.services, &keep);
            let route = traffic::http_route(model, gw, &weights, canary.is_some());
            w.apply(Kind::HttpRoute, &route, seen.route.as_ref(), "apply HTTPRoute")?;
            Some(weights)
        }
        None => {
            w.prune_services(&seen.services, std::slice::from_ref(&name));
            w.delete(Kind::HttpRoute, seen.route.as_ref().map(|r| &r.metadata), "delete HTTPRoute");
            None
        }
    };

    let handing_over = split.handing_over;
    Ok(Plan {
        writes: w.writes,
        unchanged: w.unchanged,
        rollback,
        served: served.map(|(m, _, _)| m),
        canary: canary.map(|c| CanaryDecision {
            health: if handing_over { Health::Progressing } else { c.health },
            failed: c.failed,
        }),
        canary_removed,
        gateway_weights,
        announce,
    })
}

/// Whether our field manager (via Apply) currently owns `spec.replicas` of the Deployment.
pub fn we_own_replicas(d: &Deployment) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.is_none()
            && m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

pub fn available(d: &Deployment) -> i32 {
    d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The writes collected so far.
struct Writes<'a> {
    model: &'a MLModel,
    writes: Vec<Write>,
    unchanged: Vec<&'static str>,
}

impl Writes<'_> {
    /// Adds the apply of `obj` unless `live` already holds it; refuses an object of that name the
    /// model does not control. Returns whether the apply is sent.
    fn apply<K: Serialize, L: Resource + Serialize>(
        &mut self,
        kind: Kind,
        obj: &K,
        live: Option<&L>,
        action: &'static str,
    ) -> Result<bool, Error> {
        let body = intent::stamped(obj);
        let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        ownership::check(live.map(|l| l.meta()), self.model, kind.as_str(), &name)?;
        if live.is_some_and(|l| intent::is_current(&body, l)) {
            self.unchanged.push(action);
            return Ok(false);
        }
        self.writes.push(Write::Apply { kind, name, action, body });
        Ok(true)
    }

    /// Adds the delete of the object `live` describes, if it exists and the model controls it.
    fn delete(&mut self, kind: Kind, live: Option<&ObjectMeta>, action: &'static str) {
        let Some(live) = live.filter(|l| ownership::is_controlled_by(l, self.model)) else { return };
        let name = live.name.clone().unwrap_or_default();
        self.writes.push(Write::Delete { kind, name, action, uid: live.uid.clone() });
    }

    /// Deletes the Services the model controls that `keep` does not name.
    fn prune_services(&mut self, services: &[Service], keep: &[String]) {
        for svc in services.iter().filter(|s| s.metadata.name.as_ref().is_some_and(|n| !keep.contains(n))) {
            self.delete(Kind::Service, Some(&svc.metadata), "delete Service");
        }
    }
}

/// The canary this reconcile runs.
struct CanaryTrack<'a> {
    spec: &'a CanarySpec,
    uri: &'a ModelUri,
    version: &'a SourceVersion,
    health: Health,
    failed: bool,
}

/// The canary, while `spec.canary` resolves; records a newly failed canary in `rollback`.
fn canary_track<'a>(
    model: &'a MLModel,
    seen: &'a Observation,
    settings: &Settings,
    rollback: &mut RollbackStatus,
) -> Option<CanaryTrack<'a>> {
    let (spec, Some(Ok((uri, version)))) = (model.spec.canary.as_ref()?, &seen.canary) else { return None };
    let hash = desired::rollout_hash(model, &spec.model, settings, version);
    if rollback.failed_canary.as_deref().is_some_and(|h| h != hash) {
        (rollback.failed_canary, rollback.canary_message) = (None, None);
    }
    let pods = health::pods_of(&seen.pods, labels::TRACK_CANARY, &hash);
    let health = health::health(seen.canary_deployment.as_ref(), &hash, &pods);
    if let Some(msg) = rollback::canary_failed_now(&health, &hash, rollback.failed_canary.as_deref()) {
        warn!(model = %model.name_any(), %msg, "canary failed; scaling it to zero");
        (rollback.failed_canary, rollback.canary_message) = (Some(hash.clone()), Some(msg));
    }
    let failed = rollback.failed_canary.as_deref() == Some(hash.as_str());
    Some(CanaryTrack { spec, uri, version, health, failed })
}

/// The last good model (with its resolved source) when the stable track serves it instead of
/// `spec.model`; records a new rollback in `rollback`.
fn stable_track(
    model: &MLModel,
    seen: &Observation,
    settings: &Settings,
    last_good: Option<&ModelSpec>,
    rollback: &mut RollbackStatus,
) -> Option<(ModelSpec, ModelUri, SourceVersion)> {
    let Ok((_, version)) = &seen.resolved else { return None };
    let hash = desired::rollout_hash(model, &model.spec.model, settings, version);
    if rollback.failed_stable.as_deref().is_some_and(|h| h != hash) {
        (rollback.failed_stable, rollback.stable_message) = (None, None);
    }
    let pods = health::pods_of(&seen.pods, labels::TRACK_STABLE, &hash);
    let health = health::health(seen.stable_deployment.as_ref(), &hash, &pods);
    let choice = rollback::stable_choice(
        &model.spec.model,
        &hash,
        &health,
        last_good,
        rollback.failed_stable.as_deref(),
        version.registry.as_ref().and_then(|r| r.status.resolved_version.as_deref()),
    );
    let StableChoice::LastGood { model: good, newly } = choice else { return None };
    match &seen.last_good {
        Some(Ok((uri, version))) => {
            if let Some(msg) = newly {
                warn!(model = %model.name_any(), %msg, "rolling back");
                (rollback.failed_stable, rollback.stable_message) = (Some(hash), Some(msg));
            }
            Some((good, uri.clone(), version.clone()))
        }
        Some(Err(problem)) => {
            warn!(model = %model.name_any(), problem = %problem.message(), "cannot roll back: the last good model's source is gone");
            None
        }
        None => None,
    }
}

/// Pod counts per track, and whether the canary is up but the stable track has not yet given up
/// its share. The canary takes its share from the stable pods only once it is ready, so the
/// number of ready pods never drops below `spec.replicas`.
struct ReplicaSplit {
    stable: i32,
    canary: i32,
    handing_over: bool,
}

fn replica_split(model: &MLModel, canary: Option<&CanarySpec>, gateway: bool, canary_available: i32) -> ReplicaSplit {
    let total = model.spec.replicas;
    match canary {
        None => ReplicaSplit { stable: total, canary: 0, handing_over: false },
        Some(c) if gateway => ReplicaSplit {
            stable: total,
            canary: traffic::gateway_canary_replicas(total, c.traffic_percent, c.replicas),
            handing_over: false,
        },
        Some(c) => {
            let split = traffic::replica_split(total, c.traffic_percent, c.replicas);
            let ready = canary_available >= split.canary;
            ReplicaSplit {
                stable: if ready { split.stable } else { total },
                canary: split.canary,
                handing_over: !ready,
            }
        }
    }
}
