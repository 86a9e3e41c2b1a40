//! ConfigMap contents read once per resourceVersion. The ConfigMap watch keeps only each
//! ConfigMap's resourceVersion (no data, no other metadata); a reconcile that needs a digest of a
//! model's ConfigMap reads it from the API server only when the watch has seen a version other
//! than the one last read. An idle operator sends no request for its models' ConfigMaps, and an
//! edit is seen at once (the watch event both moves the version and triggers the models).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::source::configmap_key_hash;

type Key = (String, String);

#[derive(Default)]
struct State {
    /// The resourceVersion of every ConfigMap the watch has listed or seen change.
    latest: HashMap<Key, String>,
    /// During a relist: what it has listed so far (replaces `latest` when it is done).
    relisting: Option<HashMap<Key, String>>,
    /// Digest of each key of the ConfigMaps reconciles read, with the resourceVersion read.
    read: HashMap<Key, (String, BTreeMap<String, String>)>,
}

/// Shared by the ConfigMap watch (writer) and reconciles (readers).
#[derive(Clone, Default)]
pub struct ConfigMapVersions(Arc<Mutex<State>>);

fn key_of<K: Resource>(o: &K) -> Option<Key> {
    Some((o.meta().namespace.clone()?, o.meta().name.clone()?))
}

impl ConfigMapVersions {
    /// Follows one event of the metadata-only ConfigMap watch.
    pub fn apply_event(&self, event: &watcher::Event<PartialObjectMeta<ConfigMap>>) {
        let Ok(mut st) = self.0.lock() else { return };
        let version = |o: &PartialObjectMeta<ConfigMap>| Some((key_of(o)?, o.resource_version()?));
        match event {
            watcher::Event::Apply(o) => {
                if let Some((k, v)) = version(o) {
                    st.latest.insert(k, v);
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(k) = key_of(o) {
                    st.latest.remove(&k);
                    st.read.remove(&k);
                }
            }
            watcher::Event::Init => st.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                if let (Some(buffer), Some((k, v))) = (st.relisting.as_mut(), version(o)) {
                    buffer.insert(k, v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = st.relisting.take() {
                    // ConfigMaps deleted while the watch was down are not listed: forget them.
                    st.read.retain(|k, _| listed.contains_key(k));
                    st.latest = listed;
                }
            }
        }
    }

    /// The digest of `key` in ConfigMap `ns/name` (`Some(None)`: the ConfigMap has no such key)
    /// if it was read at the version the watch saw last; `None` when it must be read.
    pub fn digest(&self, ns: &str, name: &str, key: &str) -> Option<Option<String>> {
        let st = self.0.lock().ok()?;
        let k = (ns.to_string(), name.to_string());
        let (read_at, digests) = st.read.get(&k)?;
        (st.latest.get(&k) == Some(read_at)).then(|| digests.get(key).cloned())
    }

    /// Records what a read of `cm` returned.
    pub fn record(&self, cm: &ConfigMap) {
        let (Some(k), Some(version)) = (key_of(cm), cm.resource_version()) else { return };
        let keys = cm.data.iter().flat_map(|d| d.keys()).chain(cm.binary_data.iter().flat_map(|d| d.keys()));
        let digests = keys.filter_map(|key| Some((key.clone(), configmap_key_hash(cm, key)?))).collect();
        if let Ok(mut st) = self.0.lock() {
            st.read.insert(k, (version, digests));
        }
    }

    /// How many ConfigMaps the watch knows (for tests).
    pub fn known(&self) -> usize {
        self.0.lock().map(|st| st.latest.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kube::api::ObjectMeta;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta::<ConfigMap> {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ml".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cm(name: &str, rv: &str, text: &str) -> ConfigMap {
        ConfigMap {
            metadata: meta(name, rv).metadata,
            data: Some([("model.json".to_string(), text.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_digest_is_reused_only_at_the_version_the_watch_saw_last() {
        let v = ConfigMapVersions::default();
        assert_eq!(v.digest("ml", "iris", "model.json"), None, "never read");
        v.record(&cm("iris", "5", "{}"));
        assert_eq!(v.digest("ml", "iris", "model.json"), None, "the watch has not seen it: read again");
        v.apply_event(&watcher::Event::Apply(meta("iris", "5")));
        let digest = configmap_key_hash(&cm("iris", "5", "{}"), "model.json");
        assert_eq!(v.digest("ml", "iris", "model.json"), Some(digest.clone()));
        assert_eq!(v.digest("ml", "iris", "other.json"), Some(None), "the key is missing at this version");

        // An edit: the watch moves on, so the old digest is not used; reading the new one is.
        v.apply_event(&watcher::Event::Apply(meta("iris", "6")));
        assert_eq!(v.digest("ml", "iris", "model.json"), None);
        v.record(&cm("iris", "6", r#"{"v": 2}"#));
        assert_ne!(v.digest("ml", "iris", "model.json"), Some(digest));

        // A read that raced ahead of the watch is not trusted until the watch agrees.
        v.record(&cm("iris", "7", "{}"));
        assert_eq!(v.digest("ml", "iris", "model.json"), None);

        v.apply_event(&watcher::Event::Delete(meta("iris", "7")));
        assert_eq!(v.digest("ml", "iris", "model.json"), None, "deleted: read (and find it missing)");
    }

    #[test]
    fn a_relist_forgets_configmaps_deleted_while_the_watch_was_down() {
        let v = ConfigMapVersions::default();
        for name in ["iris", "wine"] {
            v.apply_event(&watcher::Event::Apply(meta(name, "5")));
            v.record(&cm(name, "5", "{}"));
        }
        v.apply_event(&watcher::Event::Init);
        v.apply_event(&watcher::Event::InitApply(meta("wine", "5")));
        assert!(v.digest("ml", "iris", "model.json").is_some(), "until the relist is done, the old view holds");
        v.apply_event(&watcher::Event::InitDone);
        assert_eq!(v.digest("ml", "iris", "model.json"), None, "iris was not listed: gone");
        assert!(v.digest("ml", "wine", "model.json").is_some());
        assert_eq!(v.known(), 1);
    }
}
