//! Resolving `spec.model.uri` against the cluster: does the ConfigMap or PVC exist, and what
//! version of the content is it (so an edited ConfigMap rolls out new pods).

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::{Api, Client};
use modelship_crds::{ModelSpec, ModelUri, RegistryRef, ResolvedModelStatus};
use sha2::{Digest, Sha256};

use crate::desired::{RegistrySource, SourceVersion};
use crate::error::{Error, KubeContext};
use crate::registry::Registry;
use crate::status::SourceProblem;
use crate::versions::ConfigMapVersions;

/// The parsed URI and its content version, or the problem that stops a rollout.
pub type Resolved = Result<(ModelUri, SourceVersion), SourceProblem>;

/// Digest of one ConfigMap key's content (text or binary), if the key exists.
pub fn configmap_key_hash(cm: &ConfigMap, key: &str) -> Option<String> {
    let bytes: Vec<u8> = if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key)) {
        text.as_bytes().to_vec()
    } else {
        cm.binary_data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone())?
    };
    Some(hex::encode(&Sha256::digest(&bytes)[..8]))
}

/// Where a model source is resolved: the clients, and (with caches) the ConfigMap versions.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub client: &'a Client,
    pub registry: &'a Registry,
    /// The ConfigMap digests read before, reused while the watch sees no newer version.
    pub configmaps: Option<&'a ConfigMapVersions>,
}

/// Resolves `spec.uri`. `previous` is what the stored status says this URI resolved to: a pinned
/// MLflow version is not asked again, and while the tracking server does not answer an alias
/// keeps its previous version (the running pods keep serving).
pub async fn resolve(
    sources: Sources<'_>,
    namespace: &str,
    spec: &ModelSpec,
    previous: Option<&ResolvedModelStatus>,
) -> Result<Resolved, Error> {
    let Sources { client, registry, configmaps } = sources;
    let uri = match ModelUri::parse(&spec.uri) {
        Ok(u) => u,
        Err(e) => return Ok(Err(SourceProblem::InvalidReference(e.to_string()))),
    };
    let version = match &uri {
        ModelUri::ConfigMap { name, key } => {
            let digest = match configmaps.and_then(|v| v.digest(namespace, name, key)) {
                Some(digest) => digest,
                None => {
                    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                    let Some(cm) = api.get_opt(name).await.during("get ConfigMap")? else {
                        return Ok(Err(SourceProblem::ConfigMapNotFound { name: name.clone() }));
                    };
                    if let Some(v) = configmaps {
                        v.record(&cm);
                    }
                    configmap_key_hash(&cm, key)
                }
            };
            let Some(hash) = digest else {
                return Ok(Err(SourceProblem::ConfigMapKeyNotFound { name: name.clone(), key: key.clone() }));
            };
            SourceVersion { content_hash: Some(hash), registry: None }
        }
        ModelUri::Pvc { claim, .. } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            if api.get_opt(claim).await.during("get PersistentVolumeClaim")?.is_none() {
                return Ok(Err(SourceProblem::PvcNotFound { claim: claim.clone() }));
            }
            SourceVersion::default()
        }
        ModelUri::Http(_) | ModelUri::File(_) => SourceVersion::default(),
        ModelUri::Registry(r) => {
            return Ok(resolve_registry(registry, spec, r, previous.filter(|p| p.uri == spec.uri)).await);
        }
    };
    Ok(Ok((uri, version)))
}

async fn resolve_registry(
    registry: &Registry,
    spec: &ModelSpec,
    r: &RegistryRef,
    previous: Option<&ResolvedModelStatus>,
) -> Resolved {
    let tracking = registry.settings.tracking_uri(spec).unwrap_or_default();
    let pinned_before = previous.and_then(|p| Some(r.pinned(p.resolved_version.as_deref()?.parse().ok()?)));
    let pinned_before =
        pinned_before.or_else(|| previous.filter(|_| matches!(r, RegistryRef::Run { .. })).map(|_| r.clone()));
    let keep = |pinned: RegistryRef, unavailable: Option<String>| {
        let status = previous.cloned().unwrap_or_default();
        Ok((ModelUri::Registry(pinned.clone()), registry_version(tracking.clone(), pinned, status, unavailable)))
    };
    // A pinned version or run does not change: once resolved, it is not asked again.
    if let Some(pinned) = pinned_before.clone().filter(|_| !matches!(r, RegistryRef::Alias { .. })) {
        return keep(pinned, None);
    }
    match registry.resolve(spec, r).await {
        Ok(res) => {
            let status = ResolvedModelStatus {
                uri: spec.uri.clone(),
                resolved_version: res.version,
                source: Some(res.source),
                flavor: Some(res.flavor),
            };
            Ok((ModelUri::Registry(res.pinned.clone()), registry_version(tracking, res.pinned, status, None)))
        }
        Err(e) => match pinned_before.filter(|_| e.is_transient()) {
            Some(pinned) => keep(pinned, Some(e.to_string())),
            None => Err(SourceProblem::Registry { reason: e.reason(), message: e.to_string() }),
        },
    }
}

fn registry_version(
    tracking_uri: String,
    pinned: RegistryRef,
    status: ResolvedModelStatus,
    unavailable: Option<String>,
) -> SourceVersion {
    // The pinned reference is what identifies the content: an alias move rolls out new pods.
    SourceVersion {
        content_hash: Some(pinned.to_string()),
        registry: Some(RegistrySource { tracking_uri, status, unavailable }),
    }
}
