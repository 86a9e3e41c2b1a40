//! The MLModel controller: one reconcile that reads top to bottom.
//!
//! resolve the model source → build desired children → apply them (server-side, one field
//! manager, forced) → compute status → write status only if it changed → requeue.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::condition::{DEGRADED, READY};
use modelship_crds::{
    CanarySpec, FIELD_MANAGER, GatewayRef, MLModel, MLModelStatus, ModelSpec, ModelUri, RegistryRef, RollbackStatus,
    TrafficStatus, labels,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::caches::Caches;
use crate::desired::{self, ServerPods, Settings, SourceVersion, Track};
use crate::error::{Error, KubeContext, is_refusal};
use crate::failures::Failures;
use crate::health::{self, Rollout};
use crate::metrics::Metrics;
use crate::observe::{self, Reads};
use crate::registry::{Registry, RegistrySettings};
use crate::rollback::{self, StableChoice};
use crate::status::{self, CanaryObserved, Observed};
use crate::{intent, ownership};
use crate::{source, traffic, validate};

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
/// Field manager used only to hand `spec.replicas` over to an HPA (see `hand_over_replicas`).
const HANDOVER_MANAGER: &str = "modelship-operator-handover";

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
    let name = model.name_any();
    // Before anything is applied: a forbidden image leaves the running pods as they are.
    let image = desired::server_image(model, &ctx.settings);
    if !ctx.settings.image_allowed(&image) {
        return Err(Error::ImageNotAllowed { image, allowed: ctx.settings.allowed_image_prefixes.join(", ") });
    }
    validate::spec(model)?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = model.status.clone().unwrap_or_default();
    let mut rollback = previous.rollback.clone().unwrap_or_default();

    // What the spec asks for, and what runs now.
    let resolve = |spec, prev| source::resolve(&ctx.client, &ctx.registry, &ns, spec, prev);
    let resolved = resolve(&model.spec.model, previous.model.as_ref()).await?;
    let canary_resolved = match &model.spec.canary {
        Some(c) => Some(resolve(&c.model, None).await?),
        None => None,
    };
    let before = observe::child(&ctx.reads, |c| &c.deployments, &deployments, &ns, &name).await?;
    let canary_name = Track::Canary.name(model);
    // Without spec.canary, only a canary the cache knows (ours) matters.
    let before_canary = if model.spec.canary.is_some() || !observe::has_caches(&ctx.reads) {
        observe::child(&ctx.reads, |c| &c.deployments, &deployments, &ns, &canary_name).await?
    } else {
        observe::cached(&ctx.reads, |c| &c.deployments, &ns, &canary_name)
    };
    // Checked here too (apply checks again) because the replicas hand-over writes before the apply.
    ownership::check(before.as_ref().map(|d| &d.metadata), model, "Deployment", &name)?;
    ownership::check(before_canary.as_ref().map(|d| &d.metadata), model, "Deployment", &canary_name)?;
    let pods = observe::pods(&ctx.reads, &Api::namespaced(ctx.client.clone(), &ns), model, &ns).await?;

    // The canary: scaled to zero once it has failed, until spec.canary names another version.
    let gateway = model.spec.traffic.as_ref().and_then(|t| t.gateway.as_ref());
    let canary = match (&model.spec.canary, &canary_resolved) {
        (Some(spec), Some(Ok((uri, version)))) => {
            let hash = desired::rollout_hash(model, &spec.model, &ctx.settings, version);
            if rollback.failed_canary.as_deref().is_some_and(|h| h != hash) {
                (rollback.failed_canary, rollback.canary_message) = (None, None);
            }
            let track_pods = health::pods_of(&pods, labels::TRACK_CANARY, &hash);
            let health = health::health(before_canary.as_ref(), &hash, &track_pods);
            if let Some(msg) = rollback::canary_failed_now(&health, &hash, rollback.failed_canary.as_deref()) {
                warn!(model = %name, namespace = %ns, %msg, "canary failed; scaling it to zero");
                (rollback.failed_canary, rollback.canary_message) = (Some(hash.clone()), Some(msg));
            }
            let failed = rollback.failed_canary.as_deref() == Some(hash.as_str());
            Some(CanaryPlan { spec, uri, version, health, failed })
        }
        _ => None,
    };
    let canary_available = before_canary.as_ref().map(available).unwrap_or(0);

    // The stable track: spec.model, or the last good model after spec.model failed.
    let mut served: Option<(ModelSpec, ModelUri, SourceVersion)> = None;
    if let Ok((_, version)) = &resolved {
        let hash = desired::rollout_hash(model, &model.spec.model, &ctx.settings, version);
        if rollback.failed_stable.as_deref().is_some_and(|h| h != hash) {
            (rollback.failed_stable, rollback.stable_message) = (None, None);
        }
        let track_pods = health::pods_of(&pods, labels::TRACK_STABLE, &hash);
        let health = health::health(before.as_ref(), &hash, &track_pods);
        let choice = rollback::stable_choice(
            &model.spec.model,
            &hash,
            &health,
            previous.last_good_model.as_ref(),
            rollback.failed_stable.as_deref(),
            version.registry.as_ref().and_then(|r| r.status.resolved_version.as_deref()),
        );
        if let StableChoice::LastGood { model: good, newly } = choice {
            match resolve(&good, None).await? {
                Ok((good_uri, good_version)) => {
                    if let Some(msg) = newly {
                        warn!(model = %name, namespace = %ns, %msg, "rolling back");
                        (rollback.failed_stable, rollback.stable_message) = (Some(hash), Some(msg));
                    }
                    served = Some((good, good_uri, good_version));
                }
                Err(problem) => {
                    warn!(model = %name, problem = %problem.message(), "cannot roll back: the last good model's source is gone")
                }
            }
        }
    }

    // Pod counts: the canary takes its share from the stable pods only once it is ready, so
    // the number of ready pods never drops below spec.replicas.
    let total = model.spec.replicas;
    let live_canary = canary.as_ref().filter(|c| !c.failed);
    // `handing_over`: the canary is up but the stable track has not yet given up its share.
    let (stable_replicas, canary_replicas, handing_over) = match live_canary {
        None => (total, 0, false),
        Some(c) if gateway.is_some() => {
            (total, traffic::gateway_canary_replicas(total, c.spec.traffic_percent, c.spec.replicas), false)
        }
        Some(c) => {
            let split = traffic::replica_split(total, c.spec.traffic_percent, c.spec.replicas);
            let ready = canary_available >= split.canary;
            (if ready { split.stable } else { total }, split.canary, !ready)
        }
    };
    let autoscaled = model.spec.autoscaling.is_some();

    let deployment = match &resolved {
        Ok((uri, version)) => {
            let (m, u, v) = served.as_ref().map(|(m, u, v)| (m, u, v)).unwrap_or((&model.spec.model, uri, version));
            let pods_spec = ServerPods {
                track: Track::Stable,
                model: m,
                uri: u,
                source: v,
                replicas: (!autoscaled).then_some(stable_replicas),
            };
            let desired_deploy = desired::deployment(model, &pods_spec, &ctx.settings);
            apply_child(ctx, model, &desired::service(model), |c| &c.services, "apply Service").await?;
            if autoscaled {
                hand_over_replicas(&deployments, &name, before.as_ref()).await?;
            }
            let live: Deployment = apply(ctx, model, &desired_deploy, before.as_ref(), "apply Deployment").await?;
            sync_hpa(ctx, model, &ns).await?;
            announce_rollout(ctx, model, before.as_ref(), &desired_deploy).await;
            Some(live)
        }
        // Keep whatever is serving: a broken source never replaces a working version.
        Err(_) => before,
    };

    let live_canary_deploy = match &canary {
        Some(c) => {
            let pods_spec = ServerPods {
                track: Track::Canary,
                model: &c.spec.model,
                uri: c.uri,
                source: c.version,
                replicas: Some(if c.failed { 0 } else { canary_replicas }),
            };
            let desired_canary = desired::deployment(model, &pods_spec, &ctx.settings);
            Some(apply(ctx, model, &desired_canary, before_canary.as_ref(), "apply canary Deployment").await?)
        }
        // The experiment ended: remove the canary once the stable pods carry the whole load.
        None if model.spec.canary.is_none() => {
            if let Some(old) =
                before_canary.as_ref().filter(|_| health::rollout(deployment.as_ref()) == Rollout::Complete)
            {
                delete_if_controlled(&deployments, model, &old.metadata, "delete canary Deployment").await?;
                (rollback.failed_canary, rollback.canary_message) = (None, None);
                None
            } else {
                before_canary
            }
        }
        // The canary's source is missing: leave the running canary as it is.
        None => before_canary,
    };

    // The split in effect, and the Gateway route when there is one.
    let stable_ready = deployment.as_ref().map(available).unwrap_or(0);
    let canary_ready = live_canary_deploy.as_ref().map(available).unwrap_or(0);
    let mut gateway_problem = None;
    let traffic = match gateway {
        Some(gw) => {
            let percent = model.spec.canary.as_ref().map(|c| c.traffic_percent).unwrap_or(0);
            let serving = live_canary.is_some() && canary_ready > 0;
            let weights = traffic::gateway_weights(percent, serving);
            gateway_problem = sync_gateway(ctx, model, &ns, gw, &weights, canary.is_some()).await?;
            gateway_problem.is_none().then_some(weights)
        }
        None => {
            // By inventory, not by the previous status: Gateway mode may never have reached status
            // (e.g. the Gateway API was missing) and still have created the track Services.
            let pruned = prune_services(ctx, model, &ns, std::slice::from_ref(&name)).await?;
            if pruned > 0 || previous.traffic.as_ref().is_some_and(|t| t.mode == "Gateway") {
                delete_owned(&http_route_api(ctx, &ns), model, &name, "delete HTTPRoute").await?;
            }
            model.spec.canary.as_ref().map(|_| traffic::share_by_pods(stable_ready, canary_ready))
        }
    };

    let stable_pods: Vec<Pod> = pods.iter().filter(|p| track_of(p) == Some(labels::TRACK_STABLE)).cloned().collect();
    let canary_observed = match (&model.spec.canary, &canary_resolved) {
        (Some(spec), Some(res)) => Some(CanaryObserved {
            spec,
            deployment: live_canary_deploy.as_ref(),
            health: match canary.as_ref() {
                Some(c) if !handing_over => c.health.clone(),
                _ => health::Health::Progressing,
            },
            source_problem: res.as_ref().err(),
            rolled_back: canary.as_ref().filter(|c| c.failed).and(rollback.canary_message.as_deref()),
        }),
        _ => None,
    };
    let rollback_status = (rollback != RollbackStatus::default()).then(|| rollback.clone());
    let registry = resolved.as_ref().ok().and_then(|(_, v)| v.registry.as_ref());
    let pinned = resolved.as_ref().ok().and_then(|(uri, v)| pinned_spec(&model.spec.model, uri, v));
    let observed = Observed {
        deployment: deployment.as_ref(),
        pods: &stable_pods,
        source_problem: resolved.as_ref().err(),
        served: served.as_ref().map(|(m, _, _)| m),
        rolled_back: served.as_ref().and(rollback.stable_message.as_deref()),
        canary: canary_observed,
        traffic,
        rollback: rollback_status,
        gateway_problem: gateway_problem.as_deref(),
        registry,
        pinned: pinned.as_ref(),
    };
    let now = Time(jiff::Timestamp::now());
    let mut new_status = status::compute(model, &observed, &now);
    status::keep_transition_times(model.status.as_ref(), &mut new_status);
    if update_status(ctx, model, &ns, &new_status).await? == StatusWrite::Stale {
        return Ok(Action::requeue(REQUEUE_STALE));
    }

    let requeue = if !status::is_ready(model, &new_status) {
        REQUEUE_NOT_READY
    } else if autoscaled {
        REQUEUE_AUTOSCALED
    } else {
        ctx.resync
    };
    Ok(Action::requeue(requeue.min(registry_poll(ctx, model, registry))))
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

/// The canary this reconcile runs.
struct CanaryPlan<'a> {
    spec: &'a CanarySpec,
    uri: &'a ModelUri,
    version: &'a SourceVersion,
    health: health::Health,
    /// This canary version failed before: it stays scaled to zero.
    failed: bool,
}

