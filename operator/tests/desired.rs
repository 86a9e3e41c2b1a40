//! The pure builders: children for each model source, hygiene, rollout triggers.
#![allow(clippy::unwrap_used)]

mod common;

use common::{argocd_model, model, settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use modelship_crds::{ModelFormat, ModelUri, labels};
use modelship_operator::desired::{self, MODEL_MOUNT, ServerPods, SourceVersion};

fn build(m: &modelship_crds::MLModel) -> Deployment {
    let uri = ModelUri::parse(&m.spec.model.uri).expect("valid uri");
    let source = SourceVersion { content_hash: Some("c0ffee".into()), registry: None };
    desired::deployment(m, &ServerPods::stable(m, &uri, &source), &settings())
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn server(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn args(d: &Deployment) -> Vec<String> {
    server(d).args.clone().unwrap()
}

fn arg_after(d: &Deployment, flag: &str) -> Option<String> {
    let a = args(d);
    a.iter().position(|x| x == flag).and_then(|i| a.get(i + 1).cloned())
}

fn model_volume(d: &Deployment) -> Option<k8s_openapi::api::core::v1::Volume> {
    pod(d).volumes.iter().flatten().find(|v| v.name == "model").cloned()
}

#[test]
fn configmap_source_is_mounted_read_only() {
    let d = build(&model("configmap://iris-model/model.json"));
    let v = model_volume(&d).expect("model volume");
    let cm = v.config_map.expect("configMap volume");
    assert_eq!(cm.name, "iris-model");
    assert_eq!(cm.items.unwrap()[0].key, "model.json");
    let mount = server(&d).volume_mounts.iter().flatten().find(|m| m.name == "model").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (MODEL_MOUNT, Some(true)));
    assert_eq!(arg_after(&d, "--model").unwrap(), format!("{MODEL_MOUNT}/model.json"));
    assert_eq!(arg_after(&d, "--sha256").unwrap(), "a".repeat(64));
    assert_eq!(arg_after(&d, "--model-version").unwrap(), "v1");
    assert_eq!(arg_after(&d, "--name").unwrap(), "iris");
    assert_eq!(args(&d)[0], "serve");
}

#[test]
fn a_declared_format_becomes_the_model_format_flag_and_rolls_the_pods() {
    let base = model("configmap://iris-sklearn/model.pkl");
    assert_eq!(arg_after(&build(&base), "--model-format"), None, "absent: the server reads the file's signature");
    let hash = |m: &modelship_crds::MLModel| {
        desired::rollout_hash(
            m,
            &m.spec.model,
            &settings(),
            &SourceVersion { content_hash: Some("c1".into()), registry: None },
        )
    };
    let mut hashes = vec![hash(&base)];
    for (format, flag) in
        [(ModelFormat::Linfa, "linfa"), (ModelFormat::Sklearn, "sklearn"), (ModelFormat::Onnx, "onnx")]
    {
        let mut m = base.clone();
        m.spec.model.format = Some(format);
        assert_eq!(arg_after(&build(&m), "--model-format").as_deref(), Some(flag));
        hashes.push(hash(&m));
    }
    let distinct: std::collections::BTreeSet<_> = hashes.iter().collect();
    assert_eq!(distinct.len(), hashes.len(), "each format (and none) rolls different pods: {hashes:?}");
    let m: modelship_crds::MLModelSpec =
        serde_json::from_value(serde_json::json!({"model": {"uri": "configmap://a/b", "format": "sklearn"}})).unwrap();
    assert_eq!(m.model.format, Some(ModelFormat::Sklearn));
}

#[test]
fn pvc_source_is_mounted_read_only() {
    let d = build(&model("pvc://models/iris/v1/model.json"));
    let pvc = model_volume(&d).unwrap().persistent_volume_claim.expect("pvc volume");
    assert_eq!((pvc.claim_name.as_str(), pvc.read_only), ("models", Some(true)));
    assert_eq!(arg_after(&d, "--model").unwrap(), format!("{MODEL_MOUNT}/iris/v1/model.json"));
}

#[test]
fn http_source_is_fetched_by_the_server_with_its_checksum() {
    let d = build(&model("https://models.example.com/iris.json"));
    assert!(model_volume(&d).is_none(), "nothing to mount");
    assert_eq!(arg_after(&d, "--model").unwrap(), "https://models.example.com/iris.json");
    assert_eq!(arg_after(&d, "--sha256").unwrap(), "a".repeat(64));
}

#[test]
fn file_source_is_used_as_is() {
    let d = build(&model("file:///models/iris.json"));
    assert!(model_volume(&d).is_none());
    assert_eq!(arg_after(&d, "--model").unwrap(), "/models/iris.json");
}

#[test]
fn argocd_tracking_metadata_is_never_copied_to_children() {
    let m = argocd_model();
    let d = build(&m);
    let svc = desired::service(&m);
    let mut autoscaled = m.clone();
    autoscaled.spec.autoscaling =
        serde_json::from_value(serde_json::json!({"minReplicas": 1, "maxReplicas": 3})).unwrap();
    let hpa = desired::hpa(&autoscaled).unwrap();
    let template = d.spec.as_ref().unwrap().template.metadata.clone().unwrap();
    for (what, meta_labels, annotations) in [
        ("Deployment", d.metadata.labels.clone(), d.metadata.annotations.clone()),
        ("Service", svc.metadata.labels.clone(), svc.metadata.annotations.clone()),
        ("HPA", hpa.metadata.labels.clone(), hpa.metadata.annotations.clone()),
        ("pod template", template.labels.clone(), None),
    ] {
        let l = meta_labels.unwrap();
        assert!(!l.contains_key("app.kubernetes.io/instance"), "{what} has ArgoCD's tracking label");
        assert!(l.keys().all(|k| !k.starts_with("argocd.argoproj.io/")), "{what} has an argocd label");
        assert_eq!(l.get("team").map(String::as_str), Some("fraud"), "{what} keeps the user's labels");
        assert_eq!(l.get(labels::MANAGED_BY).map(String::as_str), Some("modelship-operator"));
        assert_eq!(l.get(labels::MODEL).map(String::as_str), Some("iris"));
        assert!(annotations.is_none(), "{what} must carry no copied annotations: {annotations:?}");
    }
    let template_annotations = template.annotations.unwrap();
    assert_eq!(template_annotations.keys().collect::<Vec<_>>(), vec![labels::ROLLOUT_HASH]);
}

#[test]
fn children_are_controlled_by_the_model() {
    let m = model("configmap://iris-model/model.json");
    for owners in [build(&m).metadata.owner_references, desired::service(&m).metadata.owner_references] {
        let o = &owners.unwrap()[0];
        assert_eq!((o.kind.as_str(), o.name.as_str(), o.uid.as_str()), ("MLModel", "iris", "0b3c-uid"));
        assert_eq!(o.controller, Some(true));
    }
}

#[test]
fn selector_is_identity_only_and_stable_across_versions() {
    let a = model("configmap://iris-model/model.json");
    let mut b = a.clone();
    b.spec.model.version = Some("v2".into());
    b.spec.model.uri = "https://x.example/m.json".into();
    let sel = |m| build(m).spec.unwrap().selector.match_labels.unwrap();
    assert_eq!(sel(&a), sel(&b));
    assert_eq!(sel(&a).len(), 2);
    assert_eq!(sel(&a)[labels::TRACK], labels::TRACK_STABLE);
    let pod_labels = build(&a).spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for (k, v) in sel(&a) {
        assert_eq!(pod_labels.get(&k), Some(&v), "pods carry the selector");
    }
    assert_eq!(desired::service(&a).spec.unwrap().selector.unwrap().len(), 1, "the Service selects all tracks");
}

#[test]
fn pods_are_restricted_probed_and_roll_with_no_unavailability() {
    let d = build(&model("configmap://iris-model/model.json"));
    let spec = d.spec.as_ref().unwrap();
    let ru = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(ru.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)));
    let c = server(&d);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let psc = pod(&d).security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));
    assert_eq!(pod(&d).automount_service_account_token, Some(false));
    assert_eq!(c.image.as_deref(), Some("ghcr.io/modelship/modelship-server:test"));
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu"), "CPU requests are needed for HPA utilisation");
}

