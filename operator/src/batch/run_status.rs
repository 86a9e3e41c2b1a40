//! Pure: a run's Job and its pods in, the run's status out. Rows come from the shards' own
//! reports (the JSON line `modelship-server batch` writes to its termination log); a failed
//! shard's reason is the one line its last attempt wrote there.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use modelship_crds::batch_job::{BatchRun, FailedShard};

use super::{COMPLETION_INDEX_ANNOTATION, OUTPUT_ANNOTATION};

/// A run's result, as in `status.lastRun.result`.
pub const RUNNING: &str = "Running";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";

/// One shard's report, as the server writes it when it is done.
#[derive(serde::Deserialize)]
struct ShardReport {
    shard: u32,
    rows: i64,
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// The indexes in a Job's `completedIndexes`/`failedIndexes` ("1,3-5,7").
pub fn parse_indexes(list: &str) -> Vec<u32> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a <= b => (a..=b).collect(),
                _ => vec![],
            },
            None => part.parse().map(|i| vec![i]).unwrap_or_default(),
        })
        .collect()
}

/// The pod's completion index and its container's terminated state: (exit code, message).
fn terminated(pod: &Pod) -> Option<(u32, i32, String)> {
    let index = pod.annotations().get(COMPLETION_INDEX_ANNOTATION)?.parse().ok()?;
    let state = pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?;
    let t = state.terminated.as_ref()?;
    Some((index, t.exit_code, t.message.clone().unwrap_or_default().trim().to_string()))
}

