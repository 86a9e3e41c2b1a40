//! The `MLBatchJob` API: a model scoring a dataset on the cluster, once or on a schedule, cut
//! into shards that an Indexed Job's pods score side by side.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::types::ModelSpec;

/// Longest MLBatchJob name: its Jobs are named NAME-RUN (a CronJob's with 11 characters of
/// schedule time, a one-off run's with 9 of its spec hash), and a Job's name is a pod label value
/// (at most 63 characters). 52 is also the CronJob controller's own limit.
pub const MAX_NAME_LENGTH: usize = 52;
/// CEL on `metadata.name`, on create only (see `names::NAME_CEL_RULE`).
pub const NAME_CEL_RULE: &str = "oldSelf.hasValue() || (size(self.metadata.name) <= 52 \
    && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))";
const NAME_CEL_MESSAGE: &str = "metadata.name must be a DNS-1035 label of at most 52 characters (lowercase \
    letters, digits and '-', starting with a letter, ending with a letter or digit): its Jobs are named NAME-RUN";

/// CEL: exactly one of `model` and `modelRef`.
const ONE_MODEL_RULE: &str = "has(self.spec.model) != has(self.spec.modelRef)";
const ONE_MODEL_MESSAGE: &str = "set exactly one of spec.model and spec.modelRef";
/// CEL: a file on a PVC, by a relative path that stays inside the claim.
const INPUT_URI_RULE: &str = r"self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^\\s]+$') && !self.contains('/../') && !self.endsWith('/..')";
const INPUT_URI_MESSAGE: &str = "must be pvc://CLAIM/PATH: a file, a directory (ending in /) or a pattern (*, ?, [...]) on a PersistentVolumeClaim of this namespace";
const OUTPUT_URI_RULE: &str = r"self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\\s]*)?$') && !self.contains('/../') && !self.endsWith('/..')";
const OUTPUT_URI_MESSAGE: &str = "must be pvc://CLAIM/DIR (a directory on a PersistentVolumeClaim of this namespace)";
/// CEL: five cron fields, or a @-macro the CronJob controller knows.
const SCHEDULE_RULE: &str =
    r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\\S+\\s+){4}\\S+)$')";
const SCHEDULE_MESSAGE: &str =
    "must be a cron schedule of five fields (minute hour day-of-month month day-of-week) or @daily, @hourly, ...";

/// A model scoring a dataset: an Indexed Job of `shards` pods (a CronJob with `schedule`), each
/// scoring its share of the input into its own part of the output, with a `_SUCCESS` manifest
/// once every shard is done.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelship.dev",
    version = "v1alpha1",
    kind = "MLBatchJob",
    plural = "mlbatchjobs",
    shortname = "mlb",
    category = "modelship",
    doc = "A model scoring a dataset on the cluster, once or on a schedule, in shards, by the Modelship operator.",
    namespaced,
    validation = kube::core::Rule::new(NAME_CEL_RULE).message(NAME_CEL_MESSAGE).optional_old_self(true),
    validation = kube::core::Rule::new(ONE_MODEL_RULE).message(ONE_MODEL_MESSAGE),
    status = "MLBatchJobStatus",
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".status.model.version"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRun.startTime"}"#,
    printcolumn = r#"{"name":"Rows","type":"integer","jsonPath":".status.lastRun.rows"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.lastRun.result"}"#,
    printcolumn = r#"{"name":"Shards","type":"string","jsonPath":".status.lastRun.shards","priority":1}"#,
    printcolumn = r#"{"name":"Next Run","type":"string","jsonPath":".status.nextRunTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MLBatchJobSpec {
    /// The model, in the same shape as an MLModel's `spec.model`. Set this or `modelRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,

    /// "The model that MLModel NAME serves right now": resolved when each run starts (its stable
    /// model, never a canary) and recorded in `status.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<ModelRef>,

    /// What to score.
    pub input: BatchInput,

    /// Where the scored rows go.
    pub output: BatchOutput,

    /// How many parts the input is cut into (an Indexed Job's completions): whole files when the
    /// input is several files, else byte ranges of the one file, aligned to record starts.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: i32,

    /// Shards scored at once (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: Option<i32>,

    /// Retries of a failed shard, without rerunning the others (`backoffLimitPerIndex`).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries_per_shard: i32,

    /// Run on this cron schedule (a CronJob) instead of once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(SCHEDULE_RULE).message(SCHEDULE_MESSAGE))]
    pub schedule: Option<String>,

    /// The IANA time zone the schedule is read in (`Europe/Berlin`; the CronJob's `timeZone`).
    /// Default: the kube-controller-manager's, UTC on most clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Stop starting scheduled runs (the CronJob's `suspend`); a running one finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// What a scheduled run does while the previous one still runs (default Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,

    /// Finished runs of a schedule kept, successful and failed (defaults 3 and 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: Option<i32>,

    /// CPU and memory of each shard's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Seconds a run may take before it is stopped and Failed (`activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub deadline_seconds: Option<i64>,

    /// Server image (default: the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Rows scored per chunk (memory is about one chunk per thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub chunk_rows: Option<i32>,
}