#[test]
fn rollout_hash_changes_exactly_when_pods_must_change() {
    let base = model("configmap://iris-model/model.json");
    let hash = |m: &modelship_crds::MLModel, content: &str| {
        desired::rollout_hash(
            m,
            &m.spec.model,
            &settings(),
            &SourceVersion { content_hash: Some(content.into()), registry: None },
        )
    };
    let h0 = hash(&base, "c1");
    assert_eq!(h0, hash(&base.clone(), "c1"), "deterministic");
    assert_ne!(h0, hash(&base, "c2"), "ConfigMap content");
    let mut m = base.clone();
    m.spec.model.uri = "configmap://iris-model-v2/model.json".into();
    assert_ne!(h0, hash(&m, "c1"), "model reference");
    let mut m = base.clone();
    m.spec.model.sha256 = Some("b".repeat(64));
    assert_ne!(h0, hash(&m, "c1"), "sha256");
    let mut m = base.clone();
    m.spec.model.version = Some("v2".into());
    assert_ne!(h0, hash(&m, "c1"), "version");
    let mut m = base.clone();
    m.spec.server = serde_json::from_value(serde_json::json!({"env": [{"name": "X", "value": "1"}]})).unwrap();
    assert_ne!(h0, hash(&m, "c1"), "server env");
    let mut m = base.clone();
    m.spec.replicas = 7;
    m.spec.service = serde_json::from_value(serde_json::json!({"port": 9000})).unwrap();
    assert_eq!(h0, hash(&m, "c1"), "replicas and Service settings do not restart pods");
    let other = desired::rollout_hash(
        &base,
        &base.spec.model,
        &modelship_operator::desired::Settings::new("other:1"),
        &SourceVersion::default(),
    );
    assert_ne!(
        other,
        desired::rollout_hash(&base, &base.spec.model, &settings(), &SourceVersion::default()),
        "operator's server image"
    );
}

