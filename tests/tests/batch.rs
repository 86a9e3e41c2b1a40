//! MLBatchJobs on the local cluster: admission refuses bad specs naming the field; a run is an
//! Indexed Job of its shards; on the real node the shards really run our server image over a
//! PVC-backed dataset, and the union of their parts equals one `modelship-server batch` run.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use modelship_crds::MLBatchJob;
use modelship_tests::real_node;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, binary, kubectl, kubectl_stdin, patch_mlmodel, root, setup, wait_for,
    wait_ready,
};
use serde::Deserialize;

/// Real pods start slower than kwok's; generous on a busy 2-core machine.
const T: Duration = Duration::from_secs(180);

fn apply(ns: &str, yaml: &str) -> anyhow::Result<String> {
    kubectl_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(yaml))
}

fn batch_yaml(name: &str, spec: &str) -> String {
    format!("apiVersion: modelship.dev/v1alpha1\nkind: MLBatchJob\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

const IO: &str = "  input: {uri: pvc://data/in/iris.csv}\n  output: {uri: pvc://data/out}\n";
const MODEL: &str = "  model: {uri: configmap://iris-model/model.json, version: v1}\n";

#[tokio::test]
async fn bad_specs_are_refused_at_admission_with_the_field_named() {
    let (_c, ns) = setup("batch-admission").await;
    let cases = [
        ("no-input", format!("{MODEL}  output: {{uri: pvc://data/out}}\n"), "spec.input: Required value"),
        (
            "format",
            format!("{MODEL}{IO}").replace("iris.csv}", "iris.csv, format: xlsx}"),
            "spec.input.format: Unsupported value: \"xlsx\"",
        ),
        (
            "shards",
            format!("{MODEL}{IO}  shards: 0\n"),
            "spec.shards: Invalid value: 0: spec.shards in body should be greater than or equal to 1",
        ),
        (
            "cron",
            format!("{MODEL}{IO}  schedule: every night\n"),
            "spec.schedule: Invalid value: \"string\": must be a cron schedule",
        ),
        (
            "two-models",
            format!("{MODEL}{IO}  modelRef: {{name: iris}}\n"),
            "set exactly one of spec.model and spec.modelRef",
        ),
        ("no-model", IO.to_string(), "set exactly one of spec.model and spec.modelRef"),
        (
            "input-scheme",
            format!("{MODEL}{IO}").replace("pvc://data/in/iris.csv", "s3://bucket/iris.csv"),
            "spec.input.uri: Invalid value: \"string\": must be pvc://CLAIM/PATH",
        ),
        (
            "escape",
            format!("{MODEL}{IO}").replace("pvc://data/out", "pvc://data/../etc"),
            "spec.output.uri: Invalid value: \"string\": must be pvc://CLAIM/DIR",
        ),
        ("retries", format!("{MODEL}{IO}  retriesPerShard: 11\n"), "spec.retriesPerShard: Invalid value: 11"),
    ];
    for (name, spec, want) in cases {
        let err = apply(&ns.name, &batch_yaml(name, &spec)).expect_err(name).to_string();
        assert!(err.contains(want), "{name}: expected {want:?} in {err}");
    }
    let long = "a".repeat(53);
    let err = apply(&ns.name, &batch_yaml(&long, &format!("{MODEL}{IO}"))).expect_err("long name").to_string();
    assert!(err.contains("metadata.name must be a DNS-1035 label of at most 52 characters"), "{err}");
    // The same spec, valid: accepted (so each refusal above is for its one field).
    apply(&ns.name, &batch_yaml("ok", &format!("{MODEL}{IO}  schedule: \"@daily\"\n"))).unwrap();
    let printed = kubectl(&["get", "mlb", "-n", &ns.name]).unwrap();
    let header: Vec<_> = printed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "MODEL", "LAST", "RUN", "ROWS", "STATUS", "AGE"], "{printed}");
}

async fn batch_job(c: &Client, ns: &str, name: &str, what: &str, check: impl Fn(&MLBatchJob) -> bool) -> MLBatchJob {
    let api: Api<MLBatchJob> = Api::namespaced(c.clone(), ns);
    wait_for(what, T, || async { api.get_opt(name).await.ok().flatten().filter(|b| check(b)) }).await
}

fn result(b: &MLBatchJob) -> Option<&str> {
    Some(b.status.as_ref()?.last_run.as_ref()?.result.as_str())
}