fn available(d: &Deployment) -> i32 {
    d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
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

/// Server-side apply of one of the model's children, forced (we revert other writers' edits),
/// only if no object of that name exists that the model does not control, and only if `live`
/// (what the cluster has, from the cache or a GET) differs from it (see [`intent`]).
async fn apply<K>(ctx: &Context, model: &MLModel, obj: &K, live: Option<&K>, action: &'static str) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let ns = model.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let (kind, name) = (K::kind(&()), obj.name_any());
    ownership::check(live.map(|l| l.meta()), model, &kind, &name)?;
    let sent = intent::stamped(obj);
    if let Some(live) = live.filter(|l| intent::is_current(&sent, *l)) {
        ctx.metrics.apply_skipped(action);
        return Ok(live.clone());
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.applied(action);
    api.patch(&name, &pp, &Patch::Apply(&sent)).await.map_err(|e| refused(e, &kind, &name, action))
}

/// [`apply`] of a child whose live copy is read here (from `store`, else the API server).
async fn apply_child<K>(
    ctx: &Context,
    model: &MLModel,
    obj: &K,
    store: fn(&Caches) -> &kube::runtime::reflector::Store<K>,
    action: &'static str,
) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let ns = model.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let live = observe::child(&ctx.reads, store, &api, &ns, &obj.name_any()).await?;
    apply(ctx, model, obj, live.as_ref(), action).await
}

/// A write the API server refuses for its content becomes [`Error::Rejected`] with its message.
fn refused(e: kube::Error, kind: &str, name: &str, action: &'static str) -> Error {
    match e {
        kube::Error::Api(s) if is_refusal(&s) => {
            Error::Rejected { kind: kind.into(), name: name.into(), message: s.message }
        }
        source => Error::Kube { action, source },
    }
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

/// Before we stop sending `spec.replicas` (the HPA takes over), pin the live value under a
/// separate manager so the API server does not reset it to 1 when our ownership goes away.
async fn hand_over_replicas(api: &Api<Deployment>, name: &str, live: Option<&Deployment>) -> Result<(), Error> {
    let Some(live) = live.filter(|d| we_own_replicas(d)) else {
        return Ok(());
    };
    let replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::apply(HANDOVER_MANAGER), &Patch::Apply(patch)).await.during("hand over replicas")?;
    Ok(())
}

/// Applies the HPA when autoscaling is set; deletes ours when it is not.
async fn sync_hpa(ctx: &Context, model: &MLModel, ns: &str) -> Result<(), Error> {
    if let Some(hpa) = desired::hpa(model) {
        apply_child(ctx, model, &hpa, |c| &c.hpas, "apply HorizontalPodAutoscaler").await?;
        return Ok(());
    }
    let api = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), ns);
    let name = model.name_any();
    let live = match observe::has_caches(&ctx.reads) {
        true => observe::cached(&ctx.reads, |c| &c.hpas, ns, &name).map(|h| h.metadata),
        false => api.get_metadata_opt(&name).await.during("get HorizontalPodAutoscaler")?.map(|h| h.metadata),
    };
    if let Some(live) = live {
        delete_if_controlled(&api, model, &live, "delete HorizontalPodAutoscaler").await?;
    }
    Ok(())
}