#[test]
fn replicas_are_left_to_the_hpa_when_autoscaling() {
    let mut m = model("configmap://iris-model/model.json");
    m.spec.replicas = 4;
    assert_eq!(build(&m).spec.unwrap().replicas, Some(4));
    assert!(desired::hpa(&m).is_none());
    m.spec.autoscaling = serde_json::from_value(
        serde_json::json!({"minReplicas": 2, "maxReplicas": 9, "targetCPUUtilizationPercentage": 60}),
    )
    .unwrap();
    let d = build(&m);
    assert_eq!(d.spec.as_ref().unwrap().replicas, None);
    let json = serde_json::to_value(&d).unwrap();
    assert!(json["spec"].get("replicas").is_none(), "the field is omitted, not null");
    assert!(json.get("status").is_none());
    let hpa = desired::hpa(&m).unwrap().spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 9));
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!(hpa.scale_target_ref.name, "iris");
    let target = &hpa.metrics.unwrap()[0].resource.clone().unwrap().target;
    assert_eq!(target.average_utilization, Some(60));
}

#[test]
fn service_and_url() {
    let mut m = model("configmap://iris-model/model.json");
    let svc = desired::service(&m).spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    let port = &svc.ports.unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
    assert_eq!(desired::service_url(&m), "http://iris.ml.svc");
    m.spec.service = serde_json::from_value(serde_json::json!({"type": "NodePort", "port": 8000})).unwrap();
    assert_eq!(desired::service(&m).spec.unwrap().type_.as_deref(), Some("NodePort"));
    assert_eq!(desired::service_url(&m), "http://iris.ml.svc:8000");
}

