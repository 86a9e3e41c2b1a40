//! MLBatchJobs: a model scoring a dataset in shards, once (an Indexed Job) or on a schedule (a
//! CronJob). The same phases as the MLModel reconcile: observe ([`reconcile`]) → resolve the
//! model and plan, pure ([`resolve`], [`desired`], [`run_status`]) → apply → status.

pub mod controller;
pub mod desired;
pub mod reconcile;
pub mod resolve;
pub mod run_status;
pub mod schedule;

/// Label on every Job (and its pods) of an MLBatchJob: the MLBatchJob's name.
pub const BATCH_JOB_LABEL: &str = "modelship.dev/batch-job";
/// Annotation on a run's Job: the hash of the spec it was created from.
pub const SPEC_HASH_ANNOTATION: &str = "modelship.dev/spec-hash";
/// Annotations on a run's Job: the model it scores with, as resolved when it was created.
pub const MODEL_URI_ANNOTATION: &str = "modelship.dev/model-uri";
pub const MODEL_VERSION_ANNOTATION: &str = "modelship.dev/model-version";
pub const MODEL_SHA256_ANNOTATION: &str = "modelship.dev/model-sha256";
pub const MODEL_FROM_ANNOTATION: &str = "modelship.dev/model-from";
/// Annotation on a run's Job: where its output goes (`pvc://CLAIM/DIR/RUN/`, RUN the Job's name).
pub const OUTPUT_ANNOTATION: &str = "modelship.dev/output";
/// The Job controller's label on a Job's pods, and its pods' completion index annotation.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// `pvc://CLAIM/PATH` as (claim, path); `None` for anything else. An empty path is the claim's root.
pub fn parse_pvc(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pvc://")?;
    let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!claim.is_empty()).then_some((claim, path.trim_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::parse_pvc;

    #[test]
    fn pvc_uris_split_into_claim_and_path() {
        assert_eq!(parse_pvc("pvc://data/in/iris.csv"), Some(("data", "in/iris.csv")));
        assert_eq!(parse_pvc("pvc://data/out/"), Some(("data", "out")));
        assert_eq!(parse_pvc("pvc://data"), Some(("data", "")));
        assert_eq!(parse_pvc("http://x/y"), None);
        assert_eq!(parse_pvc("pvc:///x"), None);
    }
}
