//! Parity with onnxruntime: `tests/onnx/gen.py` exports scikit-learn models with skl2onnx (venv
//! from `tests/onnx/venv`) and records onnxruntime's outputs for 1,000 held-out rows; tract must
//! agree within 1e-5 on every output, in process and through the real server's V2 API by name.
//! Broken files from the same generator must each fail to load with their own one-line error.
//!
//! The generated files are cached under the cargo target's temp dir, keyed by a hash of the
//! generator, the venv script and the venv's interpreter path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use modelship_server::onnx::{OnnxModel, tensors};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

const TOLERANCE: f64 = 1e-5;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx")
}

/// The venv's python; fails (never skips) saying how to create it.
fn python() -> PathBuf {
    let out = Command::new(here().join("venv")).arg("--check").output().expect("run tests/onnx/venv");
    assert!(
        out.status.success(),
        "ONNX venv missing: {}(run server/tests/onnx/venv once; it caches it under ~/.cache/modelship)",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The generated directory, made once per process (and reused across runs by content hash).
fn generated() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let python = python();
        let mut h = Sha256::new();
        for f in ["gen.py", "venv"] {
            h.update(std::fs::read(here().join(f)).expect("read generator"));
        }
        h.update(python.as_os_str().as_encoded_bytes());
        let key = hex::encode(&h.finalize()[..8]);
        let tmpdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmpdir.join(format!("onnx-{key}"));
        if dir.join("manifest.json").exists() {
            return dir;
        }
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let out = Command::new(&python).arg(here().join("gen.py")).arg(&tmp).output().expect("run gen.py");
        assert!(out.status.success(), "gen.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).expect("move generated files into place");
        for old in std::fs::read_dir(tmpdir).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with("onnx-") && old.path() != dir {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        dir
    })
}

fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(generated().join("manifest.json")).expect("manifest")).expect("JSON")
}

fn model_named(manifest: &Value, name: &str) -> Value {
    let models = manifest["models"].as_array().expect("models");
    models.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name} generated")).clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

/// The largest absolute difference between two outputs, or an error if their sizes differ.
fn max_diff(have: &[f64], want: &[f64]) -> Result<f64, String> {
    if have.len() != want.len() {
        return Err(format!("{} values, onnxruntime has {}", have.len(), want.len()));
    }
    Ok(have.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
}

/// Compares one of our outputs (JSON data, shape) to onnxruntime's, naming what differs.
fn compare(model: &str, want: &Value, shape: &[usize], data: &Value) -> Result<f64, String> {
    let name = want["name"].as_str().unwrap_or("?");
    let want_shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).expect("shape");
    if shape != want_shape {
        return Err(format!("{model} {name}: shape {shape:?}, onnxruntime {want_shape:?}"));
    }
    let d = max_diff(&floats(data), &floats(&want["data"])).map_err(|e| format!("{model} {name}: {e}"))?;
    if d > TOLERANCE {
        return Err(format!("{model} {name}: differs from onnxruntime by {d:e}"));
    }
    Ok(d)
}

