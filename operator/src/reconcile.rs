//! The MLModel controller: one reconcile in phases that read top to bottom.
//!
//! observe (resolve the model sources, read the children from the caches) → plan (pure: what to
//! write and what status reports, see [`plan`]) → apply (server-side, one field manager, forced,
//! only what differs) → status (written only if it changed) → requeue.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::condition::{DEGRADED, READY};
use modelship_crds::{FIELD_MANAGER, MLModel, MLModelStatus, ModelSpec, ModelUri, RegistryRef, RollbackStatus, labels};
use tracing::{info, warn};

use crate::apply::{self, Applied};
use crate::caches::Caches;
use crate::desired::{self, Settings, SourceVersion, Track};
use crate::error::{Error, KubeContext};
use crate::failures::Failures;
use crate::health;
use crate::metrics::Metrics;
use crate::observe::{self, Reads};
use crate::plan::{self, Announcement, Observation, Plan};
use crate::registry::{Registry, RegistrySettings};
use crate::status::{self, CanaryObserved, Observed};
use crate::{traffic, validate};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per MLModel, for exponential backoff.
    pub failures: std::sync::Mutex<Failures>,
    /// The MLflow REST client, for `models:/` and `runs:/` URIs.
    pub registry: Registry,
    /// Consecutive passes per MLModel in which its tracking server did not answer.
    pub registry_failures: std::sync::Mutex<Failures>,
    /// Where children are read from.
    pub reads: Reads,
    /// Periodic resync of a Ready model.
    pub resync: Duration,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, recorder: Recorder) -> Self {
        Self {
            client,
            settings,
            metrics,
            recorder,
            failures: Default::default(),
            registry: Registry::new(RegistrySettings::default()),
            registry_failures: Default::default(),
            reads: Reads::Direct,
            resync: REQUEUE_READY,
        }
    }

    /// The same context reading children from `caches`.
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.reads = Reads::Cached(caches);
        self
    }

    /// The same context resyncing Ready models every `resync`.
    pub fn with_resync(mut self, resync: Duration) -> Self {
        self.resync = resync;
        self
    }

    /// The same context with the operator's MLflow settings.
    pub fn with_registry(mut self, settings: RegistrySettings) -> Self {
        self.registry = Registry::new(settings);
        self
    }
}

/// Delay before retrying after the `n`th consecutive failure: 5 s, 10 s, 20 s, ... up to 5 min.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << n.saturating_sub(1).min(6)).min(300))
}

/// Requeue while a model is not Ready: catches crash loops that change no Deployment status.
const REQUEUE_NOT_READY: Duration = Duration::from_secs(15);
/// Requeue of a Ready model with an HPA (we do not watch HPAs: their status churns).
const REQUEUE_AUTOSCALED: Duration = Duration::from_secs(60);
/// Periodic resync of a Ready model, by default.
pub const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Requeue after a status write met a newer MLModel (409): soon, once the watch delivered it.
const REQUEUE_STALE: Duration = Duration::from_secs(1);

pub async fn reconcile(model: Arc<MLModel>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    match reconcile_inner(&model, &ctx).await {
        Ok(action) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.clear(&model);
            }
            Ok(action)
        }
        Err(e) => match e.blocking_reason() {
            Some(reason) => report_blocked(&model, &ctx, reason, &e).await,
            None => Err(e),
        },
    }
}

/// A spec that cannot be applied as it is goes into status (an Event marks the change) and is
/// retried with backoff: until the spec or the conflicting object changes, a retry cannot help.
async fn report_blocked(model: &MLModel, ctx: &Context, reason: &'static str, error: &Error) -> Result<Action, Error> {
    let ns = model.namespace().ok_or(Error::MissingNamespace)?;
    warn!(model = %model.name_any(), namespace = %ns, reason, %error, "the spec cannot be applied");
    ctx.metrics.error(error.metric_label());
    let n = record_failure(ctx, model);
    let now = Time(jiff::Timestamp::now());
    let mut new_status = status::blocked(model, reason, &error.to_string(), &now);
    status::keep_transition_times(model.status.as_ref(), &mut new_status);
    Ok(match update_status(ctx, model, &ns, &new_status).await? {
        StatusWrite::Stale => Action::requeue(REQUEUE_STALE),
        StatusWrite::Done => Action::requeue(backoff(n)),
    })
}

/// Counts one more consecutive failure of `model`; returns the count.
fn record_failure(ctx: &Context, model: &MLModel) -> u32 {
    ctx.failures.lock().map(|mut f| f.record(model, std::time::Instant::now())).unwrap_or(1)
}

