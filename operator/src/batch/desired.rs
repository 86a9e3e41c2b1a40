//! Pure builders: an MLBatchJob and its resolved model in, the Job of a run (or the CronJob of a
//! schedule) out. Each shard is one index of an Indexed Job running `modelship-server batch`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use modelship_crds::batch_job::ConcurrencyPolicy;
use modelship_crds::{MLBatchJob, labels};
use sha2::{Digest, Sha256};

use super::resolve::ResolvedModel;
use super::*;
use crate::desired::{Settings, default_resources};
use crate::pod_spec::{self, Delivery, claim_volume, delivery};

/// Where the input's claim is mounted (read-only) and the output's (read-write).
pub const INPUT_MOUNT: &str = "/var/lib/modelship/input";
pub const OUTPUT_MOUNT: &str = "/var/lib/modelship/output";
/// The pod's env var holding its run (its Job's name, from the Job controller's pod label).
pub const RUN_ENV: &str = "MODELSHIP_RUN";

/// A spec field the pods cannot be built from (the schema catches most; these are the rest).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

/// The hash of everything that makes a different run: a one-off MLBatchJob runs once per spec.
pub fn spec_hash(job: &MLBatchJob) -> String {
    let digest = Sha256::digest(serde_json::json!(job.spec).to_string().as_bytes());
    hex::encode(&digest[..4])
}

/// The Job of a one-off run: NAME-HASH, HASH from [`spec_hash`].
pub fn run_name(job: &MLBatchJob) -> String {
    format!("{}-{}", job.name_any(), spec_hash(job))
}

/// `pvc://CLAIM/DIR/` of the output, without the run.
fn output_base(job: &MLBatchJob) -> String {
    job.spec.output.uri.trim_end_matches('/').to_string()
}

/// Where run `run` writes: `pvc://CLAIM/DIR/RUN/`.
pub fn run_output(job: &MLBatchJob, run: &str) -> String {
    format!("{}/{run}/", output_base(job))
}

fn selector_labels(job: &MLBatchJob) -> BTreeMap<String, String> {
    BTreeMap::from([(BATCH_JOB_LABEL.to_string(), job.name_any())])
}

fn job_labels(job: &MLBatchJob) -> BTreeMap<String, String> {
    let mut out = labels::copyable(job.metadata.labels.as_ref());
    out.extend(selector_labels(job));
    out.insert(labels::NAME.into(), job.name_any());
    out.insert(labels::COMPONENT.into(), "batch".into());
    out.insert(labels::PART_OF.into(), "modelship".into());
    out.insert(labels::MANAGED_BY.into(), modelship_crds::FIELD_MANAGER.into());
    out
}

/// The annotations that record a run's spec and model.
fn run_annotations(job: &MLBatchJob, model: &ResolvedModel) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (SPEC_HASH_ANNOTATION.to_string(), spec_hash(job)),
        (MODEL_URI_ANNOTATION.to_string(), model.spec.uri.clone()),
    ]);
    let optional = [
        (MODEL_VERSION_ANNOTATION, &model.spec.version),
        (MODEL_SHA256_ANNOTATION, &model.spec.sha256),
        (MODEL_FROM_ANNOTATION, &model.from),
    ];
    out.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_string(), v.clone()?))));
    out
}

/// The volumes and mounts of the data: the input's claim read-only, the output's read-write (one
/// volume mounted twice when both are on the same claim). Returns the input path and output dir.
fn data_volumes(job: &MLBatchJob) -> Result<(Vec<Volume>, Vec<VolumeMount>, String, String), InvalidField> {
    let (in_claim, in_path) = parse_pvc(&job.spec.input.uri)
        .filter(|(_, p)| !p.is_empty())
        .ok_or_else(|| InvalidField { field: "spec.input.uri", message: "must be pvc://CLAIM/PATH".into() })?;
    let (out_claim, out_path) = parse_pvc(&job.spec.output.uri)
        .ok_or_else(|| InvalidField { field: "spec.output.uri", message: "must be pvc://CLAIM/DIR".into() })?;
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let (volumes, mounts) = if in_claim == out_claim {
        (
            vec![claim_volume("data", in_claim, false)],
            vec![mount("data", INPUT_MOUNT, true), mount("data", OUTPUT_MOUNT, false)],
        )
    } else {
        (
            vec![claim_volume("input", in_claim, true), claim_volume("output", out_claim, false)],
            vec![mount("input", INPUT_MOUNT, true), mount("output", OUTPUT_MOUNT, false)],
        )
    };
    let out_dir = match out_path {
        "" => format!("{OUTPUT_MOUNT}/$({RUN_ENV})"),
        dir => format!("{OUTPUT_MOUNT}/{dir}/$({RUN_ENV})"),
    };
    Ok((volumes, mounts, format!("{INPUT_MOUNT}/{in_path}"), out_dir))
}