fn default_shards() -> i32 {
    1
}

fn default_retries() -> i32 {
    2
}

/// An MLModel of this namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// The dataset.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchInput {
    /// `pvc://CLAIM/PATH` on a PersistentVolumeClaim of this namespace, mounted read-only: a file
    /// (cut into byte ranges, one per shard), a directory ending in `/` (its files, hidden and
    /// `_`-prefixed ones left out) or a pattern such as `in/day-*.csv` (several files are shared
    /// out whole among the shards).
    #[schemars(length(min = 7, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(INPUT_URI_RULE).message(INPUT_URI_MESSAGE))]
    pub uri: String,

    /// The format: csv or jsonl (default: from each file's extension, `.jsonl`/`.ndjson` being
    /// JSON lines; a single file without one is csv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
}

impl BatchInput {
    /// Whether the URI names several files: a directory (ending in `/`) or a pattern.
    pub fn is_listing(&self) -> bool {
        self.uri.ends_with('/') || self.uri.contains(['*', '?', '['])
    }

    /// The format every file is read as: the one given; for a single file, the one its
    /// extension names, else CSV; for a listing, none (each file's extension says).
    pub fn format(&self) -> Option<DataFormat> {
        match (self.format, self.is_listing()) {
            (Some(f), _) => Some(f),
            (None, true) => None,
            (None, false) => Some(DataFormat::from_path(&self.uri).unwrap_or_default()),
        }
    }
}

/// The scored output.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutput {
    /// `pvc://CLAIM/DIR`: each run writes `DIR/RUN/part-*` and `DIR/RUN/_SUCCESS`.
    #[schemars(length(min = 7, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(OUTPUT_URI_RULE).message(OUTPUT_URI_MESSAGE))]
    pub uri: String,

    /// The format of the parts (default: the input's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,

    /// The input columns each part carries through, in order, before `prediction` (for example
    /// an id to join on). Default: every input column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub key_columns: Option<Vec<String>>,

    /// Add a `probability_CLASS` column per class after `prediction` (classifiers that give
    /// probabilities; the run fails with the reason for other models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<bool>,
}

/// A data file format.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated values with a header row (RFC 4180 quoting).
    #[default]
    Csv,
    /// JSON lines: one object per line, keyed by column name.
    Jsonl,
}

impl DataFormat {
    /// The file extension of the parts, and the name `modelship-server batch --format` takes.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    /// The format a path's extension names, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// The CronJob's `concurrencyPolicy`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    /// Skip a run while the previous one still runs.
    #[default]
    Forbid,
    /// Let runs overlap.
    Allow,
    /// Cancel the running one and start the new one.
    Replace,
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MLBatchJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Running`, `Complete` and `Failed` (of the last run), with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The model the last run scored with, resolved when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ResolvedBatchModel>,

    /// The last run (for a one-off job, the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<BatchRun>,

    /// For a scheduled job: its CronJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,

    /// For a scheduled job that is not suspended: when its schedule fires next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
}

/// The model of a run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedBatchModel {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The MLModel it was taken from, for `modelRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// One run: a Job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchRun {
    /// The Job's name.
    pub job: String,
    /// `Running`, `Complete` or `Failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Rows scored by the shards that succeeded.
    #[serde(default)]
    pub rows: i64,
    pub shards_succeeded: i32,
    pub shards_failed: i32,
    /// `SUCCEEDED/TOTAL`, for the printer column.
    #[serde(default)]
    pub shards: String,
    /// Each failed shard with the reason its last attempt gave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_shards: Vec<FailedShard>,
    /// Where the run writes: `pvc://CLAIM/DIR/RUN/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `pvc://CLAIM/DIR/RUN/_SUCCESS` once every shard is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_manifest: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedShard {
    pub index: i32,
    pub reason: String,
}