/// The reconcile proper; `reconcile` wraps it with timing and backoff bookkeeping.
async fn reconcile_inner(model: &Arc<MLModel>, ctx: &Context) -> Result<Action, Error> {
    let ns = model.namespace().ok_or(Error::MissingNamespace)?;
    // Before anything is applied: a forbidden image leaves the running pods as they are.
    let image = desired::server_image(model, &ctx.settings);
    if !ctx.settings.image_allowed(&image) {
        return Err(Error::ImageNotAllowed { image, allowed: ctx.settings.allowed_image_prefixes.join(", ") });
    }
    validate::spec(model)?;

    let seen = observe::observe(&ctx.client, &ctx.registry, &ctx.reads, model, &ns).await?;
    let plan = plan::plan(model, &seen, &ctx.settings)?;
    let applied = apply::execute(&ctx.client, &ctx.metrics, &model.name_any(), &ns, &plan).await?;
    if let Some(announcement) = plan.announce {
        announce_rollout(ctx, model, announcement).await;
    }

    let stable_pods: Vec<Pod> =
        seen.pods.iter().filter(|p| track_of(p) == Some(labels::TRACK_STABLE)).cloned().collect();
    let pinned = seen.resolved.as_ref().ok().and_then(|(uri, v)| pinned_spec(&model.spec.model, uri, v));
    let observed = observed(model, &seen, &plan, &applied, &stable_pods, pinned.as_ref());
    let registry = observed.registry;
    let now = Time(jiff::Timestamp::now());
    let mut new_status = status::compute(model, &observed, &now);
    status::keep_transition_times(model.status.as_ref(), &mut new_status);
    if update_status(ctx, model, &ns, &new_status).await? == StatusWrite::Stale {
        return Ok(Action::requeue(REQUEUE_STALE));
    }

    let requeue = if !status::is_ready(model, &new_status) {
        REQUEUE_NOT_READY
    } else if model.spec.autoscaling.is_some() {
        REQUEUE_AUTOSCALED
    } else {
        ctx.resync
    };
    Ok(Action::requeue(requeue.min(registry_poll(ctx, model, registry))))
}

/// What status is computed from: the observation, the plan's decisions, and the Deployments as
/// our applies left them.
fn observed<'a>(
    model: &'a MLModel,
    seen: &'a Observation,
    plan: &'a Plan,
    applied: &'a Applied,
    stable_pods: &'a [Pod],
    pinned: Option<&'a ModelSpec>,
) -> Observed<'a> {
    let (name, canary_name) = (model.name_any(), Track::Canary.name(model));
    let deployment = applied.deployment(&name).or(seen.stable_deployment.as_ref());
    let canary_deployment = match plan.canary_removed {
        true => None,
        false => applied.deployment(&canary_name).or(seen.canary_deployment.as_ref()),
    };
    let canary = match (&model.spec.canary, &seen.canary) {
        (Some(spec), Some(resolved)) => Some(CanaryObserved {
            spec,
            deployment: canary_deployment,
            health: plan.canary.as_ref().map(|c| c.health.clone()).unwrap_or(health::Health::Progressing),
            source_problem: resolved.as_ref().err(),
            rolled_back: plan.canary.as_ref().filter(|c| c.failed).and(plan.rollback.canary_message.as_deref()),
        }),
        _ => None,
    };
    let gateway_problem = applied.route_missing.then_some(
        "spec.traffic.gateway is set, but this cluster does not serve HTTPRoute \
         (gateway.networking.k8s.io/v1): install the Gateway API CRDs, or remove spec.traffic",
    );
    let traffic = match &plan.gateway_weights {
        Some(weights) => gateway_problem.is_none().then(|| weights.clone()),
        None => model.spec.canary.as_ref().map(|_| {
            let ready = |d: Option<&Deployment>| d.map(plan::available).unwrap_or(0);
            traffic::share_by_pods(ready(deployment), ready(canary_deployment))
        }),
    };
    Observed {
        deployment,
        pods: stable_pods,
        source_problem: seen.resolved.as_ref().err(),
        served: plan.served.as_ref(),
        rolled_back: plan.served.as_ref().and(plan.rollback.stable_message.as_deref()),
        canary,
        traffic,
        rollback: (plan.rollback != RollbackStatus::default()).then(|| plan.rollback.clone()),
        gateway_problem,
        registry: seen.resolved.as_ref().ok().and_then(|(_, v)| v.registry.as_ref()),
        pinned,
    }
}

fn registry_poll(ctx: &Context, model: &MLModel, registry: Option<&desired::RegistrySource>) -> Duration {
    let unavailable = registry.is_some_and(|r| r.unavailable.is_some());
    match ctx.registry_failures.lock() {
        Ok(mut failures) => next_registry_poll(model, unavailable, &mut failures, std::time::Instant::now()),
        Err(_) => Duration::from_secs(model.spec.model.poll_seconds().max(1) as u64),
    }
}

/// When to ask the tracking server again: every `pollSeconds` (default 60) for an alias, sooner
/// (with backoff, at most every `pollSeconds`) while it does not answer; never for a pinned
/// version. `failures` counts the consecutive unanswered polls per model.
pub fn next_registry_poll(
    model: &MLModel,
    unavailable: bool,
    failures: &mut Failures,
    now: std::time::Instant,
) -> Duration {
    let is_alias = matches!(ModelUri::parse(&model.spec.model.uri), Ok(ModelUri::Registry(RegistryRef::Alias { .. })));
    let poll = Duration::from_secs(model.spec.model.poll_seconds().max(1) as u64);
    if unavailable {
        return backoff(failures.record(model, now)).min(poll);
    }
    failures.clear(model);
    if is_alias { poll } else { Duration::MAX }
}