/// The image the shards run: `spec.image`, else the operator's default server image.
pub fn image(job: &MLBatchJob, settings: &Settings) -> String {
    job.spec.image.clone().unwrap_or_else(|| settings.server_image.clone())
}

/// The pods of a run: `modelship-server batch` over shard `$JOB_COMPLETION_INDEX` of `shards`.
fn pod_template(job: &MLBatchJob, model: &ResolvedModel, settings: &Settings) -> Result<PodTemplateSpec, InvalidField> {
    let Delivery { model_arg, volume } = delivery(&model.uri);
    let (data, data_mounts, input, output_dir) = data_volumes(job)?;
    let (tmp, tmp_mount) = pod_spec::scratch();
    let mut volumes = vec![tmp];
    let mut mounts = vec![tmp_mount];
    if let Some(v) = volume {
        volumes.push(v);
        mounts.push(Delivery::mount());
    }
    volumes.extend(data);
    mounts.extend(data_mounts);

    let mut args = vec!["batch".to_string(), "--model".into(), model_arg];
    if let Some(sha) = &model.spec.sha256 {
        args.extend(["--sha256".into(), sha.clone()]);
    }
    if let Some(v) = &model.spec.version {
        args.extend(["--model-version".into(), v.clone()]);
    }
    args.extend(["--input".into(), input, "--output-dir".into(), output_dir]);
    // Unnamed formats are the server's to tell, file by file; the parts' default to the first file's.
    let in_format = job.spec.input.format();
    if let Some(f) = in_format {
        args.extend(["--format".into(), f.extension().into()]);
    }
    if let Some(f) = job.spec.output.format.or(in_format) {
        args.extend(["--output-format".into(), f.extension().into()]);
    }
    if let Some(keep) = &job.spec.output.key_columns {
        args.extend(["--keep-columns".into(), keep.join(",")]);
    }
    if job.spec.output.probabilities == Some(true) {
        args.push("--probabilities".into());
    }
    args.extend(["--shard-count".into(), job.spec.shards.to_string()]);
    if let Some(rows) = job.spec.chunk_rows {
        args.extend(["--chunk-rows".into(), rows.to_string()]);
    }
    args.extend(["--log-format".into(), "json".into()]);

    let run_env = EnvVar {
        name: RUN_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.labels['{JOB_NAME_LABEL}']"),
            }),
            ..Default::default()
        }),
    };
    let container = Container {
        name: "batch".into(),
        image: Some(image(job, settings)),
        args: Some(args),
        env: Some(vec![run_env]),
        resources: Some(job.spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        // The server writes its shard report (success) or its one-line reason (failure) there.
        termination_message_policy: Some("File".into()),
        security_context: Some(pod_spec::container_security_context()),
        ..Default::default()
    };
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(job_labels(job)), ..Default::default() }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            // A failed shard is retried as a new pod of the same index (backoffLimitPerIndex).
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(pod_spec::pod_security_context()),
            ..Default::default()
        }),
    })
}

fn job_spec(job: &MLBatchJob, model: &ResolvedModel, settings: &Settings) -> Result<JobSpec, InvalidField> {
    let s = &job.spec;
    Ok(JobSpec {
        completion_mode: Some("Indexed".into()),
        completions: Some(s.shards),
        parallelism: Some(s.parallelism.unwrap_or(s.shards).min(s.shards)),
        backoff_limit_per_index: Some(s.retries_per_shard),
        active_deadline_seconds: s.deadline_seconds,
        template: pod_template(job, model, settings)?,
        ..Default::default()
    })
}

