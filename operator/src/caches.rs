//! The operator's view of the cluster: one watch per kind, scoped to what is ours, kept by every
//! replica for the life of the process. Reconciles read children from here instead of asking the
//! API server, and a standby that wins the Lease starts with warm caches.
//!
//! Children (Deployments, Services, HPAs, Pods) are selected by our identity label; ConfigMaps,
//! which belong to users, are watched as metadata only, of which only the resourceVersion is kept
//! (see [`ConfigMapVersions`]): they trigger the models that name them. Objects that are not ours
//! cost no more than their name and version.

use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{MLModel, ModelUri, labels};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use crate::metrics::Metrics;
use crate::versions::ConfigMapVersions;

/// The label selector of everything the operator creates: the identity label every child carries
/// (it is part of every selector, so every version of the operator has set it).
pub fn managed_selector() -> String {
    labels::MODEL.to_string()
}

/// Where reconciles of which models should run: filled by the watches, drained by the controller
/// while this replica leads (nothing is queued on a standby: taking over reconciles everything).
#[derive(Clone, Default)]
struct Triggers(Arc<Mutex<Option<mpsc::UnboundedSender<ObjectRef<MLModel>>>>>);

impl Triggers {
    fn send(&self, r: ObjectRef<MLModel>) {
        if let Ok(mut slot) = self.0.lock()
            && let Some(tx) = slot.as_ref()
            && tx.send(r).is_err()
        {
            *slot = None;
        }
    }

    fn open(&self) -> mpsc::UnboundedReceiver<ObjectRef<MLModel>> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(tx);
        }
        rx
    }
}

/// Read-only caches of MLModels and their children, and the triggers derived from their events.
#[derive(Clone)]
pub struct Caches {
    pub models: Store<MLModel>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub pods: Store<Pod>,
    /// The resourceVersion of each ConfigMap, and the digests reconciles read.
    pub configmaps: ConfigMapVersions,
    triggers: Triggers,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The MLModel that controls `obj`, if one does.
fn owner<K: Resource>(obj: &K) -> Option<ObjectRef<MLModel>> {
    let ns = obj.namespace()?;
    obj.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "MLModel" && o.api_version.starts_with(modelship_crds::GROUP))
        .map(|o| ObjectRef::new(&o.name).within(&ns))
}

impl Caches {
    /// Starts the watches; the returned future drives them and must be polled for as long as the
    /// caches are used (it ends only if every watch ends).
    pub fn start(
        client: &Client,
        namespace: Option<&str>,
        metrics: &Arc<Metrics>,
    ) -> (Self, impl Future<Output = ()> + Send + use<>) {
        let triggers = Triggers::default();
        let seen = |resource: &'static str| {
            let metrics = metrics.clone();
            move || metrics.watch_event(resource)
        };
        let ours = watcher::Config::default().labels(&managed_selector());
        let (models, models_writer) = reflector::store::<MLModel>();
        let model_events = {
            let (triggers, seen) = (triggers.clone(), seen("mlmodels"));
            reflector::reflector(models_writer, watcher(api::<MLModel>(client, namespace), watcher::Config::default()))
                .default_backoff()
                // A deleted model has nothing left to reconcile (its children go with it).
                .applied_objects()
                .for_each(move |ev| {
                    seen();
                    if let Ok(m) = ev {
                        triggers.send(ObjectRef::from_obj(&m));
                    }
                    async {}
                })
        };
        // Deployments keep their managedFields: the replicas hand-over to an HPA reads them.
        let watch = |how: Child, resource| Watch {
            config: ours.clone(),
            models: &models,
            triggers: &triggers,
            how,
            seen: seen(resource),
        };
        let (deployments, deployments_events) =
            child(api::<Deployment>(client, namespace), watch(Child::TRIGGERS_KEEP_FIELDS, "deployments"));
        let (services, services_events) = child(api::<Service>(client, namespace), watch(Child::TRIGGERS, "services"));
        // HPA status changes on every metrics sync: cached, but no trigger (autoscaled models resync).
        let (hpas, hpas_events) =
            child(api::<HorizontalPodAutoscaler>(client, namespace), watch(Child::CACHE, "horizontalpodautoscalers"));
        let (pods, pods_events) = child(api::<Pod>(client, namespace), watch(Child::CACHE, "pods"));
        let configmaps = ConfigMapVersions::default();
        let configmap_events = {
            let (models, triggers, seen, versions) =
                (models.clone(), triggers.clone(), seen("configmaps"), configmaps.clone());
            watcher(api::<PartialObjectMeta<ConfigMap>>(client, namespace), watcher::Config::default())
                .default_backoff()
                .for_each(move |ev| {
                    seen();
                    if let Ok(ev) = ev {
                        versions.apply_event(&ev);
                        let touched = match &ev {
                            watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) | watcher::Event::Delete(cm) => {
                                Some(cm)
                            }
                            watcher::Event::Init | watcher::Event::InitDone => None,
                        };
                        if let Some(cm) = touched {
                            for r in models_using_configmap(&models, cm.namespace().as_deref(), &cm.name_any()) {
                                triggers.send(r);
                            }
                        }
                    }
                    async {}
                })
        };
        let driver = async move {
            tokio::join!(model_events, deployments_events, services_events, hpas_events, pods_events, configmap_events);
            warn!("every watch ended");
        };
        (Self { models, deployments, services, hpas, pods, configmaps, triggers }, driver)
    }

    /// Caches holding exactly these objects, with no watch behind them (for tests).
    pub fn holding(deployments: Vec<Deployment>, services: Vec<Service>, pods: Vec<Pod>) -> Self {
        Self {
            models: filled(vec![]),
            deployments: filled(deployments),
            services: filled(services),
            hpas: filled(vec![]),
            pods: filled(pods),
            configmaps: ConfigMapVersions::default(),
            triggers: Triggers::default(),
        }
    }

    /// Waits until every cache holds a complete first listing.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.models.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.hpas.wait_until_ready().await?;
        self.pods.wait_until_ready().await
    }

    /// From now on, the models whose objects change; a previous receiver ends.
    pub fn subscribe(&self) -> impl Stream<Item = ObjectRef<MLModel>> + Send + 'static {
        tokio_stream_from(self.triggers.open())
    }
}

