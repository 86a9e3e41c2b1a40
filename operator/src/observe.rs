//! Reading a model's children: from the caches when they hold the object, else from the API
//! server (a cache may lag a create by a moment, and an object without our label, such as a
//! user's own Service of the same name, is never in it).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use modelship_crds::{MLModel, labels};
use serde::de::DeserializeOwned;

use crate::caches::Caches;
use crate::error::{Error, KubeContext};

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

/// The metadata of the objects in `ns` labelled as `model`'s children, from `store`, or listed.
pub async fn labelled<K>(
    reads: &Reads,
    store: fn(&Caches) -> &Store<K>,
    api: &Api<K>,
    model: &MLModel,
    ns: &str,
) -> Result<Vec<ObjectMeta>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = model.name_any();
    match reads.caches() {
        Some(c) => Ok(store(c)
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(ns) && is_labelled(o.meta(), &name))
            .map(|o| o.meta().clone())
            .collect()),
        None => {
            let lp = ListParams::default().labels(&format!("{}={name}", labels::MODEL));
            Ok(api.list_metadata(&lp).await.during("list children")?.items.into_iter().map(|o| o.metadata).collect())
        }
    }
}

/// The pods of `model` (all tracks and versions).
pub async fn pods(reads: &Reads, api: &Api<Pod>, model: &MLModel, ns: &str) -> Result<Vec<Pod>, Error> {
    let name = model.name_any();
    match reads.caches() {
        Some(c) => {
            let mut pods: Vec<Pod> = c
                .pods
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns) && is_labelled(&p.metadata, &name))
                .map(|p| p.as_ref().clone())
                .collect();
            // In the API server's order (by name), so that status built from them is stable.
            pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            Ok(pods)
        }
        None => {
            let lp = ListParams::default().labels(&format!("{}={name}", labels::MODEL));
            Ok(api.list(&lp).await.during("list Pods")?.items)
        }
    }
}

fn is_labelled(meta: &ObjectMeta, model: &str) -> bool {
    meta.labels.as_ref().and_then(|l| l.get(labels::MODEL)).is_some_and(|v| v == model)
}
