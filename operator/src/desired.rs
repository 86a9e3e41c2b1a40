//! Pure builders: an MLModel (plus what was resolved about its model source) in, the desired
//! children out. No I/O here; every object is built from scratch for server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use modelship_crds::{MLModel, ModelSpec, ModelUri, ServerLimits, labels};
use sha2::{Digest, Sha256};

pub use crate::pod_spec::MODEL_MOUNT;
use crate::pod_spec::{self, Delivery, delivery};

/// Operator-wide settings the builders need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Server image used when `spec.server.image` is not set.
    pub server_image: String,
    /// `--allowed-image-prefixes`: the server image of every model must start with one of these.
    /// Empty: any image.
    pub allowed_image_prefixes: Vec<String>,
}

impl Settings {
    /// Settings with the default server image and no image policy.
    pub fn new(server_image: impl Into<String>) -> Self {
        Self { server_image: server_image.into(), allowed_image_prefixes: vec![] }
    }

    /// Whether the image policy lets pods run `image`.
    pub fn image_allowed(&self, image: &str) -> bool {
        self.allowed_image_prefixes.is_empty() || self.allowed_image_prefixes.iter().any(|p| image.starts_with(p))
    }
}

/// The image the model's server pods run: `spec.server.image`, else the operator's default.
pub fn server_image(model: &MLModel, settings: &Settings) -> String {
    model.spec.server.as_ref().and_then(|s| s.image.clone()).unwrap_or_else(|| settings.server_image.clone())
}

/// What reconcile learned about the model source before building the pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceVersion {
    /// What identifies the content, so a change rolls out: the digest of the referenced ConfigMap
    /// key, or the pinned MLflow reference (`models:/NAME/VERSION`) an alias resolved to.
    pub content_hash: Option<String>,
    /// For an MLflow model: where it was resolved.
    pub registry: Option<RegistrySource>,
}

/// An MLflow model as resolved by the operator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistrySource {
    /// The tracking server the pods download from.
    pub tracking_uri: String,
    /// For `status.model`.
    pub status: modelship_crds::ResolvedModelStatus,
    /// Set while the tracking server does not answer (the previous resolution is kept): the error.
    pub unavailable: Option<String>,
}

/// Container port the server listens on unless `spec.server.port` says otherwise.
pub const DEFAULT_SERVER_PORT: i32 = 8080;
/// Service port unless `spec.service.port` says otherwise.
pub const DEFAULT_SERVICE_PORT: i32 = 80;
/// Seconds a terminating pod keeps serving while reporting not-ready (endpoints catch up).
pub const DRAIN_SECONDS: i64 = 5;

/// Labels every child carries: ours plus the MLModel's own copyable labels, and the stable version.
pub fn common_labels(model: &MLModel) -> BTreeMap<String, String> {
    labels_for_version(model, model.spec.model.version.as_deref())
}

fn labels_for_version(model: &MLModel, version: Option<&str>) -> BTreeMap<String, String> {
    let name = model.name_any();
    let mut out = labels::copyable(model.metadata.labels.as_ref());
    out.insert(labels::MODEL.into(), name.clone());
    out.insert(labels::NAME.into(), name);
    out.insert(labels::COMPONENT.into(), "inference-server".into());
    out.insert(labels::PART_OF.into(), "modelship".into());
    out.insert(labels::MANAGED_BY.into(), modelship_crds::FIELD_MANAGER.into());
    if let Some(v) = version.filter(|v| is_label_value(v)) {
        out.insert(labels::VERSION.into(), v.into());
    }
    out
}

/// Which of a model's server Deployments: the stable one, or the canary of `spec.canary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Stable,
    Canary,
}

impl Track {
    pub fn label(self) -> &'static str {
        match self {
            Self::Stable => labels::TRACK_STABLE,
            Self::Canary => labels::TRACK_CANARY,
        }
    }

    /// Name of this track's Deployment (and, with a Gateway, of its own Service).
    pub fn name(self, model: &MLModel) -> String {
        match self {
            Self::Stable => model.name_any(),
            Self::Canary => format!("{}{}", model.name_any(), modelship_crds::names::CANARY_SUFFIX),
        }
    }
}