#[test]
fn backoff_grows_and_is_capped() {
    use modelship_operator::reconcile::backoff;
    let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

#[test]
fn replicas_ownership_is_read_from_managed_fields() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use modelship_operator::plan::we_own_replicas;
    let entry = |manager: &str, fields: serde_json::Value| ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Apply".into()),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    };
    let mut d = build(&model("configmap://iris-model/model.json"));
    d.metadata.managed_fields =
        Some(vec![entry("modelship-operator", serde_json::json!({"f:spec": {"f:replicas": {}}}))]);
    assert!(we_own_replicas(&d));
    d.metadata.managed_fields = Some(vec![
        entry("modelship-operator", serde_json::json!({"f:spec": {"f:template": {}}})),
        entry("kube-controller-manager", serde_json::json!({"f:spec": {"f:replicas": {}}})),
    ]);
    assert!(!we_own_replicas(&d));
}

#[test]
fn server_limits_become_exactly_the_flags_that_are_set() {
    let m = model("configmap://iris-model/model.json");
    let none = args(&build(&m));
    for flag in ["--max-body-bytes", "--max-rows", "--max-concurrent-requests", "--request-timeout-seconds"] {
        assert!(!none.contains(&flag.to_string()), "{flag} without spec.server.limits: {none:?}");
    }

    let mut all = m.clone();
    all.spec.server = serde_json::from_value(serde_json::json!({"limits": {
        "maxBodyBytes": 1048576, "maxRows": 500, "maxConcurrentRequests": 8, "requestTimeoutSeconds": 20,
    }}))
    .unwrap();
    let d = build(&all);
    assert_eq!(arg_after(&d, "--max-body-bytes").as_deref(), Some("1048576"));
    assert_eq!(arg_after(&d, "--max-rows").as_deref(), Some("500"));
    assert_eq!(arg_after(&d, "--max-concurrent-requests").as_deref(), Some("8"));
    assert_eq!(arg_after(&d, "--request-timeout-seconds").as_deref(), Some("20"));

    let mut one = m.clone();
    one.spec.server = serde_json::from_value(serde_json::json!({"limits": {"maxRows": 64}})).unwrap();
    let a = args(&build(&one));
    assert_eq!(arg_after(&build(&one), "--max-rows").as_deref(), Some("64"));
    assert_eq!(a.len(), none.len() + 2, "only --max-rows is added: {a:?}");
}

#[test]
fn a_limits_change_rolls_the_pods() {
    let base = model("configmap://iris-model/model.json");
    let hash = |m: &modelship_crds::MLModel| {
        desired::rollout_hash(
            m,
            &m.spec.model,
            &settings(),
            &SourceVersion { content_hash: Some("c1".into()), registry: None },
        )
    };
    let mut limited = base.clone();
    limited.spec.server = serde_json::from_value(serde_json::json!({"limits": {"maxRows": 64}})).unwrap();
    let mut raised = base.clone();
    raised.spec.server = serde_json::from_value(serde_json::json!({"limits": {"maxRows": 128}})).unwrap();
    assert_ne!(hash(&base), hash(&limited));
    assert_ne!(hash(&limited), hash(&raised));
}

#[test]
fn the_image_policy_checks_the_effective_image() {
    let mut policy = settings();
    assert!(policy.image_allowed("anything:1"), "no policy: any image");
    policy.allowed_image_prefixes = vec!["ghcr.io/modelship/".into(), "registry.example/ml/".into()];
    let mut m = model("configmap://iris-model/model.json");
    assert_eq!(desired::server_image(&m, &policy), "ghcr.io/modelship/modelship-server:test");
    assert!(policy.image_allowed(&desired::server_image(&m, &policy)));
    m.spec.server = serde_json::from_value(serde_json::json!({"image": "docker.io/evil/miner:1"})).unwrap();
    assert_eq!(desired::server_image(&m, &policy), "docker.io/evil/miner:1");
    assert!(!policy.image_allowed(&desired::server_image(&m, &policy)));
    assert!(policy.image_allowed("registry.example/ml/server:2"));
    assert!(!policy.image_allowed("registry.example/mlx/server:2"), "a prefix, not a substring match");
}