#[tokio::test]
async fn a_run_is_an_indexed_job_of_its_shards_and_a_schedule_a_cron_job() {
    let (c, ns) = setup("batch-shape").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let spec = format!("{MODEL}{IO}  shards: 5\n  parallelism: 2\n  retriesPerShard: 3\n  deadlineSeconds: 900\n");
    apply(&ns.name, &batch_yaml("nightly", &spec)).unwrap();
    let b = batch_job(&c, &ns.name, "nightly", "the run's Job in status", |b| result(b).is_some()).await;
    let run = b.status.as_ref().unwrap().last_run.clone().unwrap();
    assert!(run.job.starts_with("nightly-"), "{run:?}");
    assert_eq!(run.output.as_deref(), Some(format!("pvc://data/out/{}/", run.job).as_str()));
    let jobs: Api<Job> = Api::namespaced(c.clone(), &ns.name);
    let job = jobs.get(&run.job).await.unwrap();
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism, spec.backoff_limit_per_index), (Some(5), Some(2), Some(3)));
    assert_eq!(spec.active_deadline_seconds, Some(900));
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("MLBatchJob", "nightly", Some(true)));
    let pod = spec.template.spec.as_ref().unwrap();
    let sc = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_non_root, sc.read_only_root_filesystem, sc.allow_privilege_escalation),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(b.status.as_ref().unwrap().model.as_ref().unwrap().version.as_deref(), Some("v1"));

    // The same spec re-applied is the same run: no second Job.
    apply(
        &ns.name,
        &batch_yaml(
            "nightly",
            &format!("{MODEL}{IO}  shards: 5\n  parallelism: 2\n  retriesPerShard: 3\n  deadlineSeconds: 900\n"),
        ),
    )
    .unwrap();
    let labelled = ListParams::default().labels("modelship.dev/batch-job=nightly");
    assert_eq!(jobs.list(&labelled).await.unwrap().items.len(), 1);

    // A schedule: a CronJob with the policy and history limits, its template the same Job.
    let cron_spec = format!(
        "{MODEL}{IO}  shards: 3\n  schedule: \"0 2 * * *\"\n  timeZone: Asia/Tokyo\n  concurrencyPolicy: Replace\n  \
         failedRunsHistoryLimit: 4\n"
    );
    apply(&ns.name, &batch_yaml("scheduled", &cron_spec)).unwrap();
    let crons: Api<CronJob> = Api::namespaced(c.clone(), &ns.name);
    let cron = wait_for("the CronJob", T, || async { crons.get_opt("scheduled").await.ok().flatten() }).await;
    let cs = cron.spec.unwrap();
    assert_eq!((cs.schedule.as_str(), cs.concurrency_policy.as_deref()), ("0 2 * * *", Some("Replace")));
    assert_eq!((cs.successful_jobs_history_limit, cs.failed_jobs_history_limit), (Some(3), Some(4)));
    assert_eq!(cs.time_zone.as_deref(), Some("Asia/Tokyo"), "the API server took the time zone");
    let template = cs.job_template.spec.unwrap();
    assert_eq!((template.completion_mode.as_deref(), template.completions), (Some("Indexed"), Some(3)));
    let b = batch_job(&c, &ns.name, "scheduled", "Scheduled status", |b| {
        b.status.as_ref().is_some_and(|s| s.cron_job.as_deref() == Some("scheduled"))
    })
    .await;
    let status = b.status.unwrap();
    assert!(status.conditions.iter().all(|c| c.status == "False" && c.reason == "Scheduled"));
    // The next run: 02:00 in Tokyo is 17:00 UTC, within the next day.
    let next = status.next_run_time.expect("nextRunTime").0;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((1..=86_400).contains(&(next.as_second() - now)), "{next}");
    assert!(next.to_string().ends_with("T17:00:00Z"), "{next}");
    // Suspended: the CronJob stops starting runs and no next run is promised.
    apply(&ns.name, &batch_yaml("scheduled", &format!("{cron_spec}  suspend: true\n"))).unwrap();
    wait_for("the CronJob suspended", T, || async {
        crons.get_opt("scheduled").await.ok().flatten().filter(|c| c.spec.as_ref().unwrap().suspend == Some(true))
    })
    .await;
    batch_job(&c, &ns.name, "scheduled", "no nextRunTime", |b| {
        b.status.as_ref().is_some_and(|s| s.next_run_time.is_none())
    })
    .await;
    // A schedule the shape check lets through but the CronJob API would refuse: Failed, the field named.
    let bad = cron_spec.replace("0 2 * * *", "0 25 * * *");
    apply(&ns.name, &batch_yaml("bad-hour", &bad)).unwrap();
    let failed_condition = |b: &MLBatchJob| {
        b.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True").cloned()
    };
    let b = batch_job(&c, &ns.name, "bad-hour", "Failed", |b| failed_condition(b).is_some()).await;
    let failed = failed_condition(&b).unwrap();
    assert!(failed.message.contains("spec.schedule: hour: 25 is outside 0-23"), "{}", failed.message);
    assert!(crons.get_opt("bad-hour").await.unwrap().is_none());

    // A schedule removed: the CronJob goes.
    apply(&ns.name, &batch_yaml("scheduled", &format!("{MODEL}{IO}  shards: 3\n"))).unwrap();
    wait_for("the CronJob deleted", T, || async {
        crons.get_opt("scheduled").await.ok().flatten().is_none().then_some(())
    })
    .await;
}

