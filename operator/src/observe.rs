//! Reading a model's children: from the caches when they hold the object, else from the API
//! server (a cache may lag a create by a moment, and an object without our label, such as a
//! user's own Service of the same name, is never in it).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{MLModel, labels};
use serde::de::DeserializeOwned;

use crate::caches::Caches;
use crate::desired::Track;
use crate::error::{Error, KubeContext};
use crate::plan::Observation;
use crate::registry::Registry;
use crate::{ownership, source, traffic};

/// Reads everything the plan needs: the model sources resolved, then the children.
pub async fn observe(
    client: &Client,
    registry: &Registry,
    reads: &Reads,
    model: &MLModel,
    ns: &str,
) -> Result<Observation, Error> {
    let name = model.name_any();
    let status = model.status.as_ref();
    let sources = source::Sources { client, registry, configmaps: reads.caches().map(|c| &c.configmaps) };
    let resolve = |spec, prev| source::resolve(sources, ns, spec, prev);
    let resolved = resolve(&model.spec.model, status.and_then(|s| s.model.as_ref())).await?;
    let canary = match &model.spec.canary {
        Some(c) => Some(resolve(&c.model, None).await?),
        None => None,
    };
    // The rollback target, while it differs from the spec (during a rollout, after a rollback).
    let last_good = match status.and_then(|s| s.last_good_model.as_ref()).filter(|g| **g != model.spec.model) {
        Some(good) if resolved.is_ok() => Some(resolve(good, None).await?),
        _ => None,
    };

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let stable_deployment = child(reads, |c| &c.deployments, &deployments, ns, &name).await?;
    // Without spec.canary (or autoscaling), only a canary (or HPA) the cache knows, ours, matters.
    let canary_name = Track::Canary.name(model);
    let canary_deployment = match model.spec.canary.is_some() || !has_caches(reads) {
        true => child(reads, |c| &c.deployments, &deployments, ns, &canary_name).await?,
        false => cached(reads, |c| &c.deployments, ns, &canary_name),
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let hpa = match model.spec.autoscaling.is_some() || !has_caches(reads) {
        true => child(reads, |c| &c.hpas, &hpas, ns, &name).await?,
        false => cached(reads, |c| &c.hpas, ns, &name),
    };
    let pods = pods(reads, &Api::namespaced(client.clone(), ns), model, ns).await?;

    // The Services: ours by inventory, and whatever holds the names the plan applies.
    let service_api: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut services = labelled(reads, |c| &c.services, &service_api, model, ns).await?;
    let gateway = model.spec.traffic.as_ref().is_some_and(|t| t.gateway.is_some());
    let mut names = vec![name.clone()];
    if gateway {
        names.push(traffic::track_service_name(model, Track::Stable));
        names.extend(model.spec.canary.as_ref().map(|_| traffic::track_service_name(model, Track::Canary)));
    }
    for n in names {
        if !services.iter().any(|s| s.metadata.name.as_deref() == Some(n.as_str())) {
            services.extend(child(reads, |c| &c.services, &service_api, ns, &n).await?);
        }
    }

    // The HTTPRoute is not cached (the Gateway API may not be installed, and few models use it):
    // read only while Gateway mode is on, or was (its status, or its track Services, say so).
    let track_services = [Track::Stable, Track::Canary].map(|t| traffic::track_service_name(model, t));
    let was_gateway = status.and_then(|s| s.traffic.as_ref()).is_some_and(|t| t.mode == "Gateway")
        || services.iter().any(|s| {
            s.metadata.name.as_ref().is_some_and(|n| track_services.contains(n))
                && ownership::is_controlled_by(&s.metadata, model)
        });
    let route = match gateway || was_gateway {
        true => http_route_api(client, ns).get_opt(&name).await.during("get HTTPRoute")?,
        false => None,
    };

    Ok(Observation { resolved, canary, last_good, stable_deployment, canary_deployment, pods, services, hpa, route })
}

/// The model's HTTPRoutes (Gateway API).
pub fn http_route_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Where reads go: caches kept by watches, or (with no caches, as in tests) the API server.
#[derive(Clone)]
pub enum Reads {
    Cached(Caches),
    Direct,
}

impl Reads {
    fn caches(&self) -> Option<&Caches> {
        match self {
            Self::Cached(c) => Some(c),
            Self::Direct => None,
        }
    }
}

/// The object `name` in `api`'s namespace: the cached copy, or what a GET returns when the cache
/// has none. `store` picks the cache from [`Caches`].
pub async fn child<K>(
    reads: &Reads,
    store: fn(&Caches) -> &Store<K>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if let Some(hit) = cached(reads, store, ns, name) {
        return Ok(Some(hit));
    }
    api.get_opt(name).await.during("get child")
}

/// The cached copy of `name`, only (`None` also when the cache does not have it).
pub fn cached<K>(reads: &Reads, store: fn(&Caches) -> &Store<K>, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let caches = reads.caches()?;
    store(caches).get(&ObjectRef::new(name).within(ns)).map(|o| o.as_ref().clone())
}

/// Whether a cache answers for objects that carry our label: its absence there means the object
/// is not ours (or not there). With direct reads, the caller must ask the API server.
pub fn has_caches(reads: &Reads) -> bool {
    reads.caches().is_some()
}

/// The objects in `ns` labelled as `model`'s children, from `store`, or listed; sorted by name
/// (the API server's order), so that what is built from them is stable.
pub async fn labelled<K>(
    reads: &Reads,
    store: fn(&Caches) -> &Store<K>,
    api: &Api<K>,
    model: &MLModel,
    ns: &str,
) -> Result<Vec<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = model.name_any();
    match reads.caches() {
        Some(c) => {
            let mut found: Vec<K> = store(c)
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns) && is_labelled(o.meta(), &name))
                .map(|o| o.as_ref().clone())
                .collect();
            found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
            Ok(found)
        }
        None => {
            let lp = ListParams::default().labels(&format!("{}={name}", labels::MODEL));
            Ok(api.list(&lp).await.during("list children")?.items)
        }
    }
}

/// The pods of `model` (all tracks and versions).
pub async fn pods(reads: &Reads, api: &Api<Pod>, model: &MLModel, ns: &str) -> Result<Vec<Pod>, Error> {
    labelled(reads, |c| &c.pods, api, model, ns).await
}

fn is_labelled(meta: &ObjectMeta, model: &str) -> bool {
    meta.labels.as_ref().and_then(|l| l.get(labels::MODEL)).is_some_and(|v| v == model)
}
