//! Parity with real scikit-learn: `tests/sklearn/gen.py` fits every supported estimator with two
//! scikit-learn versions (venvs made by `tests/sklearn/venv`), saves each in every file format
//! ([`FORMATS`]: pickle protocols 2 to 5, joblib plain and compressed, cloudpickle, skops), and
//! writes scikit-learn's predictions; the Rust reader must agree exactly on classes and within
//! 1e-9 on probabilities and regression values.
//!
//! The generated files are cached under the cargo target's temp dir, keyed by a hash of the
//! generator, the venv script and the venv's interpreter path.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "sklearn/common.rs"]
mod common;
use common::{here, venvs};

use modelship_server::sklearn::{Limits, Prediction, SklearnModel};
use ndarray::Array2;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOLERANCE: f64 = 1e-9;

/// The files gen.py writes for every model (a format missing from a model fails the test).
const FORMATS: [&str; 12] = [
    "pickle2.pkl",
    "pickle3.pkl",
    "pickle4.pkl",
    "pickle5.pkl",
    "joblib.joblib",
    "joblib-zlib3.joblib",
    "joblib-gzip.joblib",
    "joblib-xz.joblib",
    "joblib-lzma.joblib",
    "cloudpickle.pkl",
    "skops.skops",
    "skops-deflate.skops",
];

/// The generated files of every venv, as (scikit-learn version, directory), made once per process.
fn generated() -> &'static [(String, PathBuf)] {
    static DIRS: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
    DIRS.get_or_init(|| venvs().into_iter().map(|(v, python)| (v.clone(), generate(&v, &python))).collect())
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("manifest JSON")
}