/// A PersistentVolume on this machine (hostPath) bound to the claim `data` of the namespace,
/// writable by the server's non-root user. Dropped: the PV is deleted (the namespace takes the claim).
struct Dataset {
    dir: PathBuf,
    pv: String,
}

impl Dataset {
    fn new(ns: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("modelship-batch-{ns}"));
        std::fs::create_dir_all(dir.join("in")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        for d in [dir.clone(), dir.join("in"), dir.join("out")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let pv = format!("data-{ns}");
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {pv}\nspec:\n  capacity: {{storage: 1Gi}}\n  \
             accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  \
             hostPath: {{path: {}, type: Directory}}\n  claimRef: {{namespace: {ns}, name: data}}\n---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  namespace: {ns}\nspec:\n  \
             accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: {pv}\n  resources: {{requests: {{storage: 1Gi}}}}\n",
            dir.display()
        );
        kubectl_stdin(&["apply", "-f", "-"], Some(&yaml)).unwrap();
        kubectl(&["wait", "-n", ns, "pvc/data", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s"]).unwrap();
        Self { dir, pv }
    }

    /// `rows` iris-shaped rows (an id, then the four features), some ids with newlines;
    /// `bad_last` makes the last row's petal length unreadable.
    fn rows(rows: usize, bad_last: bool) -> impl Iterator<Item = (String, [String; 4])> {
        (0..rows).map(move |i| {
            let f = |k: usize, lo: f64, span: f64| {
                format!("{:.2}", lo + ((i * 7919 + k * 104729) % 1000) as f64 / 1000.0 * span)
            };
            let id = if i % 10 == 0 { format!("row\n{i}") } else { format!("row-{i}") };
            let petal = if bad_last && i + 1 == rows { "oops".to_string() } else { f(2, 1.0, 5.9) };
            (id, [f(0, 4.3, 3.6), f(1, 2.0, 2.4), petal, f(3, 0.1, 2.4)])
        })
    }

    /// Writes `in/NAME`: a CSV header and [`Dataset::rows`] (ids with newlines quoted).
    fn write_input(&self, name: &str, rows: usize, bad_last: bool) -> PathBuf {
        let mut text = format!("id,{}\n", FEATURES.join(","));
        for (id, x) in Self::rows(rows, bad_last) {
            let id = if id.contains('\n') { format!("\"{id}\"") } else { id };
            text.push_str(&format!("{id},{}\n", x.join(",")));
        }
        let path = self.dir.join("in").join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The same rows as JSON lines (features as numbers), into `path`.
    fn write_json_lines(path: &Path, rows: usize) {
        let mut text = String::new();
        for (id, x) in Self::rows(rows, false) {
            let fields: Vec<String> = FEATURES.iter().zip(&x).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            text.push_str(&format!("{{\"id\":{},{}}}\n", serde_json::json!(id), fields.join(",")));
        }
        std::fs::write(path, text).unwrap();
    }
}

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "pv", &self.pv, "--wait=false"]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Records of a CSV file (header excluded).
fn records(path: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path).unwrap().records().map(|r| r.unwrap()).collect()
}

/// The iris model of examples/iris.yaml, as a file.
fn iris_model_file(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/iris.yaml")).unwrap();
    let json = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["model.json"].as_str().map(str::to_string))
        .unwrap();
    let path = dir.join("model.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// `modelship-server batch` over the whole of `input` on this machine, with `extra` flags: the records it writes.
fn one_run(data: &Dataset, input: &Path, extra: &[&str]) -> Vec<csv::StringRecord> {
    let whole = data.dir.join("whole.csv");
    let model = iris_model_file(&data.dir);
    let mut args = vec!["batch", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    args.extend(["--output", whole.to_str().unwrap()]);
    args.extend_from_slice(extra);
    modelship_tests::run(&binary("modelship-server"), &args, None).unwrap();
    records(&whole)
}

async fn real_setup(prefix: &str) -> Option<(Client, TestNamespace, Operator, Dataset)> {
    let (c, ns, op) = real_node::setup(prefix).await?;
    let data = Dataset::new(&ns.name);
    // The model's ConfigMap only (the example's MLModel is not needed here).
    let example = root().join("examples/iris.yaml");
    kubectl(&[
        "apply",
        "-n",
        &ns.name,
        "-l",
        "app.kubernetes.io/part-of=modelship-examples",
        "-f",
        example.to_str().unwrap(),
    ])
    .unwrap();
    Some((c, ns, op, data))
}

async fn shard_pods(c: &Client, ns: &str, job: &str) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await.unwrap();
    list.items
        .iter()
        .map(|p| {
            let a = p.metadata.annotations.clone().unwrap_or_default();
            (
                a.get("batch.kubernetes.io/job-completion-index").cloned().unwrap_or_default(),
                p.status.clone().unwrap_or_default().phase.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn shards_on_the_real_node_score_every_row_once_like_one_run() {
    let Some((c, ns, _op, data)) = real_setup("batch-real").await else { return };
    let input = data.write_input("iris.csv", 3000, false);
    apply(&ns.name, &batch_yaml("score", &format!("{MODEL}{IO}  shards: 3\n  parallelism: 3\n  chunkRows: 256\n")))
        .unwrap();
    let b = batch_job(&c, &ns.name, "score", "the run Complete", |b| result(b) == Some("Complete")).await;
    let status = b.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(
        (run.rows, run.shards_succeeded, run.shards_failed, run.shards.as_str()),
        (3000, 3, 0, "3/3"),
        "{run:?}"
    );
    assert_eq!(run.output_manifest, Some(format!("pvc://data/out/{}/_SUCCESS", run.job)));
    assert!(run.start_time.is_some() && run.completion_time.is_some());
    let complete = status.conditions.iter().find(|c| c.type_ == "Complete").unwrap();
    assert_eq!((complete.status.as_str(), complete.reason.as_str()), ("True", "AllShardsSucceeded"));
    assert_eq!(status.model.unwrap().version.as_deref(), Some("v1"));

    // The parts, in index order, are one run of the same binary over the whole file.
    let out = data.dir.join("out").join(&run.job);
    let success: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(
        (success["rows"].as_u64(), success["shards"].as_u64(), success["modelVersion"].as_str()),
        (Some(3000), Some(3), Some("v1"))
    );
    let mut union = Vec::new();
    for part in success["files"].as_array().unwrap() {
        union.extend(records(&out.join(part["file"].as_str().unwrap())));
    }
    let want = one_run(&data, &input, &[]);
    assert_eq!(want.len(), 3000);
    assert!(union == want, "the shards' union differs from one run over the file");
    let mut indexes: Vec<_> = shard_pods(&c, &ns.name, &run.job).await.into_iter().map(|(i, _)| i).collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"], "one pod per shard, none retried");
    // The operator's events (events.k8s.io), about this MLBatchJob.
    let selector = "regarding.kind=MLBatchJob,regarding.name=score";
    let events = kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &ns.name,
        "--field-selector",
        selector,
        "-o",
        "jsonpath={.items[*].reason}",
    ])
    .unwrap();
    assert!(events.contains("Started") && events.contains("Completed"), "{events}");
}

#[tokio::test]
async fn a_failing_shard_is_retried_alone_and_named_in_status_with_no_partial_rows() {
    let Some((c, ns, _op, data)) = real_setup("batch-fail").await else { return };
    data.write_input("iris.csv", 900, true);
    apply(&ns.name, &batch_yaml("score", &format!("{MODEL}{IO}  shards: 3\n  retriesPerShard: 1\n"))).unwrap();
    let b = batch_job(&c, &ns.name, "score", "the run Failed", |b| result(b) == Some("Failed")).await;
    let status = b.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!((run.shards_succeeded, run.shards_failed), (2, 1), "{run:?}");
    // Shards are byte ranges: about a third of the rows each, not exactly.
    assert!((400..900).contains(&run.rows), "{run:?}");
    assert_eq!(run.failed_shards.len(), 1);
    assert_eq!(run.failed_shards[0].index, 2);
    assert!(run.failed_shards[0].reason.contains("shard 2 of 3: record"), "{:?}", run.failed_shards);
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "ShardsFailed"));
    assert!(failed.message.contains("shard 2"), "{}", failed.message);
    // Shard 2 ran twice (its retry), the others once; only complete parts are on disk.
    let mut pods: Vec<_> = shard_pods(&c, &ns.name, &run.job).await.into_iter().map(|(i, _)| i).collect();
    pods.sort();
    assert_eq!(pods, ["0", "1", "2", "2"]);
    let out = data.dir.join("out").join(&run.job);
    let mut files: Vec<_> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "part-00000-of-00003.csv",
            "part-00000-of-00003.manifest.json",
            "part-00001-of-00003.csv",
            "part-00001-of-00003.manifest.json"
        ]
    );
    let rows: usize =
        ["part-00000-of-00003.csv", "part-00001-of-00003.csv"].iter().map(|f| records(&out.join(f)).len()).sum();
    assert_eq!(rows as i64, run.rows, "status counts exactly the rows on disk");
}