/// How a kind of child is watched.
#[derive(Clone, Copy)]
struct Child {
    /// A change reconciles the model that controls the object.
    triggers: bool,
    /// The cache keeps `metadata.managedFields` (else dropped, to save memory).
    managed_fields: bool,
}

impl Child {
    const TRIGGERS_KEEP_FIELDS: Self = Self { triggers: true, managed_fields: true };
    const TRIGGERS: Self = Self { triggers: true, managed_fields: false };
    const CACHE: Self = Self { triggers: false, managed_fields: false };
}

/// How to watch one kind of child.
struct Watch<'a, F> {
    config: watcher::Config,
    models: &'a Store<MLModel>,
    triggers: &'a Triggers,
    how: Child,
    /// Counts an event.
    seen: F,
}

/// A label-selected watch of one kind of child: its store, and the future that keeps it (and
/// triggers the owning models, as `watch.how` says).
fn child<K, F>(api: Api<K>, watch: Watch<'_, F>) -> (Store<K>, impl Future<Output = ()> + Send + use<K, F>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    F: Fn() + Send + 'static,
{
    let Watch { config, models, triggers, how, seen } = watch;
    let (store, writer) = reflector::store::<K>();
    let (models, triggers) = (models.clone(), triggers.clone());
    let stream = watcher(api, config).default_backoff().modify(move |o: &mut K| {
        if !how.managed_fields {
            o.meta_mut().managed_fields = None;
        }
    });
    let events = reflector::reflector(writer, stream).touched_objects().for_each(move |ev| {
        seen();
        if let Some(r) = ev.ok().filter(|_| how.triggers).and_then(|o| owner(&o))
            && models.get(&r).is_some()
        {
            triggers.send(r);
        }
        async {}
    });
    (store, events)
}

/// A store holding `objects` as after a complete listing.
fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// MLModels in namespace `ns` that name the ConfigMap `name`: in `spec.model`, `spec.canary`, or
/// as the last good model they may roll back to.
pub fn models_using_configmap(store: &Store<MLModel>, ns: Option<&str>, name: &str) -> Vec<ObjectRef<MLModel>> {
    let names = |uri: &str| matches!(ModelUri::parse(uri), Ok(ModelUri::ConfigMap { name: n, .. }) if n == name);
    store
        .state()
        .iter()
        .filter(|m| m.namespace().as_deref() == ns)
        .filter(|m| {
            names(&m.spec.model.uri)
                || m.spec.canary.as_ref().is_some_and(|c| names(&c.model.uri))
                || m.status.as_ref().and_then(|s| s.last_good_model.as_ref()).is_some_and(|g| names(&g.uri))
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}
