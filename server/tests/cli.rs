//! The `modelship-server` binary itself: train, inspect, batch, serve (file and HTTP sources),
//! one-line failures, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use modelship_server::model::{Model, Predictions};
use modelship_server::{Artifact, train};

const BIN: &str = env!("CARGO_BIN_EXE_modelship-server");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("modelship-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `batch` on `input` into `output`, with any extra flags.
fn batch(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let paths = [model, input, output].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["batch", "--model", &paths[0], "--input", &paths[1], "--output", &paths[2]];
    args.extend_from_slice(extra);
    run(&args)
}

fn train_iris(dir: &Path) -> PathBuf {
    let out = dir.join("iris.json");
    let o = run(&["train", "--dataset", "iris", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Serving {
    child: Child,
    port: u16,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Serving {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Serving { child, port }
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "server on {port} never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn predict(port: u16, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("http://127.0.0.1:{port}/predict")).json(&body).send().await.unwrap()
}

#[test]
fn train_and_inspect() {
    let dir = tmp("inspect");
    let model = train_iris(&dir);
    let o = run(&["inspect", model.to_str().unwrap()]);
    assert!(o.status.success());
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["algorithm"], "logistic_regression");
    assert_eq!(meta["feature_names"].as_array().unwrap().len(), 4);
    assert_eq!(meta["class_names"], serde_json::json!(["setosa", "versicolor", "virginica"]));
    assert_eq!(meta["training"]["holdout_metric"], "accuracy");
    let bytes = std::fs::read(&model).unwrap();
    assert_eq!(meta["sha256"], modelship_server::load::sha256_hex(&bytes));
}

#[test]
fn train_from_csv_and_refuse_bad_csv() {
    let dir = tmp("csv");
    let csv = dir.join("fruit.csv");
    let mut text = String::from("weight,sweetness,kind\n");
    for i in 0..60 {
        let (w, s, k) = if i % 2 == 0 { (100 + i, 2, "lemon") } else { (200 + i, 9, "mango") };
        text.push_str(&format!("{w},{s},{k}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("fruit.json");
    let o = run(&[
        "train",
        "--csv",
        csv.to_str().unwrap(),
        "--target",
        "kind",
        "--algorithm",
        "tree",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = Artifact::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(a.class_names, ["lemon", "mango"]);
    assert_eq!(a.feature_names, ["weight", "sweetness"]);
    assert_eq!(a.training.holdout_score, 1.0, "separable data");

    let o = run(&["train", "--csv", csv.to_str().unwrap(), "--target", "colour", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no column \"colour\""));
    std::fs::write(&csv, "a,b\n1,x\n2,y\n").unwrap();
    let o = run(&[
        "train",
        "--csv",
        csv.to_str().unwrap(),
        "--target",
        "b",
        "--algorithm",
        "linear",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

/// A model trained on iris in `dir`, and `dir/in.csv`: `header`, then one line per iris row.
fn iris_csv(
    dir: &Path,
    header: &str,
    line: impl Fn(usize, ndarray::ArrayView1<'_, f64>) -> String,
) -> (PathBuf, PathBuf) {
    let model_path = train_iris(dir);
    let mut text = format!("{header}\n");
    for (i, r) in train::iris().records.outer_iter().enumerate() {
        text.push_str(&line(i, r));
        text.push('\n');
    }
    let input = dir.join("in.csv");
    std::fs::write(&input, text).unwrap();
    (model_path, input)
}

#[test]
fn batch_scores_every_row_like_the_model_and_keeps_other_columns() {
    let dir = tmp("batch");
    // Columns in another order than the model's, plus an id column to carry through.
    let (model_path, input) = iris_csv(&dir, "petal_width,id,sepal_length,petal_length,sepal_width", |i, r| {
        format!("{},row-{i},{},{},{}", r[3], r[0], r[2], r[1])
    });
    let table = train::iris();
    let output = dir.join("out.csv");
    let o = batch(&model_path, &input, &output, &["--chunk-rows", "7"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("scored 150 rows"));

    let model = Model::new(Artifact::from_slice(&std::fs::read(&model_path).unwrap()).unwrap(), None, None);
    let Ok(Predictions::Classes(want)) = model.predict(table.records.view()) else { panic!() };
    let mut reader = csv::Reader::from_path(&output).unwrap();
    assert_eq!(reader.headers().unwrap().iter().next_back(), Some("prediction"));
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 150);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(&row[1], format!("row-{i}"));
        assert_eq!(row[5].parse::<usize>().unwrap(), want[i], "row {i}");
    }

    std::fs::write(&input, "sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,x,4\n").unwrap();
    let o = batch(&model_path, &input, &output, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("row 3") && err.contains("\"x\""), "{err}");
}

#[test]
fn batch_on_several_threads_writes_what_one_thread_writes() {
    let dir = tmp("batch-threads");
    let model_path = train_iris(&dir);
    let table = train::iris();
    let input = dir.join("in.csv");
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width\n");
    // 3000 rows: chunks of 1000 split in three slices of 334, 334 and 332 rows.
    for k in 0..20 {
        for r in table.records.outer_iter() {
            let jitter = f64::from(k) * 0.01;
            text.push_str(&format!("{},{},{},{}\n", r[0] + jitter, r[1], r[2] - jitter, r[3]));
        }
    }
    std::fs::write(&input, text).unwrap();
    let one = dir.join("one.csv");
    let three = dir.join("three.csv");
    for (out, threads) in [(&one, "1"), (&three, "3")] {
        let o = batch(&model_path, &input, out, &["--chunk-rows", "1000", "--threads", threads]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("scored 3000 rows"));
    }
    let (one, three) = (std::fs::read_to_string(one).unwrap(), std::fs::read_to_string(three).unwrap());
    assert_eq!(one.lines().count(), 3001);
    // Not every row the same class, or equal outputs would prove little.
    let classes: std::collections::BTreeSet<&str> = one.lines().skip(1).filter_map(|l| l.rsplit(',').next()).collect();
    assert_eq!(classes.len(), 3, "{classes:?}");
    assert!(one == three, "three threads wrote other predictions than one");
}

#[test]
fn batch_shards_together_score_every_row_once_like_one_run() {
    let dir = tmp("batch-shards");
    // An id column with quoted newlines and quotes, which must stay inside their row.
    let (model_path, input) = iris_csv(&dir, "id,sepal_length,sepal_width,petal_length,petal_width", |i, r| {
        let id = if i % 3 == 0 { format!("\"row\n{i} \"\"q\"\"\"") } else { format!("row-{i}") };
        format!("{id},{},{},{},{}", r[0], r[1], r[2], r[3])
    });
    let whole = dir.join("whole.csv");
    let o = batch(&model_path, &input, &whole, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = |p: &Path| -> Vec<csv::StringRecord> {
        csv::Reader::from_path(p).unwrap().records().map(|r| r.unwrap()).collect()
    };
    let want = records(&whole);
    assert_eq!(want.len(), 150);
    for count in [1u32, 2, 3, 7, 16] {
        let mut union = Vec::new();
        for index in 0..count {
            let part = dir.join(format!("part-{index}-of-{count}.csv"));
            let (i, n) = (index.to_string(), count.to_string());
            let o = batch(&model_path, &input, &part, &["--shard-index", &i, "--shard-count", &n, "--chunk-rows", "5"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            union.extend(records(&part));
        }
        assert_eq!(union, want, "{count} shards");
    }
    // As an Indexed Job's pods do: each index from JOB_COMPLETION_INDEX into one directory; the
    // last to finish writes _SUCCESS, whose SHA-256s are those of the parts on disk.
    let out = dir.join("run");
    let out_dir = out.to_str().unwrap();
    let mut shard_rows = 0;
    for index in [2, 0, 1] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelship-server"));
        cmd.args(["batch", "--model", model_path.to_str().unwrap(), "--input", input.to_str().unwrap()]);
        cmd.args(["--output-dir", out_dir, "--shard-count", "3", "--model-version", "v7"]);
        // The kubelet creates the termination log; the shard reports itself there for the operator.
        let log = dir.join(format!("termination-log-{index}"));
        std::fs::write(&log, "").unwrap();
        cmd.env("MODELSHIP_TERMINATION_LOG", &log);
        let o = cmd.env("JOB_COMPLETION_INDEX", index.to_string()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let said = String::from_utf8_lossy(&o.stdout).contains("all 3 shards done: 150 rows; wrote _SUCCESS");
        assert_eq!(said, index == 1, "{}", String::from_utf8_lossy(&o.stdout));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
        assert_eq!((report["shard"].as_u64(), report["shards"].as_u64()), (Some(index), Some(3)), "{report}");
        assert_eq!(report["file"], format!("part-{index:05}-of-00003.csv"));
        assert_eq!(report["complete"], index == 1);
        shard_rows += report["rows"].as_u64().unwrap();
    }
    assert_eq!(shard_rows, 150, "the shards' reports add up to every row");
    let success: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!((success["rows"].as_u64(), success["modelVersion"].as_str()), (Some(150), Some("v7")));
    let mut union = Vec::new();
    for part in success["files"].as_array().unwrap() {
        let path = out.join(part["file"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(part["sha256"].as_str().unwrap(), modelship_server::load::sha256_hex(&bytes), "{path:?}");
        union.extend(records(&path));
    }
    assert_eq!(union, want);

    let o = batch(&model_path, &input, &whole, &["--shard-index", "4", "--shard-count", "4"]);
    assert!(!o.status.success());
    assert!(reason(&o).contains("shard index 4 is out of range for 4 shards"), "{}", reason(&o));
}

/// `rows` of a CSV file as JSON lines: each row an object keyed by the header, numbers as numbers.
fn csv_as_json_lines(input: &Path, output: &Path) {
    let mut reader = csv::Reader::from_path(input).unwrap();
    let header = reader.headers().unwrap().clone();
    let mut text = String::new();
    for row in reader.records() {
        let row = row.unwrap();
        let mut obj = serde_json::Map::new();
        for (k, v) in header.iter().zip(row.iter()) {
            let value = v.parse::<f64>().map_or_else(|_| serde_json::json!(v), |x| serde_json::json!(x));
            obj.insert(k.to_string(), value);
        }
        // serde_json's map sorts keys; the input order is kept by writing them in header order.
        let fields: Vec<String> = header.iter().map(|k| format!("{}:{}", serde_json::json!(k), obj[k])).collect();
        text.push_str(&format!("{{{}}}\n", fields.join(",")));
    }
    std::fs::write(output, text).unwrap();
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn batch_reads_and_writes_json_lines_as_it_does_csv_whole_or_in_shards() {
    let dir = tmp("batch-jsonl");
    // Ids with newlines and quotes, which JSON escapes: every newline in the file ends a record.
    let (model_path, csv_in) = iris_csv(&dir, "id,sepal_length,sepal_width,petal_length,petal_width", |i, r| {
        let id = if i % 3 == 0 { format!("\"row\n{i} \"\"q\"\"\"") } else { format!("row-{i}") };
        format!("{id},{},{},{},{}", r[0], r[1], r[2], r[3])
    });
    let jsonl_in = dir.join("in.jsonl");
    csv_as_json_lines(&csv_in, &jsonl_in);
    let csv_out = dir.join("out.csv");
    assert!(batch(&model_path, &csv_in, &csv_out, &[]).status.success());
    let want: Vec<csv::StringRecord> =
        csv::Reader::from_path(&csv_out).unwrap().records().map(|r| r.unwrap()).collect();

    // JSON lines in, JSON lines out (by extension): the input's keys in its order, then the prediction.
    let jsonl_out = dir.join("out.jsonl");
    let o = batch(&model_path, &jsonl_in, &jsonl_out, &["--chunk-rows", "7"]);
    assert!(o.status.success(), "{}", reason(&o));
    let text = std::fs::read_to_string(&jsonl_out).unwrap();
    assert!(text.starts_with(r#"{"id":"row\n0 \"q\"","sepal_length":5.1,"#), "{}", &text[..80]);
    let got = json_lines(&jsonl_out);
    assert_eq!(got.len(), 150);
    for (row, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g["id"], w[0], "row {row}");
        assert_eq!(g["sepal_length"].as_f64(), w[1].parse().ok(), "row {row}");
        assert_eq!(g["prediction"].to_string(), w[5], "row {row}");
    }
    // CSV in, JSON lines out; JSON lines in, CSV out (the format named, whatever the extension).
    let cross = dir.join("cross.jsonl");
    assert!(batch(&model_path, &csv_in, &cross, &[]).status.success());
    let cross = json_lines(&cross);
    assert_eq!(
        cross.iter().map(|r| r["prediction"].clone()).collect::<Vec<_>>(),
        got.iter().map(|r| r["prediction"].clone()).collect::<Vec<_>>()
    );
    assert_eq!(cross[1]["sepal_length"], 4.9, "CSV text that is a JSON number becomes one");
    assert_eq!(cross[1]["id"], "row-1");
    // So a JSON lines file written from CSV scores again.
    let again = dir.join("again.jsonl");
    let o = batch(&model_path, &dir.join("cross.jsonl"), &again, &["--keep-columns", "id"]);
    assert!(o.status.success(), "{}", reason(&o));
    let back = dir.join("back.out");
    let o = batch(&model_path, &jsonl_in, &back, &["--output-format", "csv"]);
    assert!(o.status.success(), "{}", reason(&o));
    let back: Vec<csv::StringRecord> = csv::Reader::from_path(&back).unwrap().records().map(|r| r.unwrap()).collect();
    assert_eq!(back, want, "JSON lines scored to CSV = CSV scored to CSV");

    // Shards of a JSON lines file: every record exactly once, whatever the count.
    for count in [1u32, 2, 3, 7, 16] {
        let mut union = Vec::new();
        for index in 0..count {
            let part = dir.join(format!("part-{index}-of-{count}.jsonl"));
            let (i, n) = (index.to_string(), count.to_string());
            let o =
                batch(&model_path, &jsonl_in, &part, &["--shard-index", &i, "--shard-count", &n, "--chunk-rows", "5"]);
            assert!(o.status.success(), "{}", reason(&o));
            union.extend(json_lines(&part));
        }
        assert_eq!(union, got, "{count} shards");
    }
    // A part directory names its parts for the output format.
    let run_dir = dir.join("run");
    let paths = [&model_path, &jsonl_in, &run_dir].map(|p| p.to_str().unwrap().to_string());
    let o = run(&["batch", "--model", &paths[0], "--input", &paths[1], "--output-dir", &paths[2]]);
    assert!(o.status.success(), "{}", reason(&o));
    assert_eq!(json_lines(&run_dir.join("part-00000-of-00001.jsonl")), got);

    // A bad record is named by its line (a whole file) or its place in the shard.
    let mut lines: Vec<String> = std::fs::read_to_string(&jsonl_in).unwrap().lines().map(String::from).collect();
    lines[4] = lines[4].replace("\"sepal_width\":", "\"sepal_width\":\"wide\",\"was\":");
    lines[9] = "[1, 2, 3, 4]".into();
    std::fs::write(&jsonl_in, lines.join("\n")).unwrap();
    let o = batch(&model_path, &jsonl_in, &jsonl_out, &[]);
    assert!(reason(&o).contains("line 5: feature \"sepal_width\" is not a finite number: \"wide\""), "{}", reason(&o));
    lines[4] = lines[3].clone();
    std::fs::write(&jsonl_in, lines.join("\n")).unwrap();
    let o = batch(&model_path, &jsonl_in, &jsonl_out, &[]);
    assert!(reason(&o).contains("line 10: not a JSON object"), "{}", reason(&o));
    // A JSON null is a missing value, which this model cannot take.
    lines[9] = lines[3].replace("\"petal_width\":0.2", "\"petal_width\":null");
    std::fs::write(&jsonl_in, lines.join("\n")).unwrap();
    let o = batch(&model_path, &jsonl_in, &jsonl_out, &[]);
    assert!(reason(&o).contains("line 10: feature \"petal_width\" is not a finite number: null"), "{}", reason(&o));
    // A format neither named nor implied by the extension.
    let o = batch(&model_path, &dir.join("in.txt"), &jsonl_out, &[]);
    assert!(
        reason(&o).contains("cannot tell the input format of") && reason(&o).contains("csv, jsonl"),
        "{}",
        reason(&o)
    );
    let o = batch(&model_path, &csv_in, &jsonl_out, &["--format", "jsonl"]);
    assert!(reason(&o).contains("line 1: not a JSON object"), "{}", reason(&o));
}

#[test]
fn batch_keeps_the_columns_chosen_and_adds_class_probabilities_on_request() {
    let dir = tmp("batch-keep");
    let (model_path, input) = iris_csv(&dir, "sepal_length,sepal_width,petal_length,petal_width,id,note", |i, r| {
        format!("{},{},{},{},id-{i},n{}", r[0], r[1], r[2], r[3], i % 2)
    });
    let model = Model::new(Artifact::from_slice(&std::fs::read(&model_path).unwrap()).unwrap(), None, None);
    let table = train::iris();
    let proba = model.predict_proba(table.records.view()).unwrap();
    let Ok(Predictions::Classes(classes)) = model.predict(table.records.view()) else { panic!() };

    let output = dir.join("out.csv");
    let o =
        batch(&model_path, &input, &output, &["--keep-columns", "note,id", "--probabilities", "--chunk-rows", "64"]);
    assert!(o.status.success(), "{}", reason(&o));
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let names: Vec<String> = model.class_names().iter().map(|c| format!("probability_{c}")).collect();
    let mut want_header = vec!["note".to_string(), "id".into(), "prediction".into()];
    want_header.extend(names.iter().cloned());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), want_header);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 150);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!((&row[0], &row[1]), (format!("n{}", i % 2).as_str(), format!("id-{i}").as_str()));
        assert_eq!(row[2].parse::<usize>().unwrap(), classes[i], "row {i}");
        for (k, p) in proba.row(i).iter().enumerate() {
            // Written as Rust prints an f64: the shortest text that reads back as the same number.
            assert_eq!(row[3 + k].parse::<f64>().unwrap(), *p, "row {i} class {k}");
        }
    }
    // The same in JSON lines: probabilities as numbers.
    let jsonl = dir.join("out.jsonl");
    assert!(batch(&model_path, &input, &jsonl, &["--keep-columns", "id", "--probabilities"]).status.success());
    let first = &json_lines(&jsonl)[0];
    assert_eq!(first.as_object().unwrap().len(), 2 + names.len());
    assert_eq!(first[&names[0]].as_f64(), Some(proba[[0, 0]]));

    // Refusals, before anything is written.
    let o = batch(&model_path, &input, &output, &["--keep-columns", "id,colour"]);
    assert!(reason(&o).contains("--keep-columns names \"colour\", which the input lacks"), "{}", reason(&o));
    std::fs::write(&input, "sepal_length,sepal_width,petal_length,petal_width,prediction\n1,2,3,4,old\n").unwrap();
    let o = batch(&model_path, &input, &output, &[]);
    assert!(reason(&o).contains("two columns named \"prediction\""), "{}", reason(&o));
    let o = batch(&model_path, &input, &output, &["--keep-columns", "sepal_length"]);
    assert!(o.status.success(), "dropping the old prediction column: {}", reason(&o));
    let linear = dir.join("linear.json");
    let train_csv = dir.join("train.csv");
    std::fs::write(&train_csv, "a,b,y\n1,2,3\n2,1,3\n3,3,6\n4,1,5\n5,2,7\n6,0,6\n").unwrap();
    let o = run(&[
        "train",
        "--csv",
        train_csv.to_str().unwrap(),
        "--target",
        "y",
        "--algorithm",
        "linear",
        "--out",
        linear.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", reason(&o));
    let o = batch(&linear, &train_csv, &output, &["--probabilities"]);
    assert!(reason(&o).contains("probabilities are not available"), "{}", reason(&o));
    assert!(!output.exists() || std::fs::read_to_string(&output).unwrap().starts_with("sepal_length,prediction"));
}

#[test]
fn a_directory_or_pattern_of_files_is_scored_whole_files_to_a_shard_each_row_once() {
    let dir = tmp("batch-many");
    let (model_path, csv_in) = iris_csv(&dir, "id,sepal_length,sepal_width,petal_length,petal_width", |i, r| {
        format!("row-{i},{},{},{},{}", r[0], r[1], r[2], r[3])
    });
    let text = std::fs::read_to_string(&csv_in).unwrap();
    let (header, lines) = text.split_once('\n').unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    let data = dir.join("days");
    std::fs::create_dir_all(&data).unwrap();
    // Three days of rows, one of them as JSON lines, beside files a directory listing leaves out.
    for (k, name) in ["day-1.csv", "day-2.csv", "day-3.csv"].iter().enumerate() {
        let rows = &lines[k * 50..(k + 1) * 50];
        std::fs::write(data.join(name), format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    }
    csv_as_json_lines(&data.join("day-3.csv"), &data.join("day-3.jsonl"));
    std::fs::remove_file(data.join("day-3.csv")).unwrap();
    std::fs::write(data.join("_SUCCESS"), "{}").unwrap();
    std::fs::write(data.join(".day-4.csv.tmp-7"), "partial").unwrap();
    std::fs::write(data.join("notes.txt"), "not data").unwrap();

    let whole = dir.join("whole.csv");
    let o = batch(&model_path, &csv_in, &whole, &[]);
    assert!(o.status.success(), "{}", reason(&o));
    let want: Vec<csv::StringRecord> = csv::Reader::from_path(&whole).unwrap().records().map(|r| r.unwrap()).collect();
    let records = |p: &Path| -> Vec<csv::StringRecord> {
        csv::Reader::from_path(p).unwrap().records().map(|r| r.unwrap()).collect()
    };
    // The directory, in file order: the same rows as the one file they came from.
    let out = dir.join("dir.csv");
    let o = batch(&model_path, &data, &out, &["--chunk-rows", "16"]);
    assert!(o.status.success(), "{}", reason(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("scored 150 rows"));
    let got = records(&out);
    // JSON lines numbers come back as JSON writes them (5.0 for 5), so compare ids and predictions.
    let key = |r: &csv::StringRecord| (r[0].to_string(), r[5].to_string());
    assert_eq!(got.iter().map(key).collect::<Vec<_>>(), want.iter().map(key).collect::<Vec<_>>());
    // Shards take whole files: every row exactly once, for any count.
    for count in [1u32, 2, 3, 5] {
        let mut union = Vec::new();
        for index in 0..count {
            let part = dir.join(format!("many-{index}-of-{count}.csv"));
            let (i, n) = (index.to_string(), count.to_string());
            let o = batch(&model_path, &data, &part, &["--shard-index", &i, "--shard-count", &n]);
            assert!(o.status.success(), "{}", reason(&o));
            let rows = records(&part);
            assert!(rows.len() % 50 == 0, "a shard scores whole files: {} rows", rows.len());
            union.extend(rows.iter().map(key));
        }
        union.sort();
        let mut all: Vec<_> = want.iter().map(key).collect();
        all.sort();
        assert_eq!(union, all, "{count} shards");
    }
    // A pattern (no shell): its matches only.
    let o = batch(&model_path, &data.join("day-[12].csv"), &out, &[]);
    assert!(o.status.success(), "{}", reason(&o));
    assert_eq!(records(&out).len(), 100);
    let o = batch(&model_path, &data.join("day-*.parquet"), &out, &[]);
    assert!(reason(&o).contains("day-*.parquet: no input files"), "{}", reason(&o));

    // A file whose columns differ is named; keeping named columns, extra columns are fine.
    std::fs::write(data.join("day-4.csv"), format!("{header},extra\n{},x\n", lines[0])).unwrap();
    let o = batch(&model_path, &data, &out, &[]);
    assert!(
        reason(&o).contains("day-4.csv: its columns") && reason(&o).contains("name the columns to keep"),
        "{}",
        reason(&o)
    );
    let o = batch(&model_path, &data, &out, &["--keep-columns", "id"]);
    assert!(o.status.success(), "{}", reason(&o));
    assert_eq!(records(&out).len(), 151);
    // A bad row in a later file: the file and its row.
    std::fs::write(data.join("day-4.csv"), format!("{header}\n{}\nrow-x,1,2,three,4\n", lines[0])).unwrap();
    let o = batch(&model_path, &data, &out, &[]);
    assert!(reason(&o).contains("day-4.csv: row 3: column 4 is not a finite number"), "{}", reason(&o));
}

#[test]
fn a_failed_batch_leaves_no_output_and_no_temporary_file() {
    let dir = tmp("batch-atomic");
    let model_path = train_iris(&dir);
    let input = dir.join("in.csv");
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width\n");
    for _ in 0..1000 {
        text.push_str("5.1,3.5,1.4,0.2\n");
    }
    text.push_str("5.1,3.5,oops,0.2\n");
    std::fs::write(&input, text).unwrap();
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("scored.csv");
    let o = batch(&model_path, &input, &output, &["--chunk-rows", "100"]);
    assert!(!o.status.success());
    assert!(reason(&o).contains("row 1002"), "{}", reason(&o));
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a failed run left {left:?}");
    // Shard 1 of 2 holds the bad row; its message says where in the file it is.
    let o = batch(&model_path, &input, &output, &["--shard-index", "1", "--shard-count", "2"]);
    assert!(reason(&o).contains("shard 1 of 2: record 500, byte"), "{}", reason(&o));
}

/// The last line of stderr: the one-line reason a pod's termination message shows.
fn reason(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_model_that_cannot_load_exits_1_with_a_one_line_reason() {
    let dir = tmp("fail");
    let model = train_iris(&dir);
    let m = model.to_str().unwrap();
    let o = run(&["serve", "--model", "/nonexistent/model.json", "--port", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).starts_with("modelship-server: model failed to load: cannot read model file"), "{}", reason(&o));
    let o = run(&["serve", "--model", m, "--sha256", &"0".repeat(64), "--port", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains("checksum mismatch"), "{}", reason(&o));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    v["format_version"] = 2.into();
    let newer = dir.join("newer.json");
    std::fs::write(&newer, v.to_string()).unwrap();
    let o = run(&["serve", "--model", newer.to_str().unwrap(), "--port", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains("newer than this server supports"), "{}", reason(&o));
}

#[test]
fn a_declared_format_must_match_and_load_failures_reach_the_termination_log() {
    let dir = tmp("format");
    let linfa = train_iris(&dir);
    // A protocol-2 pickle whose first opcode names os.system: refused before anything runs.
    let hostile = dir.join("model.pkl");
    std::fs::write(&hostile, b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.").unwrap();
    let log = dir.join("termination-log");
    let serve = |model: &Path, format: &str| {
        std::fs::write(&log, "").unwrap();
        let args = ["serve", "--model", model.to_str().unwrap(), "--model-format", format, "--port", "0"];
        let o = Command::new(BIN).args(args).env("MODELSHIP_TERMINATION_LOG", &log).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", reason(&o));
        let written = std::fs::read_to_string(&log).unwrap();
        // Exactly the reason's one line, the same as stderr's last line.
        assert_eq!(written.trim_end(), reason(&o));
        assert_eq!(written.lines().count(), 1, "{written}");
        written
    };
    let w = serve(&hostile, "linfa");
    assert!(w.contains("model file is a scikit-learn pickle but spec.model.format (--model-format) is linfa"), "{w}");
    let w = serve(&linfa, "sklearn");
    assert!(
        w.contains("is a Modelship (linfa) JSON artifact but spec.model.format (--model-format) is sklearn"),
        "{w}"
    );
    let w = serve(&hostile, "sklearn");
    assert!(w.starts_with("modelship-server: model failed to load: refusing global posix.system"), "{w}");
    // Env as well as flag; a wrong value is refused by name.
    let o = Command::new(BIN)
        .args(["serve", "--model", linfa.to_str().unwrap(), "--port", "0"])
        .env("MODELSHIP_MODEL_FORMAT", "onnx")
        .output()
        .unwrap();
    assert!(reason(&o).contains("is a Modelship (linfa) JSON artifact but spec.model.format"), "{}", reason(&o));
    let o = run(&["serve", "--model", linfa.to_str().unwrap(), "--model-format", "pmml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--model-format"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Serves `body` once per connection on loopback, as a model host would.
async fn http_file_server(body: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn serves_a_model_fetched_over_http_checked_by_sha256() {
    let dir = tmp("http");
    let bytes = std::fs::read(train_iris(&dir)).unwrap();
    let sha = modelship_server::load::sha256_hex(&bytes);
    let port = http_file_server(bytes).await;
    let url = format!("http://127.0.0.1:{port}/models/iris.json");
    let s = serve(&["--model", &url, "--sha256", &sha, "--model-version", "v3"]);
    wait_ready(s.port).await;
    let r = predict(s.port, serde_json::json!({"features": [5.1, 3.5, 1.4, 0.2]})).await;
    assert_eq!(r.headers()["x-model-version"], "v3");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"prediction": [0]}));

    let o = tokio::task::spawn_blocking(move || {
        run(&["serve", "--model", &url, "--sha256", &"f".repeat(64), "--port", "0"])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains("checksum mismatch"), "{}", reason(&o));
}

#[tokio::test]
async fn sigterm_drains_then_exits_0() {
    let dir = tmp("sigterm");
    let model = train_iris(&dir);
    let mut s = serve(&["--model", model.to_str().unwrap(), "--drain-seconds", "1"]);
    wait_ready(s.port).await;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", s.port)).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while draining, so endpoints drop the pod");
    let r = predict(s.port, serde_json::json!({"features": [5.1, 3.5, 1.4, 0.2]})).await;
    assert_eq!(r.status(), 200, "still serving while draining");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn model_sources_are_capped_and_plain_http_needs_a_sha256() {
    let dir = tmp("sources");
    let model = train_iris(&dir);
    let bytes = std::fs::read(&model).unwrap();
    let (len, sha) = (bytes.len(), modelship_server::load::sha256_hex(&bytes));
    let port = http_file_server(bytes).await;
    let url = format!("http://127.0.0.1:{port}/iris.json");
    let serve_once = |args: Vec<String>, env: Option<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.args(["serve", "--port", "0"]).args(&args);
            if let Some((k, v)) = env {
                cmd.env(k, v);
            }
            cmd.output().unwrap()
        })
    };
    let o = serve_once(vec!["--model".into(), url.clone()], None).await.unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains("plain http: give --sha256"), "{}", reason(&o));

    let small = (len - 1).to_string();
    let o = serve_once(
        vec!["--model".into(), url.clone(), "--sha256".into(), sha, "--max-model-bytes".into(), small.clone()],
        None,
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains(&format!("larger than --max-model-bytes ({small} bytes)")), "{}", reason(&o));

    let path = model.to_str().unwrap().to_string();
    let o = serve_once(vec!["--model".into(), path], Some(("MODELSHIP_MAX_MODEL_BYTES", small.clone()))).await.unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(reason(&o).contains(&format!("larger than --max-model-bytes ({small} bytes)")), "{}", reason(&o));
}

#[tokio::test]
async fn limits_are_set_by_flags_or_env() {
    let help = String::from_utf8(run(&["serve", "--help"]).stdout).unwrap();
    for (flag, env) in [
        ("--max-body-bytes", "MODELSHIP_MAX_BODY_BYTES"),
        ("--max-rows", "MODELSHIP_MAX_ROWS"),
        ("--max-concurrent-requests", "MODELSHIP_MAX_CONCURRENT_REQUESTS"),
        ("--request-timeout-seconds", "MODELSHIP_REQUEST_TIMEOUT_SECONDS"),
        ("--header-read-timeout-seconds", "MODELSHIP_HEADER_READ_TIMEOUT_SECONDS"),
        ("--max-connections", "MODELSHIP_MAX_CONNECTIONS"),
        ("--max-model-bytes", "MODELSHIP_MAX_MODEL_BYTES"),
    ] {
        assert!(help.contains(flag) && help.contains(&format!("env: {env}=")), "{flag} / {env} in:\n{help}");
    }
    let o = run(&["serve", "--model", "x", "--max-concurrent-requests", "0"]);
    assert_eq!(o.status.code(), Some(2), "zero permits is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-concurrent-requests"));

    let dir = tmp("limits");
    let model = train_iris(&dir);
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--model", model.to_str().unwrap()])
        .env("MODELSHIP_MAX_ROWS", "1")
        .args(["--max-body-bytes", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Serving { child, port };
    wait_ready(s.port).await;
    let row = [5.1, 3.5, 1.4, 0.2];
    let r = predict(s.port, serde_json::json!({"features": [row, row]})).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("limit of 1 rows"));
    let r = predict(s.port, serde_json::json!({"features": vec![row; 20]})).await;
    assert_eq!(r.status(), 413, "the flag's body limit");
}
