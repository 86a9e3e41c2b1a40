use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::model_uri::{URI_CEL_MESSAGE, URI_CEL_RULE};

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
    doc = "A trained model served as an online inference service by the Modelship operator.",
    namespaced,
    status = "MLModelStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
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
    /// `file:///PATH` (a model baked into the server image).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(URI_CEL_RULE).message(URI_CEL_MESSAGE))]
    pub uri: String,

    /// The artifact format.
    #[serde(default)]
    pub format: ModelFormat,

    /// Expected SHA-256 of the artifact, as 64 lowercase hex digits. The server refuses to start
    /// with an artifact whose digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,

    /// A free-form version label, shown in `status.modelVersion` and the VERSION column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub version: Option<String>,
}

/// Model artifact formats the server can load.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A Modelship artifact holding a model trained with linfa (`modelship-server train`).
    #[default]
    Linfa,
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
}
