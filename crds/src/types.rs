use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::model_uri::{URI_CEL_MESSAGE, URI_CEL_RULE};
use crate::names::{NAME_CEL_MESSAGE, NAME_CEL_RULE};

/// A trained model served as an online inference service.
///
/// The operator turns each MLModel into a Deployment of the Modelship inference server, a Service
/// in front of it and, when `autoscaling` is set, a HorizontalPodAutoscaler.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelship.dev",
    version = "v1alpha1",
    kind = "MLModel",
    plural = "mlmodels",
    shortname = "mlm",
    category = "modelship",
    doc = "A trained model served as an online inference service by the Modelship operator. Its name is a \
           DNS-1035 label of at most 56 characters that does not end in -canary or -stable, so the names of its \
           children (NAME, NAME-canary, NAME-stable) never collide with another MLModel's.",
    namespaced,
    validation = kube::core::Rule::new(NAME_CEL_RULE).message(NAME_CEL_MESSAGE).optional_old_self(true),
    status = "MLModelStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.model.format","priority":1}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.modelVersion"}"#,
    printcolumn = r#"{"name":"Replicas","type":"string","jsonPath":".status.replicaSummary","description":"ready/desired"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MLModelSpec {
    /// The model artifact to serve.
    pub model: ModelSpec,

    /// Number of server pods. Ignored while `autoscaling` is set (the autoscaler owns the count).
    /// `kubectl scale mlmodel NAME --replicas=N` writes this field.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Scale the server pods on CPU utilisation with a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Settings of the inference server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,

    /// The Service in front of the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// A second model version that takes a share of the live traffic. Remove it to end the
    /// experiment; promote it by moving `canary.model` into `model` (one Git commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,

    /// How traffic is split between the stable and the canary model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,

    /// Rollout safety settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// A canary: a second model served beside the stable one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// The canary model artifact, in the same shape as `spec.model`.
    pub model: ModelSpec,

    /// Share of requests, in percent, the canary should serve. Without a Gateway the operator
    /// sizes the two Deployments so their pod counts match it as closely as `replicas` allows
    /// (`status.traffic` shows the split achieved); with `traffic.gateway` the split is exact.
    #[schemars(range(min = 0, max = 100))]
    pub traffic_percent: i32,

    /// Canary pods. Default: without a Gateway, the share of `spec.replicas` that matches
    /// `trafficPercent` (taken from the stable pods); with a Gateway, enough for its share.
    /// When set, the stable Deployment keeps all of `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
}

/// Traffic routing between the stable and canary models.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSpec {
    /// Route through this Gateway (Gateway API): the operator creates an HTTPRoute with weighted
    /// backends to a stable and a canary Service, for an exact split. Without it, one Service
    /// spreads requests over all ready pods of both tracks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

/// A parent Gateway of the HTTPRoute.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway (default: the MLModel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// A listener of the Gateway to attach to (default: all that allow this route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Rollout safety.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Seconds a new stable or canary version may take to become ready before it is rolled
    /// back automatically (default 600). Pods that crash-loop are rolled back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 3600))]
    pub progress_deadline_seconds: Option<i32>,
}

/// Default of `spec.rollout.progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

impl MLModelSpec {
    /// `spec.rollout.progressDeadlineSeconds` or its default.
    pub fn progress_deadline_seconds(&self) -> i32 {
        self.rollout.as_ref().and_then(|r| r.progress_deadline_seconds).unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
    }
}

fn default_replicas() -> i32 {
    1
}

/// The model artifact: where it is, what format it has, and how to check it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the model artifact is. One of:
    /// `configmap://NAME/KEY` (a key of a ConfigMap in this namespace, mounted read-only),
    /// `pvc://CLAIM/PATH` (a file on a PersistentVolumeClaim in this namespace, mounted read-only),
    /// `http://...` or `https://...` (downloaded by the server at start-up; set `sha256`),
    /// `file:///PATH` (a model baked into the server image),
    /// `models:/NAME/VERSION` or `models:/NAME@ALIAS` (a registered model in MLflow; an alias is
    /// polled and a move rolls out like a spec change), `runs:/RUN_ID/PATH` (a model logged in an
    /// MLflow run). MLflow models need a tracking server: `registry.trackingURI` or the operator's default.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(URI_CEL_RULE).message(URI_CEL_MESSAGE))]
    pub uri: String,

    /// The artifact format (see [`ModelFormat`]); unset means "from the file's signature".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,

    /// Expected SHA-256 of the artifact, as 64 lowercase hex digits. The server refuses to start
    /// with an artifact whose digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,

    /// A free-form version label, shown in `status.modelVersion` and the VERSION column. For an
    /// MLflow model the registry version is shown unless this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub version: Option<String>,

    /// The MLflow tracking server of a `models:/` or `runs:/` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
}

