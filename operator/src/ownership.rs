//! Whether an existing object is this MLModel's to change or delete: only when it carries the
//! MLModel's controller ownerReference (same uid). Anything else (someone's own Service, another
//! model's child) is left untouched and reported as a name conflict.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use modelship_crds::MLModel;

use crate::error::Error;

/// Whether `meta` carries `owner`'s controller ownerReference (an MLModel's, an MLBatchJob's).
pub fn is_controlled_by<K: kube::Resource>(meta: &ObjectMeta, owner: &K) -> bool {
    let Some(uid) = owner.uid() else { return false };
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// Who controls the object, for messages: its controller ownerReference, or "no owner".
pub fn controller_of(meta: &ObjectMeta) -> String {
    match meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        Some(o) => format!("{} {:?} (uid {})", o.kind, o.name, o.uid),
        None => "no owner".into(),
    }
}

/// `Ok` when no object named `name` exists yet or `model` controls it; else a name conflict.
pub fn check(existing: Option<&ObjectMeta>, model: &MLModel, kind: &str, name: &str) -> Result<(), Error> {
    match existing {
        Some(meta) if !is_controlled_by(meta, model) => {
            Err(Error::NameConflict { kind: kind.into(), name: name.into(), controller: controller_of(meta) })
        }
        _ => Ok(()),
    }
}
