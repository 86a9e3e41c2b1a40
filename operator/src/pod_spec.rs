//! Pod parts every pod the operator creates shares, server Deployments and batch Jobs alike: the
//! restricted security context (Pod Security Standards "restricted"), the scratch `/tmp`, and how
//! a model source reaches the container.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use modelship_crds::ModelUri;

/// Where ConfigMap and PVC model sources are mounted in the server container.
pub const MODEL_MOUNT: &str = "/var/lib/modelship/model";
/// The unprivileged UID/GID the server runs as (distroless `nonroot`).
pub const NONROOT: i64 = 65532;

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

/// The container's: no privilege escalation, read-only root, non-root, no capabilities.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// The pod's: non-root, volumes group-owned by the server's group, RuntimeDefault seccomp.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        fs_group: Some(NONROOT),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// The writable `/tmp` of a read-only root: its volume and its mount.
pub fn scratch() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
    )
}

/// How the model reaches the container: the `--model` argument and any volume to mount.
pub struct Delivery {
    pub model_arg: String,
    /// A volume named `model`, to mount read-only at [`MODEL_MOUNT`].
    pub volume: Option<Volume>,
}

impl Delivery {
    /// The mount of [`Delivery::volume`].
    pub fn mount() -> VolumeMount {
        VolumeMount {
            name: "model".into(),
            mount_path: MODEL_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        }
    }
}

pub fn delivery(uri: &ModelUri) -> Delivery {
    match uri {
        ModelUri::ConfigMap { name, key } => Delivery {
            model_arg: format!("{MODEL_MOUNT}/{key}"),
            volume: Some(Volume {
                name: "model".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    items: Some(vec![KeyToPath { key: key.clone(), path: key.clone(), mode: None }]),
                    default_mode: Some(0o444),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
        ModelUri::Pvc { claim, path } => {
            Delivery { model_arg: format!("{MODEL_MOUNT}/{path}"), volume: Some(claim_volume("model", claim, true)) }
        }
        ModelUri::Http(url) => Delivery { model_arg: url.clone(), volume: None },
        ModelUri::File(path) => Delivery { model_arg: path.clone(), volume: None },
        // The pinned reference: the server downloads it through the tracking server's artifact API.
        ModelUri::Registry(r) => Delivery { model_arg: r.to_string(), volume: None },
    }
}

/// A volume of the PersistentVolumeClaim `claim`.
pub fn claim_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: Some(read_only),
        }),
        ..Default::default()
    }
}