/// The status of the run `job`, with `pods` its pods (any order, retries included).
pub fn run(job: &Job, pods: &[Pod]) -> BatchRun {
    let status = job.status.clone().unwrap_or_default();
    let shards = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    let result = if job_condition(job, "Complete").is_some() {
        COMPLETE
    } else if job_condition(job, "Failed").is_some() {
        FAILED
    } else {
        RUNNING
    };
    let completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or_default());
    let failed = parse_indexes(status.failed_indexes.as_deref().unwrap_or_default());

    // Rows: one report per completed index (a retried shard counts once: its last success).
    let mut rows_by_shard: BTreeMap<u32, i64> = BTreeMap::new();
    let mut last_failure: BTreeMap<u32, (String, String)> = BTreeMap::new();
    let mut by_age: Vec<&Pod> = pods.iter().collect();
    by_age.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    for pod in by_age {
        let Some((index, code, message)) = terminated(pod) else { continue };
        if code == 0 {
            if let Ok(r) = serde_json::from_str::<ShardReport>(&message)
                && r.shard == index
                && completed.contains(&index)
            {
                rows_by_shard.insert(index, r.rows);
            }
        } else {
            let when = pod.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let reason = if message.is_empty() { format!("exit code {code}") } else { message };
            last_failure.insert(index, (when, reason));
        }
    }
    let mut failed_shards: Vec<FailedShard> = failed
        .iter()
        .map(|&i| FailedShard {
            index: i as i32,
            reason: last_failure.get(&i).map(|(_, r)| r.clone()).unwrap_or_else(|| "failed".into()),
        })
        .collect();
    if result == FAILED && failed_shards.is_empty() {
        // The whole run stopped (a deadline): the Job says why.
        if let Some(c) = job_condition(job, "Failed") {
            let why = format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
            failed_shards = (0..shards as u32)
                .filter(|i| !completed.contains(i))
                .map(|i| FailedShard { index: i as i32, reason: why.clone() })
                .collect();
        }
    }
    let output = job.annotations().get(OUTPUT_ANNOTATION).cloned().map(|o| {
        // A CronJob's template records the base; the run's dir is its Job's name.
        if o.ends_with(&format!("/{}/", job.name_any())) { o } else { format!("{o}{}/", job.name_any()) }
    });
    let succeeded = completed.len() as i32;
    BatchRun {
        job: job.name_any(),
        result: result.into(),
        start_time: status.start_time.clone(),
        completion_time: status.completion_time.clone(),
        rows: rows_by_shard.values().sum(),
        shards_succeeded: succeeded,
        shards_failed: failed_shards.len() as i32,
        shards: format!("{succeeded}/{shards}"),
        failed_shards,
        output_manifest: (result == COMPLETE).then(|| output.as_ref().map(|o| format!("{o}_SUCCESS"))).flatten(),
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nightly-1a2b3c4d", "annotations": {OUTPUT_ANNOTATION: "pvc://data/out/nightly-1a2b3c4d/"}},
            "spec": {"completions": 3, "completionMode": "Indexed", "template": {}},
            "status": status,
        }))
        .expect("Job")
    }

    fn pod(index: u32, age: &str, code: i32, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("p{index}-{age}"), "creationTimestamp": format!("2026-12-06T10:00:{age}Z"),
                "annotations": {COMPLETION_INDEX_ANNOTATION: index.to_string()},
            },
            "status": {"containerStatuses": [{
                "name": "batch", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": message}},
            }]},
        }))
        .expect("Pod")
    }

    fn report(i: u32, rows: i64) -> String {
        format!(r#"{{"shard":{i},"shards":3,"rows":{rows},"file":"part","sha256":"x","complete":false}}"#)
    }

    #[test]
    fn indexes_parse_with_ranges() {
        assert_eq!(parse_indexes("0,2-4,7"), [0, 2, 3, 4, 7]);
        assert_eq!(parse_indexes(""), Vec::<u32>::new());
    }

    #[test]
    fn a_complete_run_sums_each_shards_rows_once_even_after_retries() {
        let j = job(serde_json::json!({
            "completedIndexes": "0-2", "succeeded": 3, "failed": 1, "startTime": "2026-12-06T10:00:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        }));
        // Shard 1 failed once, then succeeded on its retry.
        let pods = [
            pod(0, "01", 0, &report(0, 50)),
            pod(1, "01", 1, "modelship-server: shard 1 of 3: record 7, byte 300: bad value"),
            pod(1, "05", 0, &report(1, 49)),
            pod(2, "01", 0, &report(2, 51)),
        ];
        let r = run(&j, &pods);
        assert_eq!((r.result.as_str(), r.rows, r.shards_succeeded, r.shards_failed), (COMPLETE, 150, 3, 0));
        assert_eq!(r.shards, "3/3");
        assert_eq!(r.output_manifest.as_deref(), Some("pvc://data/out/nightly-1a2b3c4d/_SUCCESS"));
    }

    #[test]
    fn a_failed_shard_is_named_with_its_last_reason() {
        let j = job(serde_json::json!({
            "completedIndexes": "0,2", "failedIndexes": "1", "succeeded": 2, "failed": 2,
            "conditions": [{"type": "Failed", "status": "True", "reason": "FailedIndexes"}],
        }));
        let pods = [
            pod(0, "01", 0, &report(0, 50)),
            pod(1, "01", 1, "modelship-server: first"),
            pod(1, "09", 1, "modelship-server: shard 1 of 3: record 7, byte 300: bad"),
            pod(2, "01", 0, &report(2, 51)),
        ];
        let r = run(&j, &pods);
        assert_eq!((r.result.as_str(), r.rows, r.shards_succeeded, r.shards_failed), (FAILED, 101, 2, 1));
        assert_eq!(
            r.failed_shards,
            [FailedShard { index: 1, reason: "modelship-server: shard 1 of 3: record 7, byte 300: bad".into() }]
        );
        assert_eq!(r.output_manifest, None);
    }

    #[test]
    fn a_deadline_fails_every_unfinished_shard_with_the_jobs_reason() {
        let j = job(serde_json::json!({
            "completedIndexes": "0",
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}],
        }));
        let r = run(&j, &[pod(0, "01", 0, &report(0, 5))]);
        assert_eq!(r.failed_shards.iter().map(|f| f.index).collect::<Vec<_>>(), [1, 2]);
        assert!(r.failed_shards[0].reason.starts_with("DeadlineExceeded: Job was active"));
    }

    #[test]
    fn a_running_run_counts_what_is_done_and_a_report_of_another_index_never_counts() {
        let j = job(serde_json::json!({"completedIndexes": "0", "active": 2}));
        let r = run(&j, &[pod(0, "01", 0, &report(0, 5)), pod(2, "01", 0, &report(1, 99))]);
        assert_eq!((r.result.as_str(), r.rows, r.shards.as_str()), (RUNNING, 5, "1/3"));
    }

    #[test]
    fn a_cron_runs_output_is_its_jobs_dir() {
        let mut j = job(serde_json::json!({}));
        j.metadata.annotations = Some(BTreeMap::from([(OUTPUT_ANNOTATION.into(), "pvc://data/out/".into())]));
        assert_eq!(run(&j, &[]).output.as_deref(), Some("pvc://data/out/nightly-1a2b3c4d/"));
    }
}