#[test]
fn tract_matches_onnxruntime_on_every_exported_model() {
    let manifest = manifest();
    let (mut failures, mut worst) = (Vec::new(), 0f64);
    let models = manifest["models"].as_array().expect("models");
    for m in models {
        let name = m["name"].as_str().expect("name");
        let bytes = std::fs::read(generated().join(m["file"].as_str().expect("file"))).expect("model file");
        let model = match OnnxModel::from_bytes(&bytes) {
            Ok(model) => model,
            Err(e) => {
                failures.push(format!("{name} ({:?}): does not load: {e}", m["ops"]));
                continue;
            }
        };
        // Missing values are JSON nulls in the manifest (NaN is not JSON): NaN, as onnxruntime had.
        let x: Vec<Vec<Option<f64>>> = serde_json::from_value(m["x"].clone()).expect("rows");
        let flat: Vec<f64> = x.iter().flatten().map(|v| v.unwrap_or(f64::NAN)).collect();
        let input = model.inputs[0].tensor(&[x.len(), x[0].len()], &flat).expect("input tensor");
        let out = match model.run(tvec![input.into_tvalue()]) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{name}: does not run: {e}"));
                continue;
            }
        };
        for (want, have) in m["outputs"].as_array().expect("outputs").iter().zip(&out) {
            let (_, shape, data) = tensors::output_json(have).expect("output");
            match compare(name, want, &shape, &data) {
                Ok(d) => worst = worst.max(d),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{} models match onnxruntime (largest difference {worst:e})", models.len());
}

#[test]
fn broken_files_are_refused_with_their_reason() {
    let manifest = manifest();
    for case in manifest["hostile"].as_array().expect("hostile") {
        let bytes = std::fs::read(generated().join(case["file"].as_str().expect("file"))).expect("file");
        let want = case["want"].as_str().expect("want");
        let e = OnnxModel::from_bytes(&bytes).expect_err(case["name"].as_str().expect("name")).to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{}: {e:?} lacks {want:?}", case["name"]);
    }
}

/// `inspect` prints the graph's interface and ops; a broken file is one line and exit status 1.
#[test]
fn inspect_prints_inputs_outputs_and_ops() {
    let manifest = manifest();
    let m = model_named(&manifest, "scaler_logistic-float32");
    let out = Command::new(env!("CARGO_BIN_EXE_modelship-server"))
        .arg("inspect")
        .arg(generated().join(m["file"].as_str().expect("file")))
        .output()
        .expect("run inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(meta["inputs"], json!([{"name": "X", "datatype": "FP32", "shape": [-1, 6]}]), "{meta}");
    assert_eq!(meta["outputs"][0], json!({"name": "label", "datatype": "INT64", "shape": [-1]}), "{meta}");
    assert_eq!(meta["ops"], json!({"LinearClassifier": 1, "Normalizer": 1, "Scaler": 1}), "{meta}");

    for (file, want) in [
        ("hostile-child-out-of-range.onnx", "has child 1000000"),
        ("hostile-garbage.onnx", "not a valid ONNX model"),
        ("hostile-unknown-op.onnx", "ONNX operator Frobnicate"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_modelship-server"))
            .arg("inspect")
            .arg(generated().join(file))
            .output()
            .expect("run inspect");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        let reason: Vec<&str> = stderr.lines().filter(|l| l.starts_with("modelship-server: ")).collect();
        assert!(reason.len() == 1 && reason[0].contains(want), "{file}: {stderr}");
    }
}

/// `batch` scores an ONNX file like `serve`: the label column is onnxruntime's label, the
/// regressor's column its value, every input column kept.
#[test]
fn batch_scores_onnx_models_like_onnxruntime() {
    let manifest = manifest();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("onnx-batch-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    for name in ["forest_classifier-float32", "mlp_classifier-float64", "forest_regressor-float32"] {
        let m = model_named(&manifest, name);
        let x: Vec<Vec<f64>> = serde_json::from_value(m["x"].clone()).expect("rows");
        let mut csv = (0..x[0].len()).map(|i| format!("x{i}")).collect::<Vec<_>>().join(",") + "\n";
        for row in &x {
            csv += &(row.iter().map(f64::to_string).collect::<Vec<_>>().join(",") + "\n");
        }
        let (input, output) = (work.join(format!("{name}.csv")), work.join(format!("{name}-scored.csv")));
        std::fs::write(&input, csv).expect("write input");
        let out = Command::new(env!("CARGO_BIN_EXE_modelship-server"))
            .arg("batch")
            .arg("--model")
            .arg(generated().join(m["file"].as_str().expect("file")))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .output()
            .expect("run batch");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let scored = std::fs::read_to_string(&output).expect("scored CSV");
        let mut lines = scored.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(header.last(), Some(&"prediction"), "{name}: {header:?}");
        assert_eq!(header.len(), x[0].len() + 1, "{name}: every input column kept");
        let got: Vec<f64> =
            lines.map(|l| l.rsplit(',').next().and_then(|v| v.parse().ok()).expect("a number")).collect();
        let want = floats(&m["outputs"][0]["data"]);
        let d = max_diff(&got, &want).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(d <= TOLERANCE, "{name}: batch differs from onnxruntime by {d:e}");
    }
}

/// A running `modelship-server serve` on a free loopback port, killed on drop.
struct Server {
    child: tokio::process::Child,
    base: String,
}

async fn serve(file: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelship-server"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--name", "m", "--model"])
        .arg(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start modelship-server");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "server never became ready");
        assert!(child.try_wait().expect("child status").is_none(), "server exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, base }
}

/// The real binary serves the forest and the MLP: V2 metadata shows the graph's tensors, V2
/// infer by name matches onnxruntime, and the classic `/predict` returns the label output.
#[tokio::test]
async fn the_server_answers_v2_by_name_like_onnxruntime() {
    let manifest = manifest();
    let client = reqwest::Client::new();
    // The HistGradientBoosting rows have missing values (JSON null: NaN, where the trees send them).
    for name in [
        "forest_classifier-float32",
        "mlp_classifier-float64",
        "forest_regressor-float32",
        "hist_boosting_binary-float32",
    ] {
        let m = model_named(&manifest, name);
        let mut server = serve(&generated().join(m["file"].as_str().expect("file"))).await;
        let base = &server.base;
        let meta: Value =
            client.get(format!("{base}/v2/models/m")).send().await.expect("meta").json().await.expect("JSON");
        assert_eq!(meta["inputs"], json!([{"name": "X", "datatype": m["datatype"], "shape": [-1, 6]}]), "{meta}");
        let want_outputs = m["outputs"].as_array().expect("outputs");
        let names: Vec<&Value> = want_outputs.iter().map(|o| &o["name"]).collect();
        let got_names: Vec<&Value> = meta["outputs"].as_array().expect("outputs").iter().map(|o| &o["name"]).collect();
        assert_eq!(got_names, names, "{meta}");

        let body = json!({"id": "r1", "inputs": [{"name": "X", "shape": [1000, 6], "datatype": m["datatype"], "data": m["x"]}]});
        let resp = client.post(format!("{base}/v2/models/m/infer")).json(&body).send().await.expect("infer");
        let status = resp.status();
        let got: Value = resp.json().await.expect("JSON");
        assert_eq!(status, 200, "{name}: {got}");
        assert_eq!(got["id"], "r1");
        for want in want_outputs {
            let have = got["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == want["name"]);
            let have = have.unwrap_or_else(|| panic!("{name}: output {} missing: {got}", want["name"]));
            let shape: Vec<usize> = serde_json::from_value(have["shape"].clone()).expect("shape");
            compare(name, want, &shape, &have["data"]).unwrap_or_else(|e| panic!("{e}"));
        }

        // One output by name; a wrong datatype is refused naming both.
        let mut one = body.clone();
        one["outputs"] = json!([{"name": want_outputs[0]["name"]}]);
        let got: Value = client
            .post(format!("{base}/v2/models/m/infer"))
            .json(&one)
            .send()
            .await
            .expect("infer")
            .json()
            .await
            .expect("JSON");
        assert_eq!(got["outputs"].as_array().map(Vec::len), Some(1), "{got}");
        let mut wrong = body.clone();
        wrong["inputs"][0]["datatype"] = json!("INT32");
        let resp = client.post(format!("{base}/v2/models/m/infer")).json(&wrong).send().await.expect("infer");
        assert_eq!(resp.status(), 400);
        let e = resp.text().await.expect("body");
        assert!(e.contains("datatype INT32 given") && e.contains(m["datatype"].as_str().expect("dt")), "{e}");

        // A null is a missing value: taken by the graph that routes NaN, refused (naming it) by the others.
        let mut missing = body.clone();
        missing["inputs"][0]["data"][0][1] = Value::Null;
        let resp = client.post(format!("{base}/v2/models/m/infer")).json(&missing).send().await.expect("infer");
        let (status, e) = (resp.status(), resp.text().await.expect("body"));
        if name.starts_with("hist_") {
            assert_eq!(status, 200, "{name}: {e}");
        } else {
            assert_eq!(status, 400, "{name}: {e}");
            assert!(e.contains("row 0, feature 1: missing value"), "{name}: {e}");
        }

        // Binary tensor data (tritonclient's default; tests/v2-clients checks the client itself):
        // a size the shape does not need, or more bytes than were sent, is a 400 naming it.
        let need = if m["datatype"] == "FP32" { 24 } else { 48 };
        for (declared, sent, want) in [(need - 1, need - 1, "binary_data_size is"), (need, need - 1, "exceeds the")] {
            let header = json!({"inputs": [{"name": "X", "shape": [1, 6], "datatype": m["datatype"],
                                             "parameters": {"binary_data_size": declared}}]})
            .to_string();
            let mut body = header.clone().into_bytes();
            body.extend(std::iter::repeat_n(0u8, sent));
            let resp = client
                .post(format!("{base}/v2/models/m/infer"))
                .header("Inference-Header-Content-Length", header.len())
                .body(body)
                .send()
                .await
                .expect("infer");
            let (status, e) = (resp.status(), resp.text().await.expect("body"));
            assert!(status == 400 && e.contains(want), "{name} binary {declared}/{sent}: {status} {e}");
        }

        let rows: Vec<Value> = m["x"].as_array().expect("rows")[..50].to_vec();
        let resp =
            client.post(format!("{base}/predict")).json(&json!({"features": rows})).send().await.expect("predict");
        assert_eq!(resp.status(), 200, "{name}");
        let got: Value = resp.json().await.expect("JSON");
        let want = &floats(&want_outputs[0]["data"])[..50];
        let d = max_diff(&floats(&got["prediction"]), want).unwrap_or_else(|e| panic!("{name} /predict: {e}"));
        assert!(d <= TOLERANCE, "{name} /predict differs by {d:e}");
        let _ = server.child.kill().await;
    }
}

/// Mutated exports (bytes overwritten, inserted, deleted, truncated) load or fail with an error;
/// one that loads answers V2 without panicking. (`server/fuzz` has the cargo-fuzz target.)
#[test]
fn mutated_files_never_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let manifest = manifest();
    let seeds: Vec<Vec<u8>> = ["scaler_logistic-float32", "forest_binary-float32", "mlp_classifier-float32"]
        .iter()
        .map(|n| {
            std::fs::read(generated().join(model_named(&manifest, n)["file"].as_str().expect("file"))).expect("seed")
        })
        .collect();
    let row = json!({"inputs": [{"name": "X", "shape": [2, 6], "datatype": "FP32", "data": [[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]]}]});
    let body = row.to_string();
    let mut runner = TestRunner::new(Config { cases: 150, failure_persistence: None, ..Config::default() });
    let strategy =
        (0..seeds.len(), proptest::collection::vec((any::<u8>(), any::<prop::sample::Index>(), any::<u8>()), 1..6));
    runner
        .run(&strategy, |(seed, edits)| {
            let mut bytes = seeds[seed].clone();
            for (kind, at, value) in edits {
                let i = at.index(bytes.len().max(1));
                match kind % 4 {
                    0 if i < bytes.len() => bytes[i] = value,
                    1 => bytes.insert(i.min(bytes.len()), value),
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            if let Ok(model) = OnnxModel::from_bytes(&bytes) {
                let _ = modelship_server::onnx::v2::infer(&model, body.as_bytes(), &[], 16);
            }
            Ok(())
        })
        .expect("no panic on mutated files");
}