#[tokio::test]
async fn json_lines_scored_to_key_columns_and_probabilities_after_shards_fail_then_succeed_on_retry() {
    let Some((c, ns, _op, data)) = real_setup("batch-jsonl").await else { return };
    // The input does not exist yet: every shard's first attempt fails.
    let spec = format!(
        "{MODEL}  input: {{uri: pvc://data/in/iris.jsonl}}\n  \
         output: {{uri: pvc://data/out, format: csv, keyColumns: [id], probabilities: true}}\n  \
         shards: 2\n  retriesPerShard: 4\n"
    );
    apply(&ns.name, &batch_yaml("score", &spec)).unwrap();
    let b =
        batch_job(&c, &ns.name, "score", "a run", |b| b.status.as_ref().is_some_and(|s| s.last_run.is_some())).await;
    let job = b.status.unwrap().last_run.unwrap().job;
    wait_for("a failed first attempt of both shards", T, || async {
        let pods = shard_pods(&c, &ns.name, &job).await;
        ["0", "1"].iter().all(|i| pods.iter().any(|(k, phase)| k == i && phase == "Failed")).then_some(())
    })
    .await;
    let input = data.dir.join("in/iris.jsonl");
    Dataset::write_json_lines(&input, 2000);

    let b = batch_job(&c, &ns.name, "score", "the run Complete", |b| result(b) == Some("Complete")).await;
    let run = b.status.unwrap().last_run.unwrap();
    assert_eq!(
        (run.rows, run.shards_succeeded, run.shards_failed, run.shards.as_str()),
        (2000, 2, 0, "2/2"),
        "{run:?}"
    );
    assert!(run.failed_shards.is_empty(), "{run:?}");
    let pods = shard_pods(&c, &ns.name, &job).await;
    for i in ["0", "1"] {
        assert!(pods.iter().filter(|(k, _)| k == i).count() >= 2, "shard {i} ran once: {pods:?}");
        assert_eq!(pods.iter().filter(|(k, p)| k == i && p == "Succeeded").count(), 1, "{pods:?}");
    }
    // The parts: CSV with the id, the prediction and a probability per class, each row once,
    // as one run of the binary over the whole file with the same flags.
    let out = data.dir.join("out").join(&job);
    let success: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let parts: Vec<PathBuf> =
        success["files"].as_array().unwrap().iter().map(|p| out.join(p["file"].as_str().unwrap())).collect();
    assert!(parts.iter().all(|p| p.extension().is_some_and(|e| e == "csv")), "{parts:?}");
    let header = csv::Reader::from_path(&parts[0]).unwrap().headers().unwrap().clone();
    assert_eq!(header.iter().take(2).collect::<Vec<_>>(), ["id", "prediction"]);
    assert!(header.len() == 5 && header.iter().skip(2).all(|h| h.starts_with("probability_")), "{header:?}");
    let union: Vec<_> = parts.iter().flat_map(|p| records(p)).collect();
    let want = one_run(&data, &input, &["--output-format", "csv", "--keep-columns", "id", "--probabilities"]);
    assert_eq!(want.len(), 2000);
    assert!(union == want, "the shards' union differs from one run over the file");
    assert!(union.iter().any(|r| r[0].contains('\n')), "ids with newlines came through");
}

