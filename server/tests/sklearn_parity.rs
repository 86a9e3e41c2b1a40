//! Parity with real scikit-learn: `tests/sklearn/gen.py` fits every supported estimator with two
//! scikit-learn versions (venvs made by `tests/sklearn/venv`), saves each in every file format,
//! and writes scikit-learn's predictions; the Rust reader must agree exactly on classes and within
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

/// Compares one file's predictions with scikit-learn's; returns what differs.
fn check_file(path: &Path, m: &Value, version: &str) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let model = SklearnModel::from_bytes(&bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let x = rows(&m["x"]);
    let expected = m["predict"].as_array().ok_or("no predictions")?;
    match model.predict(x.view()).map_err(|e| e.to_string())? {
        Prediction::Classes(ids) => {
            let labels = serde_json::to_value(model.classes()).map_err(|e| e.to_string())?;
            if labels != m["classes"] {
                return Err(format!("classes {labels} != {}", m["classes"]));
            }
            let got: Vec<Value> = ids.iter().map(|&i| labels[i].clone()).collect();
            if let Some(i) = (0..expected.len()).find(|&i| got.get(i) != expected.get(i)) {
                return Err(format!("row {i}: class {} != {}", got[i], expected[i]));
            }
        }
        Prediction::Values(v) => {
            let d = max_diff(v.iter().copied(), expected.iter().map(|e| e.as_f64().unwrap_or(f64::NAN)));
            if d > TOLERANCE || v.len() != expected.len() {
                return Err(format!("regression values differ by {d:e}"));
            }
        }
    }
    match (m["proba"].as_array(), model.predict_proba(x.view())) {
        (Some(want), Ok(got)) => {
            let want =
                want.iter().flat_map(|r| r.as_array().into_iter().flatten().map(|v| v.as_f64().unwrap_or(f64::NAN)));
            let d = max_diff(got.iter().copied(), want);
            if d > TOLERANCE || got.len() != m["proba"].as_array().map_or(0, |r| r.len()) * model.classes().len() {
                return Err(format!("probabilities differ by {d:e}"));
            }
        }
        (None, Err(_)) => {}
        (Some(_), Err(e)) => return Err(format!("predict_proba failed: {e}")),
        (None, Ok(_)) => return Err("predict_proba works where scikit-learn has none".into()),
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
            for file in m["files"].as_object().expect("files").values() {
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

/// The real binary serves a compressed joblib file over HTTP and answers as scikit-learn does.
#[tokio::test]
async fn serve_answers_predict_like_scikit_learn() {
    let (version, dir) = &generated()[0];
    let manifest = manifest(dir);
    let m = manifest["models"].as_array().expect("models").iter().find(|m| m["name"] == "logistic_strings_named");
    let m = m.expect("logistic_strings_named generated");
    let file = dir.join(m["files"]["joblib-zlib3.joblib"].as_str().expect("file"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelship-server"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--model"])
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .expect("start modelship-server");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(std::time::Instant::now() < deadline, "server never became ready");
        assert!(child.try_wait().expect("child status").is_none(), "server exited");
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
        "{version}"
    );
    let want = m["proba"].as_array().expect("proba")[..50].iter().flat_map(|r| r.as_array().into_iter().flatten());
    let have =
        got["probabilities"].as_array().expect("probabilities").iter().flat_map(|r| r.as_array().into_iter().flatten());
    let d = max_diff(have.map(|v| v.as_f64().unwrap_or(f64::NAN)), want.map(|v| v.as_f64().unwrap_or(f64::NAN)));
    assert!(d <= TOLERANCE, "probabilities differ by {d:e}");
    let meta: Value = client
        .get(format!("{base}/v2/models/logisticregression"))
        .send()
        .await
        .expect("meta")
        .json()
        .await
        .expect("JSON");
    assert_eq!(meta["outputs"][1]["name"], "predict_proba", "{meta}");
    let _ = child.kill().await;
}
