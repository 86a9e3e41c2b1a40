//! Resolving `spec.model.uri` against the cluster: does the ConfigMap or PVC exist, and what
//! version of the content is it (so an edited ConfigMap rolls out new pods).

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::{Api, Client};
use modelship_crds::ModelUri;
use sha2::{Digest, Sha256};

use crate::desired::SourceVersion;
use crate::error::{Error, KubeContext};
use crate::status::SourceProblem;

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

pub async fn resolve(client: &Client, namespace: &str, uri: &str) -> Result<Resolved, Error> {
    let uri = match ModelUri::parse(uri) {
        Ok(u) => u,
        Err(e) => return Ok(Err(SourceProblem::InvalidReference(e.to_string()))),
    };
    let version = match &uri {
        ModelUri::ConfigMap { name, key } => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let Some(cm) = api.get_opt(name).await.during("get ConfigMap")? else {
                return Ok(Err(SourceProblem::ConfigMapNotFound { name: name.clone() }));
            };
            let Some(hash) = configmap_key_hash(&cm, key) else {
                return Ok(Err(SourceProblem::ConfigMapKeyNotFound { name: name.clone(), key: key.clone() }));
            };
            SourceVersion { content_hash: Some(hash) }
        }
        ModelUri::Pvc { claim, .. } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            if api.get_opt(claim).await.during("get PersistentVolumeClaim")?.is_none() {
                return Ok(Err(SourceProblem::PvcNotFound { claim: claim.clone() }));
            }
            SourceVersion::default()
        }
        ModelUri::Http(_) | ModelUri::File(_) => SourceVersion::default(),
    };
    Ok(Ok((uri, version)))
}