/// `model` with an MLflow alias replaced by the version it resolved to: what is recorded as the
/// last good model, so a rollback returns to that version even after the alias moved on.
fn pinned_spec(model: &ModelSpec, uri: &ModelUri, source: &SourceVersion) -> Option<ModelSpec> {
    source.registry.as_ref()?;
    Some(ModelSpec { uri: uri.to_string(), version: desired::served_version(model, source), ..model.clone() })
}

fn track_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref().and_then(|l| l.get(labels::TRACK)).map(String::as_str)
}

/// Retries with backoff on errors; the error is logged, counted and recorded as an Event.
pub fn error_policy(model: Arc<MLModel>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(model = %model.name_any(), namespace = model.namespace().unwrap_or_default(), %error, "reconcile failed");
    ctx.metrics.error(error.metric_label());
    let (recorder, reference, note) = (ctx.recorder.clone(), model.object_ref(&()), error.to_string());
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = recorder.publish(&ev, &reference).await;
    });
    Action::requeue(backoff(record_failure(&ctx, &model)))
}

/// The outcome of a status write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// Written, or nothing to write.
    Done,
    /// The MLModel changed since the copy this status was computed from (409): nothing was
    /// written; reconcile again from the newer copy.
    Stale,
}

/// Writes `new` if it differs from the stored status, and announces condition changes.
async fn update_status(ctx: &Context, model: &MLModel, ns: &str, new: &MLModelStatus) -> Result<StatusWrite, Error> {
    if model.status.as_ref() == Some(new) {
        return Ok(StatusWrite::Done);
    }
    let written = write_status(ctx, model, ns, new).await?;
    if written == StatusWrite::Done {
        announce_conditions(ctx, model, model.status.as_ref(), new).await;
    }
    Ok(written)
}

/// Applies the status, with the resourceVersion of the MLModel it was computed from as a
/// precondition: the status carries state (`rollback`, `lastGoodModel`) that a write from a stale
/// cache would erase.
pub async fn write_status(
    ctx: &Context,
    model: &MLModel,
    ns: &str,
    status: &MLModelStatus,
) -> Result<StatusWrite, Error> {
    let api: Api<MLModel> = Api::namespaced(ctx.client.clone(), ns);
    let mut patch = serde_json::json!({
        "apiVersion": MLModel::api_version(&()),
        "kind": MLModel::kind(&()),
        "status": status,
    });
    if let Some(rv) = model.resource_version() {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    ctx.metrics.status_written();
    match api.patch_status(&model.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await {
        Ok(_) => Ok(StatusWrite::Done),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            info!(model = %model.name_any(), namespace = %ns, "status computed from a stale MLModel; reconciling again");
            Ok(StatusWrite::Stale)
        }
        Err(e) => Err(e).during("patch MLModel status"),
    }
}

async fn publish(ctx: &Context, model: &MLModel, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &model.object_ref(&())).await {
        warn!(model = %model.name_any(), error = %e, "cannot record event");
    }
}

/// Events for a created Deployment or a new rollout (the pod template hash changed).
async fn announce_rollout(ctx: &Context, model: &MLModel, announcement: Announcement) {
    let version = model.spec.model.version.clone().unwrap_or_else(|| "unversioned".into());
    let (reason, note) = match announcement {
        Announcement::Created => {
            info!(model = %model.name_any(), %version, "created server Deployment");
            ("Created", format!("created the server Deployment and Service for model {version}"))
        }
        Announcement::RolloutStarted => {
            info!(model = %model.name_any(), %version, "rolling out a new pod template");
            ("RolloutStarted", format!("rolling out model {version}"))
        }
    };
    publish(ctx, model, EventType::Normal, reason, note).await;
}

/// Events when Ready or Degraded change.
async fn announce_conditions(ctx: &Context, model: &MLModel, old: Option<&MLModelStatus>, new: &MLModelStatus) {
    let changed = |t: &str| {
        let (o, n) = (old.and_then(|s| s.condition(t)), new.condition(t));
        (n.map(|c| (&c.status, &c.reason)) != o.map(|c| (&c.status, &c.reason))).then_some(n).flatten()
    };
    if let Some(c) = changed(DEGRADED).filter(|c| c.status == "True") {
        warn!(model = %model.name_any(), reason = %c.reason, message = %c.message, "model degraded");
        publish(ctx, model, EventType::Warning, &c.reason, c.message.clone()).await;
    }
    if let Some(c) = changed(READY).filter(|c| c.status == "True") {
        info!(model = %model.name_any(), "model ready");
        publish(ctx, model, EventType::Normal, "Ready", c.message.clone()).await;
    }
}