/// An MLflow tracking server (run with `--serve-artifacts`, so models download through it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Base URL of the tracking server, e.g. `http://mlflow.mlflow.svc:5000`. Default: the
    /// operator's `--mlflow-tracking-uri`.
    #[serde(rename = "trackingURI", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/\\\\s]+(/[^\\\\s]*)?$')").message("must be an http:// or https:// URL"))]
    pub tracking_uri: Option<String>,

    /// Seconds between checks of where a `models:/NAME@ALIAS` alias points (default 60). A pinned
    /// version is never polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_seconds: Option<i32>,

    /// A Secret in this namespace with the server pod's MLflow credentials: keys `username` and
    /// `password` (basic auth) or `token` (bearer). Only the server pods mount it; the operator
    /// resolves aliases with its own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// Default of `spec.model.registry.pollSeconds`.
pub const DEFAULT_POLL_SECONDS: i32 = 60;

impl ModelSpec {
    /// `registry.pollSeconds` or its default.
    pub fn poll_seconds(&self) -> i32 {
        self.registry.as_ref().and_then(|r| r.poll_seconds).unwrap_or(DEFAULT_POLL_SECONDS)
    }
}

/// The artifact format: `linfa` (a `modelship-server train` artifact), `sklearn` (a
/// scikit-learn pickle or joblib file, e.g. `joblib.dump(model, "model.pkl")`) or `onnx`.
/// The server checks the file's own signature and refuses a file of another format. When
/// unset, the format is taken from the file's signature.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A Modelship artifact holding a model trained with linfa (`modelship-server train`).
    Linfa,
    /// A scikit-learn model saved with `pickle`, `joblib` or cloudpickle.
    Sklearn,
    /// An ONNX model.
    Onnx,
}

impl ModelFormat {
    /// The name in manifests and in the server's `--model-format` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linfa => "linfa",
            Self::Sklearn => "sklearn",
            Self::Onnx => "onnx",
        }
    }
}

/// CPU-based autoscaling of the server pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas"))]
pub struct AutoscalingSpec {
    /// Lowest number of pods the autoscaler may scale to.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// Highest number of pods the autoscaler may scale to.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Average CPU utilisation, in percent of the requested CPU, that the autoscaler aims for.
    #[serde(rename = "targetCPUUtilizationPercentage", default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    80
}

/// Settings of the inference server container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Server image. Defaults to the image the operator was started with (`--server-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of the server container.
    /// Defaults: requests cpu 100m and memory 64Mi, limit memory 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Port the server listens on inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,

    /// Per-request limits of the server. Each unset field keeps the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ServerLimits>,
}

/// Per-request limits the inference server enforces (passed as its command-line flags).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerLimits {
    /// Largest request body in bytes (1 KiB to 1 GiB); a larger one is refused with 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_body_bytes: Option<i64>,

    /// Most rows one prediction request may carry (1 to 10,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_rows: Option<i64>,

    /// Prediction requests one pod serves at once (1 to 100,000); more are answered 503 with
    /// `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_concurrent_requests: Option<i32>,

    /// Seconds one request (reading the body and predicting) may take (1 to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub request_timeout_seconds: Option<i32>,
}

/// The Service in front of the server pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Port the Service exposes. Defaults to 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Kubernetes Service types.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Observed state of an MLModel, written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MLModelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`. Ready is True only when the current generation is
    /// fully rolled out and available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Pods of the server Deployment.
    #[serde(default)]
    pub replicas: i32,

    /// Pods that are ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Pods running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,

    /// Ready and desired pods as `ready/desired`, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,

    /// In-cluster URL of the inference Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The served model's version label (`spec.model.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,

    /// Label selector of the server pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The version the stable Deployment serves (after a rollback: the last good one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,

    /// Ready pods of the stable Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ready_replicas: Option<i32>,

    /// The canary's version, while `spec.canary` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,

    /// Ready pods of the canary Deployment, while `spec.canary` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_replicas: Option<i32>,

    /// The traffic split in effect now, while `spec.canary` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStatus>,

    /// The last model that was fully rolled out and Ready: what a failed new version is rolled
    /// back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_model: Option<ModelSpec>,

    /// Model versions that failed and were rolled back; kept until the spec names another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,

    /// What an MLflow `spec.model.uri` resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ResolvedModelStatus>,
}

/// The registry model version behind `spec.model.uri`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModelStatus {
    /// The URI this was resolved from (`spec.model.uri` at the time).
    pub uri: String,
    /// The registered model version the pods serve (for `models:/NAME@ALIAS`, where the alias pointed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<String>,
    /// The artifact location MLflow gives for the model (its download URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The flavor the model is served as, from its `MLmodel` file (e.g. `sklearn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
}

/// The split of requests between the stable and canary models.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    /// `Replicas` (by ready pod counts behind one Service) or `Gateway` (HTTPRoute weights).
    pub mode: String,
    /// Percent of requests the stable model gets.
    pub stable_percent: i32,
    /// Percent of requests the canary model gets.
    pub canary_percent: i32,
}

