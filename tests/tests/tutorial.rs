//! The tutorial, end to end: its exact training script writes a scikit-learn `model.pkl`, real
//! `kubectl create configmap --from-file` stores it under `binaryData`, the example MLModel with
//! `format: sklearn` becomes Ready, and the operator's pod template serves it: the tutorial's
//! curl request gets byte for byte the answer of the tutorial's own Flask app (run beside it).
//! And a pickle the server refuses ends as `Degraded: ModelLoadFailed` with the server's reason.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use modelship_crds::{MLModel, labels};
use modelship_tests::pod_template::PodTemplateServer;
use modelship_tests::{
    Operator, OperatorOptions, binary, free_port, kubectl, kubectl_stdin, root, setup, wait_for, wait_ready,
};

const T: Duration = Duration::from_secs(60);

/// A python of one of our cached venvs, from the script that makes it (its first line).
fn python(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(root().join(script)).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().next().unwrap_or_default();
    PathBuf::from(line.split_once('=').map_or(line, |(_, p)| p))
}

/// Real curl, as the tutorial sends it: the response body.
fn curl(base: &str, body: &str) -> String {
    let args = ["-sS", "-X", "POST", &format!("{base}/predict"), "-H", "Content-Type: application/json", "-d", body];
    let out = Command::new("curl").args(args).output().unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

struct Flask(Child);

impl Drop for Flask {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tutorial's Flask app (bench/flask_app.py) serving `model`, once it answers HTTP.
async fn flask(model: &Path) -> (Flask, String) {
    let port = free_port();
    let child = Command::new(python("bench/venv", &[]))
        .arg(root().join("bench/flask_app.py"))
        .env("MODEL_PKL", model)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("the Flask app to answer", Duration::from_secs(30), || async {
        http.get(format!("{base}/")).send().await.ok()
    })
    .await;
    (Flask(child), base)
}

#[tokio::test]
async fn the_tutorials_model_pkl_is_served_as_its_flask_app_serves_it() {
    let (c, ns) = setup("tutorial").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let work = std::env::temp_dir().join(format!("modelship-tutorial-{}", ns.name));
    std::fs::create_dir_all(&work).unwrap();

    // The training step, in the newest scikit-learn venv, writes model.pkl into the working directory.
    let sklearn = python("server/tests/sklearn/venv", &["--check"]);
    let out = Command::new(&sklearn).arg(root().join("examples/sklearn-iris/train.py")).current_dir(&work).output();
    let out = out.unwrap();
    assert!(out.status.success(), "train.py: {}", String::from_utf8_lossy(&out.stderr));
    let pkl = std::fs::read(work.join("model.pkl")).unwrap();

    // The README's commands, with real kubectl.
    let kubectl_bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl_bin)
        .args(["create", "configmap", "iris-sklearn", "--from-file=model.pkl", "-n", &ns.name])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl create configmap: {}", String::from_utf8_lossy(&out.stderr));
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let cm = cms.get("iris-sklearn").await.unwrap();
    assert!(cm.data.as_ref().is_none_or(|d| d.is_empty()), "a pickle is binary: not under data");
    assert_eq!(cm.binary_data.as_ref().and_then(|d| d.get("model.pkl")).map(|b| &b.0), Some(&pkl));
    let example = root().join("examples/sklearn-iris/mlmodel.yaml");
    kubectl(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris-sklearn", Some("v1"), T).await;

    let server = PodTemplateServer::start(&c, &ns.name, "iris-sklearn").await;
    let format = server.args.iter().position(|a| a == "--model-format").map(|i| server.args[i + 1].as_str());
    assert_eq!(format, Some("sklearn"));
    assert_eq!(std::fs::read(server.model_path()).unwrap(), pkl, "the mounted file is the bytes trained");
    let (_flask, flask_base) = flask(&work.join("model.pkl")).await;
    // The tutorial's request, then one flower of each other class.
    for body in [
        r#"{"features": [5.1, 3.5, 1.4, 0.2]}"#,
        r#"{"features": [6.2, 2.9, 4.3, 1.3]}"#,
        r#"{"features": [6.9, 3.1, 5.4, 2.1]}"#,
    ] {
        let (ours, theirs) = (curl(&server.base, body), curl(&flask_base, body));
        // Flask's jsonify ends the body with a newline; everything before it is the same bytes.
        assert_eq!(ours.trim_end(), theirs.trim_end(), "{body}");
    }
    assert_eq!(curl(&server.base, r#"{"features": [5.1, 3.5, 1.4, 0.2]}"#), r#"{"prediction":[0]}"#);

    // The content hash covers the binary bytes: one changed byte rolls the pods.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let rollout_hash = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(labels::ROLLOUT_HASH).cloned())
    };
    let before = rollout_hash(deployments.get("iris-sklearn").await.unwrap()).unwrap();
    let mut edited = pkl.clone();
    edited.push(b'.');
    let patch = serde_json::json!({"binaryData": {"model.pkl": ByteString(edited)}});
    cms.patch("iris-sklearn", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("a new rollout hash after the ConfigMap's bytes changed", T, || async {
        deployments.get("iris-sklearn").await.ok().and_then(rollout_hash).filter(|h| *h != before)
    })
    .await;

    // A key that is not there is a condition naming it; a key in both data and binaryData is
    // refused by the API server itself, so the operator never sees one.
    let wrong = std::fs::read_to_string(&example).unwrap().replace("name: iris-sklearn", "name: wrong-key");
    let wrong = wrong.replace("model.pkl\n", "model.joblib\n");
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&wrong)).unwrap();
    let m = wait_for("wrong-key Degraded (ConfigMapKeyNotFound)", T, || async {
        models.get_opt("wrong-key").await.ok().flatten().filter(|m| {
            m.status.as_ref().and_then(|s| s.condition("Degraded")).is_some_and(|c| c.reason == "ConfigMapKeyNotFound")
        })
    })
    .await;
    let msg = m.status.unwrap().condition("Degraded").unwrap().message.clone();
    assert!(msg.contains("\"iris-sklearn\" has no key \"model.joblib\""), "{msg}");
    let both = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"both"},"data":{"model.pkl":"x"},"binaryData":{"model.pkl":"eA=="}}"#;
    let err = kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(both)).unwrap_err().to_string();
    assert!(err.contains("duplicate of key present in binaryData"), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}

