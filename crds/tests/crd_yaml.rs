//! The checked-in CRD YAML is the generated one, and it carries the validation we rely on.

use std::path::Path;

fn checked_in(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn checked_in_crd_is_not_stale() {
    for (file, generated) in modelship_crds::crd_files() {
        for dir in modelship_crds::CRD_DIRS {
            let copy = format!("{dir}/{file}");
            assert!(
                checked_in(&copy) == generated,
                "{copy} is stale: run `cargo run -p modelship-crds --bin crdgen -- --write`"
            );
        }
    }
}

fn schema() -> serde_json::Value {
    let crd: serde_json::Value = serde_yaml::from_str(&checked_in("crds/mlmodel.yaml")).expect("CRD YAML parses");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn cel_rules_are_in_the_schema() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    let auto = &spec["autoscaling"]["x-kubernetes-validations"][0];
    assert_eq!(auto["rule"], "self.minReplicas <= self.maxReplicas");
    assert!(auto["message"].as_str().unwrap_or_default().contains("minReplicas"));
    let uri = &spec["model"]["properties"]["uri"];
    let rule = uri["x-kubernetes-validations"][0]["rule"].as_str().unwrap_or_default();
    for scheme in ["configmap://", "pvc://", "https?://", "file:///"] {
        assert!(rule.contains(scheme), "URI rule lacks {scheme}: {rule}");
    }
    assert_eq!(uri["maxLength"], 2048, "CEL cost needs a bounded string");

    // The name rule is checked on create only: MLModels stored before it stay writable.
    let name = &s["x-kubernetes-validations"][0];
    assert_eq!(name["rule"], modelship_crds::names::NAME_CEL_RULE);
    assert_eq!(name["optionalOldSelf"], true);
    assert!(name["rule"].as_str().unwrap_or_default().starts_with("oldSelf.hasValue() || ("));
    let limits = &spec["server"]["properties"]["limits"]["properties"];
    assert_eq!(limits["maxBodyBytes"]["minimum"], 1024.0);
    assert_eq!(limits["requestTimeoutSeconds"]["maximum"], 3600.0);
}

#[test]
fn ranges_enums_and_required_fields() {
    let s = schema();
    assert_eq!(s["required"], serde_json::json!(["spec"]));
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["model"]));
    assert_eq!(spec["properties"]["replicas"]["minimum"], 0.0);
    assert_eq!(spec["properties"]["replicas"]["default"], 1);
    let format = &spec["properties"]["model"]["properties"]["format"];
    assert_eq!(format["enum"], serde_json::json!(["linfa", "sklearn", "onnx"]));
    // Absent means "from the file's signature": no default that would pin old manifests to linfa.
    assert!(format.get("default").is_none(), "{format}");
    assert_eq!(spec["properties"]["model"]["properties"]["sha256"]["pattern"], "^[a-f0-9]{64}$");
    let conditions = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
}

#[test]
fn scale_subresource_and_printer_columns() {
    let crd: serde_json::Value = serde_yaml::from_str(&checked_in("crds/mlmodel.yaml")).expect("parses");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
    assert_eq!(v["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
    assert_eq!(v["subresources"]["scale"]["labelSelectorPath"], ".status.selector");
    let names: Vec<_> = v["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_uppercase())
        .collect();
    assert_eq!(names, ["READY", "FORMAT", "VERSION", "REPLICAS", "URL", "AGE"]);
    // FORMAT only in `-o wide`: the default view stays as it was.
    assert_eq!(v["additionalPrinterColumns"][1]["priority"], 1);
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["mlm"]));
}