/// What was rolled back, so it is not retried until the spec changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// Rollout hash of the stable pod template that failed and was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stable: Option<String>,
    /// Why the stable version was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_message: Option<String>,
    /// Rollout hash of the canary pod template that failed and was scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_canary: Option<String>,
    /// Why the canary was scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_message: Option<String>,
}

impl MLModelStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Condition types of an MLModel.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    /// Present while `spec.canary` is set: True when the canary serves its share of traffic.
    pub const CANARY_READY: &str = "CanaryReady";
    /// Present for MLflow models: True while the tracking server answers (reason `Resolved`),
    /// False with reason `RegistryUnavailable` while the running version keeps serving.
    pub const REGISTRY: &str = "RegistryAvailable";
}

/// Condition reasons the operator writes (Kubernetes' own pod reasons, such as
/// `CrashLoopBackOff`, are passed through as they are). Tests and the ArgoCD health check's
/// fixtures name reasons through these.
pub mod reason {
    /// The Deployment is rolling out the current spec.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// The current spec is fully rolled out.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// The rollout passed `spec.rollout.progressDeadlineSeconds`.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// `spec.model` failed; the last good model serves.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The canary failed and is scaled to zero.
    pub const CANARY_ROLLED_BACK: &str = "CanaryRolledBack";
    /// The canary is rolling out.
    pub const CANARY_ROLLOUT_IN_PROGRESS: &str = "CanaryRolloutInProgress";
    /// The server Deployment is being created.
    pub const CREATING: &str = "Creating";
    /// The spec cannot be applied until the problem named in Degraded is fixed.
    pub const BLOCKED: &str = "Blocked";
    /// `spec.replicas` is 0.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// Every requested replica serves.
    pub const AVAILABLE: &str = "Available";
    /// No problem (Degraded False).
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The tracking server answered (RegistryAvailable True).
    pub const RESOLVED: &str = "Resolved";
    /// The tracking server does not answer; the running version keeps serving.
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    /// `spec.traffic.gateway` is set but the cluster does not serve HTTPRoute.
    pub const GATEWAY_API_UNAVAILABLE: &str = "GatewayAPIUnavailable";
    /// The server could not load the model.
    pub const MODEL_LOAD_FAILED: &str = "ModelLoadFailed";
    /// A child's name is taken by an object the MLModel does not control.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The API server refused a child built from the spec.
    pub const INVALID_CHILD: &str = "InvalidChild";
    /// The spec has a value the API server's schema cannot catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The server image is outside `--allowed-image-prefixes`.
    pub const IMAGE_NOT_ALLOWED: &str = "ImageNotAllowed";
    /// The ConfigMap of a `configmap://` URI does not exist.
    pub const CONFIGMAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// The ConfigMap has no such key.
    pub const CONFIGMAP_KEY_NOT_FOUND: &str = "ConfigMapKeyNotFound";
    /// The claim of a `pvc://` URI does not exist.
    pub const PVC_NOT_FOUND: &str = "PersistentVolumeClaimNotFound";
    /// `spec.model.uri` cannot be parsed.
    pub const INVALID_MODEL_REFERENCE: &str = "InvalidModelReference";
    /// MLflow has no such model, version, alias or run.
    pub const REGISTRY_MODEL_NOT_FOUND: &str = "RegistryModelNotFound";
    /// The MLflow model has no flavor the server reads.
    pub const REGISTRY_MODEL_UNSUPPORTED: &str = "RegistryModelUnsupported";
    /// The tracking server refused the credentials (401/403).
    pub const REGISTRY_CREDENTIALS_REFUSED: &str = "RegistryCredentialsRefused";
    /// A `models:/` or `runs:/` URI with no tracking server configured.
    pub const REGISTRY_NOT_CONFIGURED: &str = "RegistryNotConfigured";

    /// Every reason above.
    pub const ALL: &[&str] = &[
        ROLLOUT_IN_PROGRESS,
        ROLLOUT_COMPLETE,
        PROGRESS_DEADLINE_EXCEEDED,
        ROLLED_BACK,
        CANARY_ROLLED_BACK,
        CANARY_ROLLOUT_IN_PROGRESS,
        CREATING,
        BLOCKED,
        SCALED_TO_ZERO,
        AVAILABLE,
        AS_EXPECTED,
        RESOLVED,
        REGISTRY_UNAVAILABLE,
        GATEWAY_API_UNAVAILABLE,
        MODEL_LOAD_FAILED,
        NAME_CONFLICT,
        INVALID_CHILD,
        INVALID_SPEC,
        IMAGE_NOT_ALLOWED,
        CONFIGMAP_NOT_FOUND,
        CONFIGMAP_KEY_NOT_FOUND,
        PVC_NOT_FOUND,
        INVALID_MODEL_REFERENCE,
        REGISTRY_MODEL_NOT_FOUND,
        REGISTRY_MODEL_UNSUPPORTED,
        REGISTRY_CREDENTIALS_REFUSED,
        REGISTRY_NOT_CONFIGURED,
    ];
}
