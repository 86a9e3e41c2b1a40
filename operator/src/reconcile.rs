//! The MLModel controller: one reconcile that reads top to bottom.
//!
//! resolve the model source → build desired children → apply them (server-side, one field
//! manager, forced) → compute status → write status only if it changed → requeue.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::condition::{DEGRADED, READY};
use modelship_crds::{FIELD_MANAGER, MLModel, MLModelStatus, ModelUri, labels};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::desired::{self, Settings};
use crate::error::{Error, KubeContext};
use crate::metrics::Metrics;
use crate::source;
use crate::status::{self, Observed, Rollout};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per MLModel, for exponential backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<ObjectRef<MLModel>, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, recorder: Recorder) -> Self {
        Self { client, settings, metrics, recorder, failures: Default::default() }
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
/// Periodic resync of a Ready model.
const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Field manager used only to hand `spec.replicas` over to an HPA (see `hand_over_replicas`).
const HANDOVER_MANAGER: &str = "modelship-operator-handover";

pub async fn reconcile(model: Arc<MLModel>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let action = reconcile_inner(&model, &ctx).await?;
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&ObjectRef::from_obj(model.as_ref()));
    }
    Ok(action)
}

/// The reconcile proper; `reconcile` wraps it with timing and backoff bookkeeping.
async fn reconcile_inner(model: &Arc<MLModel>, ctx: &Context) -> Result<Action, Error> {
    let ns = model.namespace().ok_or(Error::MissingNamespace)?;
    let name = model.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);

    let resolved = source::resolve(&ctx.client, &ns, &model.spec.model.uri).await?;
    let before = deployments.get_opt(&name).await.during("get Deployment")?;

    let deployment = match &resolved {
        Ok((uri, version)) => {
            let desired_deploy = desired::deployment(model, uri, &ctx.settings, version);
            apply(ctx, &ns, &desired::service(model), "apply Service").await?;
            if model.spec.autoscaling.is_some() {
                hand_over_replicas(&deployments, &name, before.as_ref()).await?;
            }
            let live: Deployment = apply(ctx, &ns, &desired_deploy, "apply Deployment").await?;
            sync_hpa(ctx, model, &ns).await?;
            announce_rollout(ctx, model, before.as_ref(), &desired_deploy).await;
            Some(live)
        }
        // Keep whatever is serving: a broken source never replaces a working version.
        Err(_) => before,
    };

    let rollout = status::rollout(deployment.as_ref());
    let pods = if rollout == Rollout::Complete { Vec::new() } else { list_pods(ctx, model, &ns).await? };
    let observed = Observed { deployment: deployment.as_ref(), pods: &pods, source_problem: resolved.as_ref().err() };
    let now = Time(jiff::Timestamp::now());
    let mut new_status = status::compute(model, &observed, &now);
    status::keep_transition_times(model.status.as_ref(), &mut new_status);
    if model.status.as_ref() != Some(&new_status) {
        write_status(ctx, model, &ns, &new_status).await?;
        announce_conditions(ctx, model, model.status.as_ref(), &new_status).await;
    }

    Ok(Action::requeue(if !status::is_ready(model, &new_status) {
        REQUEUE_NOT_READY
    } else if model.spec.autoscaling.is_some() {
        REQUEUE_AUTOSCALED
    } else {
        REQUEUE_READY
    }))
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
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from_obj(model.as_ref())).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    Action::requeue(backoff(n))
}

/// Server-side apply of one of our objects, forced (we revert other writers' edits).
async fn apply<K>(ctx: &Context, ns: &str, obj: &K, action: &'static str) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.applied(action);
    api.patch(&obj.name_any(), &pp, &Patch::Apply(obj)).await.during(action)
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
        apply(ctx, ns, &hpa, "apply HorizontalPodAutoscaler").await?;
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let name = model.name_any();
    let Some(live) = api.get_opt(&name).await.during("get HorizontalPodAutoscaler")? else {
        return Ok(());
    };
    let ours =
        live.owner_references().iter().any(|o| Some(&o.uid) == model.uid().as_ref() && o.controller == Some(true));
    if ours {
        api.delete(&name, &Default::default()).await.during("delete HorizontalPodAutoscaler")?;
        info!(model = %name, namespace = ns, "deleted HorizontalPodAutoscaler: spec.autoscaling was removed");
    }
    Ok(())
}

async fn list_pods(ctx: &Context, model: &MLModel, ns: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&desired::pod_selector_string(model));
    Ok(api.list(&lp).await.during("list Pods")?.items)
}

async fn write_status(ctx: &Context, model: &MLModel, ns: &str, status: &MLModelStatus) -> Result<(), Error> {
    let api: Api<MLModel> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": MLModel::api_version(&()),
        "kind": MLModel::kind(&()),
        "status": status,
    });
    ctx.metrics.status_written();
    api.patch_status(&model.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await
        .during("patch MLModel status")?;
    Ok(())
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

fn template_hash(d: &Deployment) -> Option<&str> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(labels::ROLLOUT_HASH).map(String::as_str)
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
        Some(b) if template_hash(b) != template_hash(desired) => {
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

/// MLModels in the ConfigMap's namespace whose `spec.model.uri` names it.
pub fn models_using_configmap(store: &Store<MLModel>, cm: &ConfigMap) -> Vec<ObjectRef<MLModel>> {
    let (ns, name) = (cm.namespace(), cm.name_any());
    store
        .state()
        .iter()
        .filter(|m| m.namespace() == ns)
        .filter(|m| matches!(ModelUri::parse(&m.spec.model.uri), Ok(ModelUri::ConfigMap { name: n, .. }) if n == name))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}