/// Runs the generator for one venv, or reuses its earlier output.
fn generate(version: &str, python: &Path) -> PathBuf {
    let mut h = Sha256::new();
    for f in ["gen.py", "venv"] {
        h.update(std::fs::read(here().join(f)).expect("read generator"));
    }
    h.update(python.as_os_str().as_encoded_bytes());
    let key = hex::encode(&h.finalize()[..8]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sklearn-{version}-{key}"));
    if dir.join("manifest.json").exists() {
        return dir;
    }
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(python).arg(here().join("gen.py")).arg(&tmp).output().expect("run gen.py");
    assert!(
        out.status.success(),
        "gen.py with scikit-learn {version} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).expect("move generated files into place");
    // Drop what older generators left.
    let prefix = format!("sklearn-{version}-");
    for old in std::fs::read_dir(Path::new(env!("CARGO_TARGET_TMPDIR"))).into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && old.path() != dir {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    dir
}

fn rows(x: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = x
        .as_array()
        .expect("x rows")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
        .collect();
    let n = rows.first().map_or(0, Vec::len);
    Array2::from_shape_vec((rows.len(), n), rows.concat()).expect("rectangular rows")
}

/// Largest absolute difference; a NaN on one side only counts as infinite.
fn max_diff(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    a.zip(b)
        .map(|(x, y)| match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (false, false) => (x - y).abs(),
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}

/// Compares predict (and predict_proba where scikit-learn has it) on rows `x` with scikit-learn's.
fn check_rows(
    model: &SklearnModel,
    x: ndarray::ArrayView2<'_, f64>,
    expected: &[Value],
    proba: Option<&[Value]>,
    (labels, m_classes): (&Value, &Value),
) -> Result<(), String> {
    match model.predict(x).map_err(|e| e.to_string())? {
        Prediction::Classes(ids) => {
            if labels != m_classes {
                return Err(format!("classes {labels} != {m_classes}"));
            }
            let got: Vec<Value> = ids.iter().map(|&i| labels[i].clone()).collect();
            if let Some(i) = (0..expected.len()).find(|&i| got.get(i) != expected.get(i)) {
                return Err(format!("row {i}: class {:?} != {}", got.get(i), expected[i]));
            }
        }
        Prediction::Values(v) => {
            let d = max_diff(v.iter().copied(), expected.iter().map(|e| e.as_f64().unwrap_or(f64::NAN)));
            if d > TOLERANCE || v.len() != expected.len() {
                return Err(format!("regression values differ by {d:e}"));
            }
        }
    }
    match (proba, model.predict_proba(x)) {
        (Some(want), Ok(got)) => {
            let n = want.len();
            let want =
                want.iter().flat_map(|r| r.as_array().into_iter().flatten().map(|v| v.as_f64().unwrap_or(f64::NAN)));
            let d = max_diff(got.iter().copied(), want);
            if d > TOLERANCE || got.len() != n * model.classes().len() {
                return Err(format!("probabilities differ by {d:e}"));
            }
        }
        (None, Err(_)) => {}
        (Some(_), Err(e)) => return Err(format!("predict_proba failed: {e}")),
        (None, Ok(_)) => return Err("predict_proba works where scikit-learn has none".into()),
    }
    Ok(())
}

/// Compares one file's predictions with scikit-learn's; returns what differs.
fn check_file(path: &Path, m: &Value, version: &str) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let model = SklearnModel::from_bytes(&bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let x = rows(&m["x"]);
    let expected = m["predict"].as_array().ok_or("no predictions")?;
    let labels = serde_json::to_value(model.classes()).map_err(|e| e.to_string())?;
    let proba = m["proba"].as_array().map(Vec::as_slice);
    check_rows(&model, x.view(), expected, proba, (&labels, &m["classes"]))?;
    // A few rows at a time as well as all of them: trees walk rows or trees side by side depending
    // on how many rows a call has (a single-row /predict is the common case).
    for (start, len) in [(0, 1), (1, 1), (2, 3), (5, 7), (12, 9)] {
        let end = start + len;
        if end > x.nrows() {
            break;
        }
        let part = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(start..end));
        check_rows(&model, part, &expected[start..end], proba.map(|p| &p[start..end]), (&labels, &m["classes"]))
            .map_err(|e| format!("rows {start}..{end} alone: {e}"))?;
    }
    let encoding = if path.extension().is_some_and(|e| e == "skops") { "skops" } else { "pickle" };
    if path.extension().is_some_and(|e| e != "joblib") && model.describe()["encoding"] != encoding {
        return Err(format!("encoding {} instead of {encoding}", model.describe()["encoding"]));
    }
    if model.describe()["sklearn_version"] != version {
        return Err(format!("sklearn_version {}", model.describe()["sklearn_version"]));
    }
    if !m["feature_names"].is_null() && serde_json::json!(model.feature_names()) != m["feature_names"] {
        return Err(format!("feature names {:?} != {}", model.feature_names(), m["feature_names"]));
    }
    Ok(())
}

#[test]
fn predictions_match_scikit_learn_for_every_estimator_and_file_format() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (version, dir) in generated() {
        let manifest = manifest(dir);
        let models = manifest["models"].as_array().expect("models");
        assert!(models.len() >= 25, "scikit-learn {version}: only {} models generated", models.len());
        for m in models {
            let files = m["files"].as_object().expect("files");
            let mut have: Vec<&str> = files.keys().map(String::as_str).collect();
            let mut want = FORMATS.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            assert_eq!(have, want, "scikit-learn {version} {}: formats", m["name"]);
            for file in files.values() {
                let file = file.as_str().expect("file name");
                checked += 1;
                if let Err(e) = check_file(&dir.join(file), m, version) {
                    failures.push(format!("scikit-learn {version} {file}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} files differ:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} files match scikit-learn");
}

/// The real binary serves a compressed joblib file and a skops file over HTTP and answers as
/// scikit-learn does.
#[tokio::test]
async fn serve_answers_predict_like_scikit_learn() {
    let (version, dir) = &generated()[0];
    let manifest = manifest(dir);
    let m = manifest["models"].as_array().expect("models").iter().find(|m| m["name"] == "logistic_strings_named");
    let m = m.expect("logistic_strings_named generated");
    for format in ["joblib-zlib3.joblib", "skops.skops"] {
        let file = dir.join(m["files"][format].as_str().expect("file"));
        serve_and_compare(&file, m, &format!("{version} {format}")).await;
    }
}

async fn serve_and_compare(file: &Path, m: &Value, what: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelship-server"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--model"])
        .arg(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start modelship-server");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(std::time::Instant::now() < deadline, "{what}: server never became ready");
        assert!(child.try_wait().expect("child status").is_none(), "{what}: server exited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rows: Vec<Value> = m["x"].as_array().expect("rows")[..50].to_vec();
    let body = serde_json::json!({ "features": rows });
    let resp = client.post(format!("{base}/predict?proba=true&labels=true")).json(&body).send().await.expect("predict");
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.expect("JSON");
    assert_eq!(
        got["labels"].as_array().expect("labels")[..],
        m["predict"].as_array().expect("predict")[..50],
        "{what}"
    );
    let want = m["proba"].as_array().expect("proba")[..50].iter().flat_map(|r| r.as_array().into_iter().flatten());
    let have =
        got["probabilities"].as_array().expect("probabilities").iter().flat_map(|r| r.as_array().into_iter().flatten());
    let d = max_diff(have.map(|v| v.as_f64().unwrap_or(f64::NAN)), want.map(|v| v.as_f64().unwrap_or(f64::NAN)));
    assert!(d <= TOLERANCE, "{what}: probabilities differ by {d:e}");
    let meta: Value = client
        .get(format!("{base}/v2/models/logisticregression"))
        .send()
        .await
        .expect("meta")
        .json()
        .await
        .expect("JSON");
    assert_eq!(meta["outputs"][1]["name"], "predict_proba", "{what}: {meta}");
    assert_eq!(meta["outputs"][0]["datatype"], "BYTES", "string labels: {meta}");
    // feature_names_in_ name the V2 input's features, and /predict takes rows by those names.
    assert_eq!(meta["inputs"][0]["parameters"]["feature_names"], m["feature_names"], "{what}: {meta}");
    let names: Vec<String> = serde_json::from_value(m["feature_names"].clone()).expect("feature names");
    let named: Vec<Value> = rows
        .iter()
        .map(|r| Value::Object(names.iter().cloned().zip(r.as_array().cloned().unwrap_or_default()).rev().collect()))
        .collect();
    let got: Value = client
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({ "features": named }))
        .send()
        .await
        .expect("predict")
        .json()
        .await
        .expect("JSON");
    assert_eq!(got["prediction"].as_array().expect("prediction")[..], m["predict"].as_array().expect("predict")[..50]);

    // By default /predict answers the labels themselves, as scikit-learn's predict does.
    let body = serde_json::json!({ "features": rows });
    let got: Value =
        client.post(format!("{base}/predict")).json(&body).send().await.expect("predict").json().await.expect("JSON");
    assert_eq!(got["prediction"].as_array().expect("prediction")[..], m["predict"].as_array().expect("predict")[..50]);
    // V2: the labels as a BYTES tensor, in JSON and in the binary tensor data extension.
    let flat: Vec<Value> = rows.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).collect();
    let width = flat.len() / rows.len();
    let infer = |binary: bool| {
        serde_json::json!({"inputs": [{"name": "x", "shape": [rows.len(), width], "datatype": "FP64", "data": flat}],
                           "outputs": [{"name": "predict", "parameters": {"binary_data": binary}}]})
    };
    let url = format!("{base}/v2/models/logisticregression/infer");
    let got: Value = client.post(&url).json(&infer(false)).send().await.expect("infer").json().await.expect("JSON");
    assert_eq!(got["outputs"][0]["datatype"], "BYTES", "{got}");
    assert_eq!(
        got["outputs"][0]["data"].as_array().expect("data")[..],
        m["predict"].as_array().expect("predict")[..50]
    );
    let resp = client.post(&url).json(&infer(true)).send().await.expect("infer");
    let header: usize =
        resp.headers()["inference-header-content-length"].to_str().expect("header").parse().expect("len");
    let bytes = resp.bytes().await.expect("body");
    let (mut blob, mut labels) = (&bytes[header..], Vec::new());
    while let [a, b, c, d, rest @ ..] = blob {
        let n = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        labels.push(Value::from(String::from_utf8(rest[..n].to_vec()).expect("utf-8 label")));
        blob = &rest[n..];
    }
    assert_eq!(labels[..], m["predict"].as_array().expect("predict")[..50]);
    let _ = child.kill().await;
}

/// Posts `body` to the router; the status and the JSON answer.
async fn post(
    state: &std::sync::Arc<modelship_server::http::AppState>,
    uri: &str,
    json_len: Option<usize>,
    body: Vec<u8>,
) -> (u16, Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::post(uri).header("content-type", "application/json");
    if let Some(n) = json_len {
        req = req.header("inference-header-content-length", n);
    }
    let req = req.body(axum::body::Body::from(body)).expect("request");
    let resp = modelship_server::router::app(state.clone()).oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// Whether `got` is scikit-learn's `predict` of model `m`: equal labels, values within the tolerance.
fn same_predictions(got: &Value, m: &Value) -> bool {
    let want = &m["predict"];
    if !m["classes"].is_null() {
        return got == want;
    }
    let got = got.as_array().into_iter().flatten().map(|v| v.as_f64().unwrap_or(f64::NAN));
    max_diff(got, want.as_array().into_iter().flatten().map(|v| v.as_f64().unwrap_or(f64::NAN))) <= TOLERANCE
}

/// `/predict` through the router answers with scikit-learn's labels, and takes `null` for a
/// missing value exactly where scikit-learn's `predict` takes NaN (every model, both versions),
/// with its predictions for those rows (also as NaN in V2 binary tensor data); elsewhere a null is
/// a 400 naming the row and the feature.
#[tokio::test]
async fn http_predict_answers_labels_and_takes_null_where_scikit_learn_takes_nan() {
    let (mut served_nan, mut refused_nan, mut failures) = (0, 0, Vec::new());
    for (version, dir) in generated() {
        for m in manifest(dir)["models"].as_array().expect("models") {
            let file = m["files"].as_object().and_then(|f| f.values().next()).and_then(Value::as_str).expect("file");
            let bytes = std::fs::read(dir.join(file)).expect("read model");
            let model = modelship_server::sklearn::format::read_artifact(&bytes).expect("readable model");
            let model = modelship_server::model::Model::new(model, None, None);
            let (handles_nan, model_name) = (model.handles_nan(), model.name.clone());
            let state = modelship_server::http::AppState::with_model(model, Default::default());
            let name = format!("scikit-learn {version} {}", m["name"]);
            let accepts_nan = m["accepts_nan"].as_bool().expect("accepts_nan");
            if handles_nan != accepts_nan {
                failures.push(format!("{name}: takes NaN {handles_nan}, scikit-learn's predict {accepts_nan}"));
                continue;
            }
            if !accepts_nan {
                refused_nan += 1;
                let mut row = m["x"][0].clone();
                row[1] = Value::Null;
                let body = serde_json::json!({ "features": [m["x"][1], row] }).to_string().into_bytes();
                let (status, body) = post(&state, "/predict", None, body).await;
                let e = body["error"].as_str().unwrap_or_default();
                if status != 400 || !(e.starts_with("row 1") && e.contains("missing value")) {
                    failures.push(format!("{name}: a null gave {status} {body}"));
                }
            }
            let body = serde_json::json!({ "features": m["x"] }).to_string().into_bytes();
            let (status, body) = post(&state, "/predict", None, body).await;
            if status != 200 || !same_predictions(&body["prediction"], m) {
                failures.push(format!("{name}: {status}, prediction differs from scikit-learn's"));
            }
            let has_null =
                m["x"].as_array().into_iter().flatten().flat_map(|r| r.as_array()).flatten().any(Value::is_null);
            if !has_null {
                if accepts_nan && !m["name"].as_str().is_some_and(|n| n.ends_with("_at_thresholds")) {
                    failures.push(format!("{name}: takes NaN but its held-out rows have none"));
                }
                continue;
            }
            served_nan += 1;
            // The same rows as V2 binary FP64 data, where a missing value is a NaN.
            let x = rows(&m["x"]);
            let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            let header =
                serde_json::json!({"inputs": [{"name": "x", "shape": [x.nrows(), x.ncols()], "datatype": "FP64",
                "parameters": {"binary_data_size": data.len()}}]})
                .to_string();
            let json_len = header.len();
            let uri = format!("/v2/models/{model_name}/infer");
            let (status, body) = post(&state, &uri, Some(json_len), [header.into_bytes(), data].concat()).await;
            if status != 200 || !same_predictions(&body["outputs"][0]["data"], m) {
                failures.push(format!("{name}: V2 with NaN gave {status}, not scikit-learn's predictions"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Trees, forests, HistGradientBoosting and the imputing pipelines take NaN; linear models and
    // GradientBoosting (and, before 1.9, trees with monotonic constraints) refuse it.
    assert!(served_nan >= 20 && refused_nan >= 20, "served {served_nan} models with nulls, refused {refused_nan}");
}

/// `inspect` and `batch` of a skops file, through the real binary, as for a pickle.
#[test]
fn inspect_and_batch_read_a_skops_file() {
    let (version, dir) = &generated()[0];
    let manifest = manifest(dir);
    let m = manifest["models"].as_array().expect("models").iter().find(|m| m["name"] == "logistic_strings_named");
    let m = m.expect("logistic_strings_named generated");
    let file = dir.join(m["files"]["skops.skops"].as_str().expect("file"));
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_modelship-server")).args(args).output().expect("run binary");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let meta: Value = serde_json::from_slice(&run(&["inspect".as_ref(), file.as_os_str()])).expect("inspect JSON");
    assert_eq!((&meta["encoding"], &meta["class"]), (&"skops".into(), &"LogisticRegression".into()), "{meta}");
    // A joblib forest: its classes and its trees.
    let forest =
        manifest["models"].as_array().expect("models").iter().find(|m| m["name"] == "random_forest_classifier");
    let forest = forest.expect("random_forest_classifier generated");
    let forest_file = dir.join(forest["files"]["joblib-zlib3.joblib"].as_str().expect("file"));
    let fmeta: Value = serde_json::from_slice(&run(&["inspect".as_ref(), forest_file.as_os_str()])).expect("JSON");
    assert_eq!((&fmeta["class"], &fmeta["encoding"]), (&"RandomForestClassifier".into(), &"zlib".into()), "{fmeta}");
    assert_eq!(fmeta["trees"]["trees"], 15, "{fmeta}");
    assert_eq!(fmeta["classes"], serde_json::json!([0, 1, 2]), "{fmeta}");
    assert_eq!(
        (&meta["feature_names"], &meta["sklearn_version"]),
        (&m["feature_names"], &Value::from(version.as_str()))
    );
    let names: Vec<&str> = m["feature_names"].as_array().expect("names").iter().filter_map(Value::as_str).collect();
    let mut csv = names.join(",") + "\n";
    for row in rows(&m["x"]).outer_iter() {
        csv += &(row.iter().map(f64::to_string).collect::<Vec<_>>().join(",") + "\n");
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("skops-batch-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let (input, output) = (work.join("in.csv"), work.join("out.csv"));
    std::fs::write(&input, csv).expect("write input");
    let batch = ["batch", "--model"].map(std::ffi::OsStr::new);
    run(&[
        &batch[..],
        &[file.as_os_str(), "--input".as_ref(), input.as_os_str(), "--output".as_ref(), output.as_os_str()],
    ]
    .concat());
    let out = std::fs::read_to_string(&output).expect("batch output");
    let _ = std::fs::remove_dir_all(&work);
    // batch writes the labels themselves, as scikit-learn's predict (and /predict) answers them.
    let predicted: Vec<&str> = out.lines().skip(1).filter_map(|l| l.rsplit(',').next()).collect();
    let label = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let want: Vec<String> = m["predict"].as_array().expect("predict").iter().map(label).collect();
    assert_eq!((predicted.len(), want.len()), (1000, 1000));
    assert!(predicted.iter().zip(&want).all(|(p, w)| p == w), "batch predictions differ from scikit-learn's");
}
