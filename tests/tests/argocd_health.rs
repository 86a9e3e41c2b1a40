//! The ArgoCD health check for MLModel, run by a real Lua 5.1 interpreter (ArgoCD's gopher-lua is
//! a Lua 5.1) on every testdata file, which are real `kubectl get mlmodel -o yaml` output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};
use serde::Deserialize;

fn dir() -> PathBuf {
    modelship_tests::root().join("manifests/argocd/resource_customizations/modelship.dev/MLModel")
}

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: Health,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Health {
    status: String,
    message: String,
}

/// Runs a health script on an object the way ArgoCD does: the object as the global `obj`
/// (JSON nulls absent, as ArgoCD's conversion leaves them), the script's returned table read back.
fn run_health(script: &str, object: &serde_json::Value) -> Health {
    let lua = Lua::new();
    let options = SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.globals().set("obj", lua.to_value_with(object, options).unwrap()).unwrap();
    let hs: Table = lua.load(script).set_name("health.lua").eval().expect("health.lua runs");
    Health { status: hs.get("status").unwrap(), message: hs.get("message").unwrap() }
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_testdata_file_gets_the_expected_health() {
    let script = std::fs::read_to_string(dir().join("health.lua")).unwrap();
    let tests: HealthTests = serde_yaml::from_str(&std::fs::read_to_string(dir().join("health_test.yaml")).unwrap())
        .expect("health_test.yaml parses");
    assert!(tests.tests.len() >= 6);
    let mut statuses = std::collections::BTreeSet::new();
    for t in &tests.tests {
        let got = run_health(&script, &yaml(&dir().join(&t.input_path)));
        assert_eq!(got, t.health_status, "{}", t.input_path);
        statuses.insert(got.status);
    }
    let all: std::collections::BTreeSet<String> =
        ["Healthy", "Progressing", "Degraded", "Suspended"].map(String::from).into();
    assert_eq!(statuses, all, "the tests cover every health status the script returns");
}

#[test]
fn every_testdata_file_is_real_kubectl_output_and_is_tested() {
    let tests = std::fs::read_to_string(dir().join("health_test.yaml")).unwrap();
    for entry in std::fs::read_dir(dir().join("testdata")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(tests.contains(&format!("inputPath: testdata/{name}")), "{name} is not in health_test.yaml");
        let obj = yaml(&path);
        assert_eq!(obj["apiVersion"], "modelship.dev/v1alpha1", "{name}");
        assert_eq!(obj["kind"], "MLModel", "{name}");
        for field in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
            assert!(!obj["metadata"][field].is_null(), "{name} lacks metadata.{field}: not from a real API server");
        }
    }
}

#[test]
fn healthy_needs_ready_for_the_current_generation() {
    let script = std::fs::read_to_string(dir().join("health.lua")).unwrap();
    let mut obj = yaml(&dir().join("testdata/healthy.yaml"));
    assert_eq!(run_health(&script, &obj).status, "Healthy");
    // The Ready condition is from an older generation than status claims: not Healthy.
    let conditions = obj["status"]["conditions"].as_array_mut().unwrap();
    for c in conditions.iter_mut() {
        c["observedGeneration"] = 0.into();
    }
    assert_eq!(run_health(&script, &obj).status, "Progressing");
}

#[test]
fn the_argocd_cm_snippet_carries_the_same_script() {
    let cm = yaml(&modelship_tests::root().join("manifests/argocd/argocd-cm-health.yaml"));
    let embedded = cm["data"]["resource.customizations.health.modelship.dev_MLModel"].as_str().unwrap();
    let script = std::fs::read_to_string(dir().join("health.lua")).unwrap();
    assert_eq!(embedded, script, "argocd-cm-health.yaml is stale: run manifests/generate");
    let app_script = cm["data"]["resource.customizations.health.argoproj.io_Application"].as_str().unwrap();
    let app = serde_json::json!({"status": {"health": {"status": "Degraded", "message": "boom"}}});
    assert_eq!(run_health(app_script, &app), Health { status: "Degraded".into(), message: "boom".into() });
    let new_app = serde_json::json!({"metadata": {"name": "x"}});
    assert_eq!(run_health(app_script, &new_app).status, "Progressing");
}

/// The fixtures use only reasons the operator writes (a reason renamed in the operator fails
/// here, not silently in ArgoCD), and the reason health.lua tests for by name is one of them.
#[test]
fn the_fixtures_and_the_script_name_only_reasons_the_operator_writes() {
    use modelship_crds::reason;
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir().join("testdata")).unwrap() {
        let path = entry.unwrap().path();
        let object = yaml(&path);
        for c in object["status"]["conditions"].as_array().into_iter().flatten() {
            let r = c["reason"].as_str().unwrap_or_default();
            assert!(reason::ALL.contains(&r), "{}: reason {r} is not one the operator writes", path.display());
            seen.insert(r.to_string());
        }
    }
    assert!(seen.len() >= 8, "{seen:?}");
    let script = std::fs::read_to_string(dir().join("health.lua")).unwrap();
    assert!(script.contains(&format!("ready.reason == \"{}\"", reason::SCALED_TO_ZERO)), "health.lua: {script}");
}