/// Deletes the named object if it exists and this MLModel controls it.
async fn delete_owned<K>(api: &Api<K>, model: &MLModel, name: &str, action: &'static str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if let Some(live) = api.get_metadata_opt(name).await.during(action)? {
        delete_if_controlled(api, model, &live.metadata, action).await?;
    }
    Ok(())
}

/// Deletes the object `live` describes if this MLModel controls it; returns whether it did. The
/// uid precondition makes sure the object deleted is the one checked.
async fn delete_if_controlled<K>(
    api: &Api<K>,
    model: &MLModel,
    live: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    action: &'static str,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(name) = live.name.as_deref().filter(|_| ownership::is_controlled_by(live, model)) else {
        return Ok(false);
    };
    let preconditions = Preconditions { uid: live.uid.clone(), resource_version: None };
    let dp = DeleteParams { preconditions: Some(preconditions), ..Default::default() };
    match api.delete(name, &dp).await {
        // Already gone, or replaced by another object of that name: nothing of ours to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(false),
        other => other.during(action)?,
    };
    info!(model = %model.name_any(), namespace = model.namespace().unwrap_or_default(), object = name, action, "deleted");
    Ok(true)
}

/// Deletes the Services this MLModel controls that `keep` does not name (cleanup by inventory:
/// what carries our label and controller ownerReference). Returns how many it deleted.
async fn prune_services(ctx: &Context, model: &MLModel, ns: &str, keep: &[String]) -> Result<usize, Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let mut deleted = 0;
    for svc in observe::labelled(&ctx.reads, |c| &c.services, &api, model, ns).await? {
        if svc.name.as_ref().is_some_and(|n| !keep.contains(n))
            && delete_if_controlled(&api, model, &svc, "delete Service").await?
        {
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn http_route_api(ctx: &Context, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(ctx.client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Gateway mode: a Service per track and the HTTPRoute with the weights. Returns a problem for
/// status (not an error to retry fast) when the cluster does not serve the HTTPRoute API.
async fn sync_gateway(
    ctx: &Context,
    model: &MLModel,
    ns: &str,
    gateway: &GatewayRef,
    weights: &TrafficStatus,
    with_canary: bool,
) -> Result<Option<String>, Error> {
    let mut keep = vec![model.name_any(), traffic::track_service_name(model, Track::Stable)];
    apply_child(ctx, model, &traffic::track_service(model, Track::Stable), |c| &c.services, "apply stable Service")
        .await?;
    if with_canary {
        let canary = traffic::track_service(model, Track::Canary);
        apply_child(ctx, model, &canary, |c| &c.services, "apply canary Service").await?;
        keep.push(traffic::track_service_name(model, Track::Canary));
    }
    prune_services(ctx, model, ns, &keep).await?;
    let route = intent::stamped(&traffic::http_route(model, gateway, weights, with_canary));
    let (routes, name) = (http_route_api(ctx, ns), model.name_any());
    // Not cached: the Gateway API may not be installed, and few models use it.
    let live = routes.get_opt(&name).await.during("get HTTPRoute")?;
    ownership::check(live.as_ref().map(|r| &r.metadata), model, "HTTPRoute", &name)?;
    if live.as_ref().is_some_and(|l| intent::is_current(&route, l)) {
        ctx.metrics.apply_skipped("apply HTTPRoute");
        return Ok(None);
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.applied("apply HTTPRoute");
    match routes.patch(&name, &pp, &Patch::Apply(route)).await {
        Ok(_) => Ok(None),
        // An apply creates a missing object, so a 404 means the resource type itself is missing.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Some(
            "spec.traffic.gateway is set, but this cluster does not serve HTTPRoute \
             (gateway.networking.k8s.io/v1): install the Gateway API CRDs, or remove spec.traffic"
                .into(),
        )),
        Err(e) => Err(refused(e, "HTTPRoute", &name, "apply HTTPRoute")),
    }
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
async fn announce_rollout(ctx: &Context, model: &MLModel, before: Option<&Deployment>, desired: &Deployment) {
    let version = model.spec.model.version.clone().unwrap_or_else(|| "unversioned".into());
    match before {
        None => {
            info!(model = %model.name_any(), %version, "created server Deployment");
            publish(
                ctx,
                model,
                EventType::Normal,
                "Created",
                format!("created the server Deployment and Service for model {version}"),
            )
            .await;
        }
        Some(b) if health::template_hash(b) != health::template_hash(desired) => {
            info!(model = %model.name_any(), %version, "rolling out a new pod template");
            publish(ctx, model, EventType::Normal, "RolloutStarted", format!("rolling out model {version}")).await;
        }
        Some(_) => {}
    }
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