fn metadata(job: &MLBatchJob, name: String, annotations: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(job_labels(job)),
        annotations: Some(annotations),
        owner_references: job.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// The Job of a one-off run.
pub fn run_job(job: &MLBatchJob, model: &ResolvedModel, settings: &Settings) -> Result<Job, InvalidField> {
    let name = run_name(job);
    let mut annotations = run_annotations(job, model);
    annotations.insert(OUTPUT_ANNOTATION.into(), run_output(job, &name));
    Ok(Job { metadata: metadata(job, name, annotations), spec: Some(job_spec(job, model, settings)?), status: None })
}

/// The CronJob of a scheduled MLBatchJob (named like it); each of its Jobs is a run.
pub fn cron_job(job: &MLBatchJob, model: &ResolvedModel, settings: &Settings) -> Result<Option<CronJob>, InvalidField> {
    let Some(schedule) = job.spec.schedule.clone() else { return Ok(None) };
    // What the CronJob API would refuse, refused here with the field named.
    schedule
        .parse::<super::schedule::Schedule>()
        .map_err(|e| InvalidField { field: "spec.schedule", message: e.to_string() })?;
    super::schedule::time_zone(job.spec.time_zone.as_deref())
        .map_err(|e| InvalidField { field: "spec.timeZone", message: e.to_string() })?;
    let mut annotations = run_annotations(job, model);
    // Each Job is named by the CronJob controller; its output dir is `DIR/JOB/`.
    annotations.insert(OUTPUT_ANNOTATION.into(), format!("{}/", output_base(job)));
    let policy = match job.spec.concurrency_policy.unwrap_or_default() {
        ConcurrencyPolicy::Forbid => "Forbid",
        ConcurrencyPolicy::Allow => "Allow",
        ConcurrencyPolicy::Replace => "Replace",
    };
    Ok(Some(CronJob {
        metadata: metadata(job, job.name_any(), BTreeMap::new()),
        spec: Some(CronJobSpec {
            schedule,
            time_zone: job.spec.time_zone.clone(),
            suspend: job.spec.suspend,
            concurrency_policy: Some(policy.into()),
            successful_jobs_history_limit: Some(job.spec.successful_runs_history_limit.unwrap_or(3)),
            failed_jobs_history_limit: Some(job.spec.failed_runs_history_limit.unwrap_or(1)),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels(job)),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(job_spec(job, model, settings)?),
            },
            ..Default::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::resolve::resolve;

    /// An MLBatchJob `nightly` of 4 shards over a PVC, with `extra` merged into its spec.
    pub(crate) fn batch(extra: serde_json::Value) -> MLBatchJob {
        let mut spec = serde_json::json!({
            "model": {"uri": "configmap://iris-model/model.json", "version": "v1"},
            "input": {"uri": "pvc://data/in/iris.csv"},
            "output": {"uri": "pvc://results/scored"},
            "shards": 4, "parallelism": 2,
        });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let mut j: MLBatchJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "modelship.dev/v1alpha1", "kind": "MLBatchJob",
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "u-1"}, "spec": spec,
        }))
        .expect("MLBatchJob");
        j.metadata.uid = Some("u-1".into());
        j
    }

    fn built(j: &MLBatchJob) -> Job {
        run_job(j, &resolve(j, None).expect("model"), &Settings::new("server:1")).expect("job")
    }

    #[test]
    fn a_run_is_an_indexed_job_of_the_shards() {
        let j = batch(serde_json::json!({"retriesPerShard": 3, "deadlineSeconds": 600}));
        let job = built(&j);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((spec.completions, spec.parallelism), (Some(4), Some(2)));
        assert_eq!(spec.backoff_limit_per_index, Some(3));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(job.metadata.name.as_deref(), Some(run_name(&j).as_str()));
        assert!(run_name(&j).starts_with("nightly-") && run_name(&j).len() == "nightly-".len() + 8);
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("MLBatchJob", Some(true)));
        let a = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[MODEL_VERSION_ANNOTATION], "v1");
        assert_eq!(a[OUTPUT_ANNOTATION], format!("pvc://results/scored/{}/", run_name(&j)));
    }

    #[test]
    fn each_shard_scores_its_index_into_the_runs_dir_with_the_restricted_context() {
        let job = built(&batch(serde_json::json!({})));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context, Some(pod_spec::pod_security_context()));
        let c = &pod.containers[0];
        assert_eq!(c.security_context, Some(pod_spec::container_security_context()));
        let args = c.args.as_ref().unwrap().join(" ");
        assert_eq!(
            args,
            "batch --model /var/lib/modelship/model/model.json --model-version v1 \
             --input /var/lib/modelship/input/in/iris.csv \
             --output-dir /var/lib/modelship/output/scored/$(MODELSHIP_RUN) --format csv --output-format csv \
             --shard-count 4 --log-format json"
        );
        let env = &c.env.as_ref().unwrap()[0];
        assert_eq!(env.name, RUN_ENV);
        assert_eq!(
            env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
            "metadata.labels['batch.kubernetes.io/job-name']"
        );
        let claims: Vec<_> = pod
            .volumes
            .unwrap()
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref().map(|p| (p.claim_name.clone(), p.read_only)))
            .collect();
        assert_eq!(claims, [("data".into(), Some(true)), ("results".into(), Some(false))]);
    }

    fn args_of(j: &MLBatchJob) -> String {
        built(j).spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap().join(" ")
    }

    #[test]
    fn formats_key_columns_and_probabilities_reach_the_shards_flags() {
        // The format by extension, the output's defaulting to the input's.
        let a = args_of(&batch(serde_json::json!({"input": {"uri": "pvc://data/in/day.ndjson"}})));
        assert!(a.contains("--format jsonl --output-format jsonl"), "{a}");
        // A path without an extension is CSV unless the format is named.
        let a = args_of(&batch(serde_json::json!({"input": {"uri": "pvc://data/in/rows"}})));
        assert!(a.contains("--format csv --output-format csv"), "{a}");
        let j = batch(serde_json::json!({
            "input": {"uri": "pvc://data/in/rows", "format": "jsonl"},
            "output": {"uri": "pvc://results/scored", "format": "csv", "keyColumns": ["id", "day"], "probabilities": true},
        }));
        let a = args_of(&j);
        assert!(a.contains("--format jsonl --output-format csv --keep-columns id,day --probabilities"), "{a}");
        let a = args_of(&batch(serde_json::json!({"output": {"uri": "pvc://results/scored", "probabilities": false}})));
        assert!(!a.contains("--probabilities") && !a.contains("--keep-columns"), "{a}");
        // A directory or a pattern: each file's extension says, unless the format is named.
        for uri in ["pvc://data/in/", "pvc://data/in/day-*.jsonl"] {
            let a = args_of(&batch(serde_json::json!({"input": {"uri": uri}})));
            assert!(!a.contains("--format") && !a.contains("--output-format"), "{a}");
        }
        let j = batch(serde_json::json!({"input": {"uri": "pvc://data/in/", "format": "jsonl"}}));
        assert!(
            args_of(&j).contains("--input /var/lib/modelship/input/in --output-dir /var/lib/modelship/output/scored/$(MODELSHIP_RUN) --format jsonl --output-format jsonl"),
            "{}",
            args_of(&j)
        );
    }

    #[test]
    fn one_claim_for_input_and_output_is_one_volume_mounted_twice() {
        let job = built(&batch(serde_json::json!({"output": {"uri": "pvc://data/out/"}})));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.volumes.as_ref().unwrap().iter().filter(|v| v.persistent_volume_claim.is_some()).count(), 1);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        let data: Vec<_> =
            mounts.iter().filter(|m| m.name == "data").map(|m| (m.mount_path.as_str(), m.read_only)).collect();
        assert_eq!(data, [(INPUT_MOUNT, Some(true)), (OUTPUT_MOUNT, Some(false))]);
    }

    #[test]
    fn a_spec_change_is_a_new_run_and_the_same_spec_the_same_run() {
        let a = batch(serde_json::json!({}));
        assert_eq!(run_name(&a), run_name(&batch(serde_json::json!({}))));
        assert_ne!(run_name(&a), run_name(&batch(serde_json::json!({"shards": 5}))));
    }

    #[test]
    fn a_schedule_is_a_cron_job_with_its_policy_and_history() {
        let j = batch(
            serde_json::json!({"schedule": "0 2 * * *", "concurrencyPolicy": "Replace", "failedRunsHistoryLimit": 5}),
        );
        let cron = cron_job(&j, &resolve(&j, None).unwrap(), &Settings::new("server:1")).unwrap().expect("cron");
        let spec = cron.spec.unwrap();
        assert_eq!(spec.schedule, "0 2 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Replace"));
        assert_eq!((spec.successful_jobs_history_limit, spec.failed_jobs_history_limit), (Some(3), Some(5)));
        let template = spec.job_template;
        assert_eq!(template.metadata.unwrap().labels.unwrap()[BATCH_JOB_LABEL], "nightly");
        assert_eq!(template.spec.unwrap().completions, Some(4));
        assert!(
            cron_job(&batch(serde_json::json!({})), &resolve(&j, None).unwrap(), &Settings::new("s"))
                .unwrap()
                .is_none()
        );
    }
}