#[tokio::test]
async fn a_directory_of_files_is_shared_out_whole_among_the_shards() {
    let Some((c, ns, _op, data)) = real_setup("batch-dir").await else { return };
    let days = data.dir.join("in/days");
    std::fs::create_dir_all(&days).unwrap();
    for (k, rows) in [300, 200, 100].into_iter().enumerate() {
        std::fs::rename(data.write_input(&format!("day-{k}.csv"), rows, false), days.join(format!("day-{k}.csv")))
            .unwrap();
    }
    Dataset::write_json_lines(&days.join("day-3.jsonl"), 50);
    // Left out of the listing: a hidden file and a _-prefixed one.
    std::fs::write(days.join("_SUCCESS"), "{}").unwrap();
    std::fs::write(days.join(".day-9.csv.tmp-1"), "partial").unwrap();
    let spec = format!(
        "{MODEL}  input: {{uri: pvc://data/in/days/}}\n  output: {{uri: pvc://data/out, keyColumns: [id]}}\n  shards: 2\n"
    );
    apply(&ns.name, &batch_yaml("days", &spec)).unwrap();
    let b = batch_job(&c, &ns.name, "days", "the run Complete", |b| result(b) == Some("Complete")).await;
    let run = b.status.unwrap().last_run.unwrap();
    assert_eq!((run.rows, run.shards.as_str()), (650, "2/2"), "{run:?}");
    let out = data.dir.join("out").join(&run.job);
    let success: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let mut per_shard = Vec::new();
    let mut union = Vec::new();
    for part in success["files"].as_array().unwrap() {
        let rows = records(&out.join(part["file"].as_str().unwrap()));
        per_shard.push(rows.len());
        union.extend(rows);
    }
    // Whole files, balanced by bytes, largest first: day-0 (300 rows, ~9 KB) and day-1 (200,
    // ~6 KB) start one shard each, the JSON lines file (50 rows but ~5 KB) joins day-1, day-2
    // (100 rows, ~3 KB) day-0.
    per_shard.sort();
    assert_eq!(per_shard, [250, 400]);
    let mut want = one_run(&data, &days, &["--keep-columns", "id"]);
    let key = |r: &csv::StringRecord| r.iter().map(str::to_string).collect::<Vec<_>>();
    let mut union: Vec<_> = union.iter().map(key).collect();
    want.sort_by_key(key);
    union.sort();
    assert_eq!(union, want.iter().map(key).collect::<Vec<_>>(), "every row of every file exactly once");
}