/// A pickle whose first opcode names `os.system`: the server refuses it before anything runs.
const HOSTILE_PICKLE: &[u8] = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";

#[tokio::test]
async fn a_refused_pickle_ends_as_model_load_failed_with_the_servers_reason() {
    let (c, ns) = setup("loadfail").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let work = std::env::temp_dir().join(format!("modelship-loadfail-{}", ns.name));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("model.pkl"), HOSTILE_PICKLE).unwrap();

    // What the real server leaves in its termination log for this file (the kubelet creates the file).
    let log = work.join("termination-log");
    std::fs::write(&log, "").unwrap();
    let out = Command::new(binary("modelship-server"))
        .args(["serve", "--model-format", "sklearn", "--port", "0", "--model"])
        .arg(work.join("model.pkl"))
        .env("MODELSHIP_TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(message.starts_with("modelship-server: model failed to load: refusing global posix.system"), "{message}");

    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "evil"},
                                "binaryData": {"model.pkl": ByteString(HOSTILE_PICKLE.to_vec())}});
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&cm.to_string())).unwrap();
    // kwok's crash-loop stage stands in for the kubelet restarting the exiting server.
    let model = serde_json::json!({"apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel", "metadata": {"name": "evil"},
        "spec": {"model": {"uri": "configmap://evil/model.pkl", "format": "sklearn", "version": "fault-crash-loop"}}});
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&model.to_string())).unwrap();

    // As the kubelet does, put the termination log into the crashed container's lastState.
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod = wait_for("a crash-looping pod of evil", T, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|p| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                cs.iter().any(|c| c.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some())
            })
        })
    })
    .await;
    let mut statuses = pod.status.and_then(|s| s.container_statuses).unwrap();
    for cs in &mut statuses {
        if let Some(t) = cs.last_state.as_mut().and_then(|l| l.terminated.as_mut()) {
            t.message = Some(message.clone());
        }
    }
    let name = pod.metadata.name.unwrap();
    let patch = serde_json::json!({"status": {"containerStatuses": statuses}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let m = wait_for("evil Degraded (ModelLoadFailed)", T, || async {
        models.get_opt("evil").await.ok().flatten().filter(|m| {
            m.status.as_ref().and_then(|s| s.condition("Degraded")).is_some_and(|c| c.reason == "ModelLoadFailed")
        })
    })
    .await;
    let msg = m.status.unwrap().condition("Degraded").unwrap().message.clone();
    assert!(msg.ends_with(message.trim()), "the server's one line, as it wrote it: {msg}");
    assert!(msg.contains("not a supported scikit-learn class"), "{msg}");
    let _ = std::fs::remove_dir_all(&work);
}

/// An ONNX export of the tutorial's model, from a ConfigMap's binaryData with `format: onnx`:
/// Ready, and the pod template's server predicts what scikit-learn predicts.
#[tokio::test]
async fn an_onnx_export_in_a_configmap_is_served_with_format_onnx() {
    let (c, ns) = setup("tutorial-onnx").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let work = std::env::temp_dir().join(format!("modelship-tutorial-{}", ns.name));
    std::fs::create_dir_all(&work).unwrap();
    // The tutorial's training, exported with skl2onnx (zipmap off) in the ONNX test venv; prints
    // scikit-learn's predictions of three flowers.
    let export = r#"
import json
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=200).fit(X, y)
onx = to_onnx(model, X[:1].astype("float32"), options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
open("model.onnx", "wb").write(onx.SerializeToString())
rows = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.9, 3.1, 5.4, 2.1]]
print(json.dumps({"rows": rows, "predictions": model.predict(rows).tolist()}))
"#;
    let onnx_python = python("server/tests/onnx/venv", &["--check"]);
    let out = Command::new(&onnx_python).args(["-c", export]).current_dir(&work).output().unwrap();
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let onnx = std::fs::read(work.join("model.onnx")).unwrap();

    let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["create", "configmap", "iris-onnx", "--from-file=model.onnx", "-n", &ns.name])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl create configmap: {}", String::from_utf8_lossy(&out.stderr));
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns.name).get("iris-onnx").await.unwrap();
    assert_eq!(cm.binary_data.as_ref().and_then(|d| d.get("model.onnx")).map(|b| &b.0), Some(&onnx));
    let manifest = "apiVersion: modelship.dev/v1alpha1\nkind: MLModel\nmetadata: {name: iris-onnx}\n\
                    spec: {model: {uri: configmap://iris-onnx/model.onnx, format: onnx, version: v1}}\n";
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(manifest)).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "iris-onnx", Some("v1"), T).await;

    let server = PodTemplateServer::start(&c, &ns.name, "iris-onnx").await;
    let format = server.args.iter().position(|a| a == "--model-format").map(|i| server.args[i + 1].as_str());
    assert_eq!(format, Some("onnx"));
    assert_eq!(std::fs::read(server.model_path()).unwrap(), onnx, "the mounted file is the bytes exported");
    let body = serde_json::json!({"features": want["rows"]}).to_string();
    let got: serde_json::Value = serde_json::from_str(&curl(&server.base, &body)).unwrap();
    assert_eq!(got, serde_json::json!({"prediction": want["predictions"]}), "scikit-learn's predictions");
    let _ = std::fs::remove_dir_all(&work);
}