/// What one server Deployment runs.
#[derive(Clone, Copy, Debug)]
pub struct ServerPods<'a> {
    pub track: Track,
    /// The model these pods serve: `spec.model`, `spec.canary.model`, or after a rollback the
    /// last good model.
    pub model: &'a ModelSpec,
    pub uri: &'a ModelUri,
    pub source: &'a SourceVersion,
    /// Pod count; `None` leaves it to the HPA.
    pub replicas: Option<i32>,
}

impl<'a> ServerPods<'a> {
    /// The stable Deployment of `spec.model`, sized by `spec.replicas` unless autoscaled.
    pub fn stable(model: &'a MLModel, uri: &'a ModelUri, source: &'a SourceVersion) -> Self {
        Self {
            track: Track::Stable,
            model: &model.spec.model,
            uri,
            source,
            replicas: model.spec.autoscaling.is_none().then_some(model.spec.replicas),
        }
    }
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The immutable Deployment selector of a track: identity only, never a version or hash.
pub fn selector_labels(model: &MLModel, track: Track) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MODEL.to_string(), model.name_any()),
        (labels::TRACK.to_string(), track.label().to_string()),
    ])
}

/// The label selector of all server pods of a model, as a string (for `status.selector`).
pub fn pod_selector_string(model: &MLModel) -> String {
    format!("{}={}", labels::MODEL, model.name_any())
}

fn metadata(model: &MLModel, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: model.namespace(),
        labels: Some(common_labels(model)),
        owner_references: model.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

pub fn server_port(model: &MLModel) -> i32 {
    model.spec.server.as_ref().and_then(|s| s.port).unwrap_or(DEFAULT_SERVER_PORT)
}

pub fn service_port(model: &MLModel) -> i32 {
    model.spec.service.as_ref().and_then(|s| s.port).unwrap_or(DEFAULT_SERVICE_PORT)
}

/// In-cluster URL of the model's Service.
pub fn service_url(model: &MLModel) -> String {
    let ns = model.namespace().unwrap_or_else(|| "default".into());
    match service_port(model) {
        80 => format!("http://{}.{ns}.svc", model.name_any()),
        port => format!("http://{}.{ns}.svc:{port}", model.name_any()),
    }
}

/// The server's MLflow credentials, from the Secret `registry.credentialsSecret` names (each key
/// optional: `username` and `password` for basic auth, or `token`). The operator never reads it.
fn registry_env(served: &ModelSpec) -> Vec<EnvVar> {
    let Some(secret) = served.registry.as_ref().and_then(|r| r.credentials_secret.as_ref()) else {
        return vec![];
    };
    [
        ("MLFLOW_TRACKING_USERNAME", "username"),
        ("MLFLOW_TRACKING_PASSWORD", "password"),
        ("MLFLOW_TRACKING_TOKEN", "token"),
    ]
    .into_iter()
    .map(|(name, key)| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.clone(), key: key.into(), optional: Some(true) }),
            ..Default::default()
        }),
    })
    .collect()
}

/// Hash of everything whose change must roll out new pods of `served`.
pub fn rollout_hash(model: &MLModel, served: &ModelSpec, settings: &Settings, source: &SourceVersion) -> String {
    let mut served_json = serde_json::json!(served);
    // An absent format was hashed as "linfa" before it became optional (keep those pods); a
    // declared one adds `--model-format`, so it must hash differently.
    served_json["format"] = match served.format {
        None => "linfa".into(),
        Some(f) => serde_json::json!({ "declared": f.as_str() }),
    };
    let input = serde_json::json!({
        "model": served_json,
        "server": model.spec.server,
        "image": settings.server_image,
        "content": source.content_hash,
    });
    let digest = Sha256::digest(input.to_string().as_bytes());
    hex::encode(&digest[..8])
}

pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The server container's arguments.
fn server_args(model: &MLModel, served: &ModelSpec, source: &SourceVersion, model_arg: String) -> Vec<String> {
    let mut args = vec![
        "serve".to_string(),
        "--model".into(),
        model_arg,
        "--name".into(),
        model.name_any(),
        "--port".into(),
        server_port(model).to_string(),
        "--drain-seconds".into(),
        DRAIN_SECONDS.to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(format) = served.format {
        args.extend(["--model-format".into(), format.as_str().into()]);
    }
    if let Some(sha) = &served.sha256 {
        args.extend(["--sha256".into(), sha.clone()]);
    }
    if let Some(v) = served_version(served, source) {
        args.extend(["--model-version".into(), v]);
    }
    if let Some(r) = &source.registry {
        args.extend(["--mlflow-tracking-uri".into(), r.tracking_uri.clone()]);
    }
    if let Some(limits) = model.spec.server.as_ref().and_then(|s| s.limits.as_ref()) {
        args.extend(limit_args(limits));
    }
    args
}

/// The server flags of `spec.server.limits`: one per field that is set.
fn limit_args(limits: &ServerLimits) -> Vec<String> {
    [
        ("--max-body-bytes", limits.max_body_bytes),
        ("--max-rows", limits.max_rows),
        ("--max-concurrent-requests", limits.max_concurrent_requests.map(i64::from)),
        ("--request-timeout-seconds", limits.request_timeout_seconds.map(i64::from)),
    ]
    .into_iter()
    .filter_map(|(flag, value)| value.map(|v| [flag.to_string(), v.to_string()]))
    .flatten()
    .collect()
}

/// The version label of what pods serve: `version`, else the MLflow registry version.
pub fn served_version(served: &ModelSpec, source: &SourceVersion) -> Option<String> {
    served.version.clone().or_else(|| source.registry.as_ref()?.status.resolved_version.clone())
}

/// A server Deployment: the stable one or the canary, as `pods` says.
pub fn deployment(model: &MLModel, pods: &ServerPods<'_>, settings: &Settings) -> Deployment {
    let server = model.spec.server.clone().unwrap_or_default();
    let Delivery { model_arg, volume } = delivery(pods.uri);
    let labels = labels_for_version(model, served_version(pods.model, pods.source).as_deref());
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector_labels(model, pods.track));

    let (tmp, tmp_mount) = pod_spec::scratch();
    let (mut volumes, mut mounts) = (vec![tmp], vec![tmp_mount]);
    if let Some(v) = volume {
        mounts.push(Delivery::mount());
        volumes.push(v);
    }

    let container = Container {
        name: "server".into(),
        image: Some(server_image(model, settings)),
        args: Some(server_args(model, pods.model, pods.source, model_arg)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: server_port(model),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some([server.env.clone(), registry_env(pods.model)].concat()).filter(|e| !e.is_empty()),
        resources: Some(server.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(http_probe("/readyz", 2, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(pod_spec::container_security_context()),
        ..Default::default()
    };

    Deployment {
        metadata: ObjectMeta { labels: Some(labels), ..metadata(model, pods.track.name(model)) },
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the count; we must not send the field at all.
            replicas: pods.replicas,
            selector: LabelSelector { match_labels: Some(selector_labels(model, pods.track)), match_expressions: None },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(5),
            progress_deadline_seconds: Some(model.spec.progress_deadline_seconds()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        labels::ROLLOUT_HASH.into(),
                        rollout_hash(model, pods.model, settings, pods.source),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(pod_spec::pod_security_context()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Service in front of every server pod of the model.
pub fn service(model: &MLModel) -> Service {
    let type_ = model.spec.service.as_ref().map(|s| s.type_).unwrap_or_default();
    Service {
        metadata: metadata(model, model.name_any()),
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().into()),
            selector: Some(BTreeMap::from([(labels::MODEL.to_string(), model.name_any())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: service_port(model),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The HorizontalPodAutoscaler, when `spec.autoscaling` is set.
pub fn hpa(model: &MLModel) -> Option<HorizontalPodAutoscaler> {
    let a = model.spec.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: metadata(model, model.name_any()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: model.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}