#[tokio::test]
async fn a_scheduled_model_ref_follows_the_version_the_mlmodel_serves() {
    let Some((c, ns, _op, data)) = real_setup("batch-ref").await else { return };
    data.write_input("iris.csv", 200, false);
    let example = root().join("examples/iris.yaml");
    kubectl(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]).unwrap();
    let models: Api<modelship_crds::MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris", Some("v1"), T).await;
    apply(
        &ns.name,
        &batch_yaml("nightly", &format!("  modelRef: {{name: iris}}\n{IO}  shards: 2\n  schedule: \"0 3 * * *\"\n")),
    )
    .unwrap();
    let crons: Api<CronJob> = Api::namespaced(c.clone(), &ns.name);
    let version_of = |cron: &CronJob| {
        cron.spec
            .as_ref()?
            .job_template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get("modelship.dev/model-version")
            .cloned()
    };
    wait_for("the CronJob on v1", T, || async {
        crons.get_opt("nightly").await.ok().flatten().filter(|c| version_of(c).as_deref() == Some("v1"))
    })
    .await;

    patch_mlmodel(&ns.name, "iris", r#"{"spec":{"model":{"version":"v2"}}}"#);
    wait_ready(&models, "iris", Some("v2"), T).await;
    wait_for("the CronJob on v2", T, || async {
        crons.get_opt("nightly").await.ok().flatten().filter(|c| version_of(c).as_deref() == Some("v2"))
    })
    .await;
    // The next run (started by hand instead of waiting for 03:00) scores with v2 and says so.
    kubectl(&["create", "job", "-n", &ns.name, "--from=cronjob/nightly", "nightly-manual"]).unwrap();
    let b = batch_job(&c, &ns.name, "nightly", "the manual run Complete", |b| {
        b.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref())
            .is_some_and(|r| r.job == "nightly-manual" && r.result == "Complete")
    })
    .await;
    let status = b.status.unwrap();
    let model = status.model.unwrap();
    assert_eq!((model.version.as_deref(), model.from.as_deref()), (Some("v2"), Some("iris")));
    let run = status.last_run.unwrap();
    assert_eq!((run.rows, run.shards.as_str()), (200, "2/2"));
    assert!(data.dir.join("out/nightly-manual/_SUCCESS").exists());
}
