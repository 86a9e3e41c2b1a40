//! Delivery checks that need no cluster: the Helm chart (lint, schema, rendered RBAC), the
//! generated manifests, the kustomize overlays, the ArgoCD Applications, the Dockerfile and the
//! GitHub workflows (hadolint, actionlint with shellcheck). Tools come from tests/tools/install.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use modelship_tests::{kubectl, root, run, tool};
use serde_json::Value;

fn helm(args: &[&str]) -> anyhow::Result<String> {
    run(&tool("HELM"), args, None)
}

fn chart() -> String {
    root().join("charts/modelship").to_string_lossy().into_owned()
}

/// `helm template` of the chart with `--set` values, as parsed documents.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "modelship", chart.as_str(), "--namespace", "modelship-system"];
    for s in sets {
        args.extend(["--set", s]);
    }
    docs(&helm(&args).unwrap())
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_string()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(docs)))
}

/// (apiGroup, resource, verb) triples granted by a list of RBAC rules.
fn grants(rules: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules.as_array().unwrap() {
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    let names = r["resourceNames"].as_array().map(|n| format!("{n:?}")).unwrap_or_default();
                    out.insert(format!(
                        "{}/{}:{}{names}",
                        g.as_str().unwrap(),
                        res.as_str().unwrap(),
                        v.as_str().unwrap()
                    ));
                }
            }
        }
    }
    out
}

/// Every API call the operator makes where MLModels live (see operator/src/reconcile.rs,
/// source.rs and main.rs); the chart must grant exactly these.
const MODEL_GRANTS: &[&str] = &[
    "modelship.dev/mlmodels:get",
    "modelship.dev/mlmodels:list",
    "modelship.dev/mlmodels:watch",
    "modelship.dev/mlmodels/status:patch",
    "modelship.dev/mlbatchjobs:get",
    "modelship.dev/mlbatchjobs:list",
    "modelship.dev/mlbatchjobs:watch",
    "modelship.dev/mlbatchjobs/status:patch",
    "batch/jobs:get",
    "batch/jobs:list",
    "batch/jobs:watch",
    "batch/jobs:create",
    "batch/cronjobs:get",
    "batch/cronjobs:list",
    "batch/cronjobs:watch",
    "batch/cronjobs:patch",
    "batch/cronjobs:delete",
    "apps/deployments:get",
    "apps/deployments:list",
    "apps/deployments:watch",
    "apps/deployments:create",
    "apps/deployments:patch",
    "apps/deployments:delete",
    "/services:get",
    "/services:list",
    "/services:watch",
    "/services:create",
    "/services:patch",
    "/services:delete",
    "gateway.networking.k8s.io/httproutes:get",
    "gateway.networking.k8s.io/httproutes:create",
    "gateway.networking.k8s.io/httproutes:patch",
    "gateway.networking.k8s.io/httproutes:delete",
    "autoscaling/horizontalpodautoscalers:get",
    "autoscaling/horizontalpodautoscalers:list",
    "autoscaling/horizontalpodautoscalers:watch",
    "autoscaling/horizontalpodautoscalers:create",
    "autoscaling/horizontalpodautoscalers:patch",
    "autoscaling/horizontalpodautoscalers:delete",
    "/configmaps:get",
    "/configmaps:list",
    "/configmaps:watch",
    "/persistentvolumeclaims:get",
    "/pods:list",
    "/pods:watch",
    "events.k8s.io/events:create",
    "events.k8s.io/events:patch",
];

#[test]
fn helm_lint_passes_strict() {
    let out = helm(&["lint", "--strict", &chart()]).unwrap();
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_values_schema_rejects_bad_values_naming_the_field() {
    let chart = chart();
    for (set, field) in [
        ("replicaCount=2,leaderElection.enabled=false", "/leaderElection/enabled"),
        ("logFormat=xml", "/logFormat"),
        ("metrics.port=0", "/metrics/port"),
        ("imagesTag=v1", "imagesTag"),
        ("serviceMonitor.interval=often", "/serviceMonitor/interval"),
        ("allowedImagePrefixes=ghcr.io/", "/allowedImagePrefixes"),
        ("allowedImagePrefixes={a b}", "/allowedImagePrefixes/0"),
        ("reconcile.maxConcurrent=0", "/reconcile/maxConcurrent"),
        ("reconcile.resyncSeconds=0", "/reconcile/resyncSeconds"),
    ] {
        let err = helm(&["template", "x", &chart, "--set", set]).expect_err(set).to_string();
        assert!(err.contains(field), "--set {set}: error does not name {field}: {err}");
    }
    // The image policy is a list of prefixes, passed as one comma-separated flag, or none at all.
    let args = |docs: &[Value]| {
        find(docs, "Deployment", "modelship")["spec"]["template"]["spec"]["containers"][0]["args"].clone()
    };
    let policy = args(&render(&["allowedImagePrefixes={ghcr.io/modelship/,registry.example/ml/}"]));
    assert!(
        policy.as_array().unwrap().contains(&"--allowed-image-prefixes=ghcr.io/modelship/,registry.example/ml/".into()),
        "{policy}"
    );
    let none = args(&render(&[]));
    assert!(!none.to_string().contains("--allowed-image-prefixes"), "no policy by default: {none}");
    // Two replicas with leader election is the supported HA setup.
    let docs = render(&["replicaCount=2"]);
    assert_eq!(find(&docs, "Deployment", "modelship")["spec"]["replicas"], 2);
}

/// `reconcile.*` become the operator's flags, named as its own `--help` names them.
#[test]
fn the_reconcile_values_reach_the_operator_as_its_flags() {
    let args = |set: &[&str]| -> Vec<String> {
        let docs = render(set);
        let args = &find(&docs, "Deployment", "modelship")["spec"]["template"]["spec"]["containers"][0]["args"];
        args.as_array().unwrap().iter().filter_map(Value::as_str).map(String::from).collect()
    };
    let flags = ["--max-concurrent-reconciles", "--debounce-ms", "--resync-seconds"];
    let set = args(&["reconcile.maxConcurrent=4", "reconcile.debounceMs=50", "reconcile.resyncSeconds=30"]);
    for (flag, value) in flags.iter().zip(["4", "50", "30"]) {
        assert!(set.contains(&format!("{flag}={value}")), "{flag}={value} missing: {set:?}");
    }
    let defaults = args(&[]);
    for (flag, value) in flags.iter().zip(["16", "200", "300"]) {
        assert!(defaults.contains(&format!("{flag}={value}")), "{flag}={value} missing: {defaults:?}");
    }
    let help = run(&modelship_tests::binary("modelship-operator"), &["--help"], None).unwrap();
    for flag in flags {
        assert!(help.contains(flag), "the operator has no {flag}: {help}");
    }
}

/// `mlflow.trackingURI` becomes the operator's flag and `mlflow.credentialsSecret` its optional
/// env from that Secret, named as the operator's own `--help` names them; neither by default.
#[test]
fn the_mlflow_values_reach_the_operator_as_its_flag_and_env() {
    let container =
        |docs: &[Value]| find(docs, "Deployment", "modelship")["spec"]["template"]["spec"]["containers"][0].clone();
    let set = ["mlflow.trackingURI=http://mlflow.mlflow.svc:5000", "mlflow.credentialsSecret=mlflow-operator"];
    let c = container(&render(&set));
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--mlflow-tracking-uri=http://mlflow.mlflow.svc:5000"), "{args:?}");
    let refs: BTreeSet<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == "mlflow-operator")
        .inspect(|e| assert_eq!(e["valueFrom"]["secretKeyRef"]["optional"], true, "{e}"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("MODELSHIP_MLFLOW_USERNAME", "username"),
        ("MODELSHIP_MLFLOW_PASSWORD", "password"),
        ("MODELSHIP_MLFLOW_TOKEN", "token"),
    ]
    .map(|(e, k)| (e.to_string(), k.to_string()))
    .into();
    assert_eq!(refs, want);
    let help = run(&modelship_tests::binary("modelship-operator"), &["--help"], None).unwrap();
    for name in
        ["--mlflow-tracking-uri", "MODELSHIP_MLFLOW_USERNAME", "MODELSHIP_MLFLOW_PASSWORD", "MODELSHIP_MLFLOW_TOKEN"]
    {
        assert!(help.contains(name), "the operator has no {name}: {help}");
    }
    let default = container(&render(&[]));
    assert!(!default.to_string().contains("mlflow"), "no MLflow settings by default: {default}");
}

#[test]
fn the_chart_grants_exactly_the_api_calls_the_operator_makes() {
    let docs = render(&[]);
    let role = find(&docs, "ClusterRole", "modelship");
    assert_eq!(grants(&role["rules"]), MODEL_GRANTS.iter().map(|s| s.to_string()).collect());
    let binding = find(&docs, "ClusterRoleBinding", "modelship");
    assert_eq!(binding["subjects"][0]["name"], "modelship");
    assert_eq!(binding["subjects"][0]["namespace"], "modelship-system");
    let lease = find(&docs, "Role", "modelship-leader-election");
    let expected: BTreeSet<String> = [
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:get[String(\"modelship\")]",
        "coordination.k8s.io/leases:update[String(\"modelship\")]",
    ]
    .map(String::from)
    .into();
    assert_eq!(grants(&lease["rules"]), expected);
    assert!(!kinds(&docs).iter().any(|k| k == "ServiceMonitor" || k == "NetworkPolicy"), "optional parts are off");

    // One namespace: a Role there instead of a ClusterRole, and the operator told to watch it.
    let docs = render(&["watchNamespace=team-a"]);
    assert!(!kinds(&docs).iter().any(|k| k.starts_with("Cluster")), "{:?}", kinds(&docs));
    let role = find(&docs, "Role", "modelship");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(grants(&role["rules"]), MODEL_GRANTS.iter().map(|s| s.to_string()).collect());
    let args = &find(&docs, "Deployment", "modelship")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().unwrap().contains(&"--namespace=team-a".into()), "{args}");

    // No leader election: no Lease permissions at all.
    let docs = render(&["leaderElection.enabled=false"]);
    assert!(docs.iter().all(|d| d["metadata"]["name"] != "modelship-leader-election"));
}

#[test]
fn the_operator_deployment_is_restricted_probed_and_pinned_to_the_app_version() {
    let docs = render(&["networkPolicy.enabled=true", "serviceMonitor.enabled=true"]);
    let version = env!("CARGO_PKG_VERSION");
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("charts/modelship/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart_yaml["version"], version, "the chart version follows the workspace version");
    assert_eq!(chart_yaml["appVersion"], version, "appVersion follows the workspace version");

    let pod = &find(&docs, "Deployment", "modelship")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], format!("ghcr.io/modelship/modelship-operator:{version}"));
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(
        args.contains(&format!("--server-image=ghcr.io/modelship/modelship-server:{version}").as_str()),
        "{args:?}"
    );
    assert!(args.contains(&"--leader-elect=true") && args.contains(&"--lease-name=modelship"), "{args:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "unique Lease identity per pod: {env:?}");

    let svc = find(&docs, "Service", "modelship-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sm = find(&docs, "ServiceMonitor", "modelship");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let np = find(&docs, "NetworkPolicy", "modelship");
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "metrics");

    // The operator's own default server image is the one the chart passes.
    let main = std::fs::read_to_string(root().join("operator/src/main.rs")).unwrap();
    assert!(
        main.contains("\"ghcr.io/modelship/modelship-server:\""),
        "operator default server image repository changed"
    );
}

#[test]
fn the_generated_manifests_are_fresh() {
    let script = root().join("manifests/generate");
    let out = std::process::Command::new(&script).arg("--check").env("HELM", tool("HELM")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_kustomize_overlay_builds_with_its_settings() {
    let build = |dir: &str| docs(&kubectl(&["kustomize", &root().join(dir).to_string_lossy()]).unwrap());
    for overlay in ["dev", "prod"] {
        let docs = build(&format!("manifests/overlays/{overlay}"));
        let crd = find(&docs, "CustomResourceDefinition", "mlmodels.modelship.dev");
        assert_eq!(crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"], "-2");
        assert!(
            crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].as_str().unwrap().contains("Prune=false")
        );
        let ns = find(&docs, "Namespace", "modelship-system");
        assert_eq!(ns["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"], "-1");
        let d = find(&docs, "Deployment", "modelship");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let rust_log = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "RUST_LOG").unwrap()["value"].clone();
        match overlay {
            "dev" => {
                assert_eq!(d["spec"]["replicas"], 1);
                assert!(c["image"].as_str().unwrap().ends_with(":main"), "{}", c["image"]);
                assert!(args.contains(&"--log-format=text"), "{args:?}");
                assert_eq!(rust_log, "debug,kube=info");
            }
            _ => {
                assert_eq!(d["spec"]["replicas"], 2);
                assert!(args.contains(&"--leader-elect=true") && args.contains(&"--log-format=json"), "{args:?}");
                assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
                let pdb = find(&docs, "PodDisruptionBudget", "modelship");
                assert_eq!(pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);
            }
        }
    }
    for env in ["dev", "prod"] {
        let docs = build(&format!("manifests/gitops/models/{env}"));
        let m = find(&docs, "MLModel", "iris");
        assert_eq!(m["metadata"]["namespace"], format!("models-{env}"));
        assert_eq!(find(&docs, "ConfigMap", "iris-model")["metadata"]["namespace"], format!("models-{env}"));
        assert_eq!(m["spec"]["autoscaling"].is_object(), env == "prod");
    }
}

#[test]
fn argocd_applications_point_at_real_paths_in_sync_wave_order() {
    let read = |f: &str| docs(&std::fs::read_to_string(root().join("manifests/argocd").join(f)).unwrap());
    let operator = &read("apps/operator-application.yaml")[0];
    let set = &read("apps/models-applicationset.yaml")[0];
    let root_app = &read("root-application.yaml")[0];
    let dev = &read("models-dev-application.yaml")[0];
    let wave = |v: &Value| {
        v["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"].as_str().unwrap().parse::<i32>().unwrap()
    };
    assert!(wave(operator) < wave(set) && wave(operator) < wave(dev), "the operator syncs before the models");
    let has_kustomization = |p: &str| root().join(p).join("kustomization.yaml").exists();
    assert!(has_kustomization(operator["spec"]["source"]["path"].as_str().unwrap()));
    assert!(has_kustomization(dev["spec"]["source"]["path"].as_str().unwrap()));
    let pattern = set["spec"]["generators"][0]["git"]["directories"][0]["path"].as_str().unwrap();
    let parent = pattern.strip_suffix("/*").unwrap();
    let envs: Vec<_> = std::fs::read_dir(root().join(parent)).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(envs.len() >= 2 && envs.iter().all(|e| e.join("kustomization.yaml").exists()), "{envs:?}");
    for app_spec in [&set["spec"]["template"]["spec"], &dev["spec"]] {
        let opts: Vec<&str> =
            app_spec["syncPolicy"]["syncOptions"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
        assert!(opts.contains(&"SkipDryRunOnMissingResource=true"), "MLModels sync even when the CRD is new: {opts:?}");
    }
    // kubectl apply -k manifests/argocd applies the root Application only; it syncs apps/ from
    // Git, where the waves order the operator before the models.
    let applied = kubectl(&["kustomize", &root().join("manifests/argocd").to_string_lossy()]).unwrap();
    assert_eq!(kinds(&docs(&applied)), ["Application"]);
    let synced_path = root_app["spec"]["source"]["path"].as_str().unwrap();
    let synced = kubectl(&["kustomize", &root().join(synced_path).to_string_lossy()]).unwrap();
    let mut app_kinds = kinds(&docs(&synced));
    app_kinds.sort();
    assert_eq!(app_kinds, ["Application", "ApplicationSet"]);
}

#[test]
fn hadolint_passes_and_the_images_are_minimal_and_non_root() {
    let dockerfile = root().join("Dockerfile");
    run(&tool("HADOLINT"), &[&dockerfile.to_string_lossy()], None).unwrap();
    let bad = std::env::temp_dir().join("modelship-bad.Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN apt-get install curl\n").unwrap();
    assert!(run(&tool("HADOLINT"), &[&bad.to_string_lossy()], None).is_err(), "hadolint catches a bad Dockerfile");

    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains("gcr.io/distroless/cc-debian12:nonroot"), "distroless runtime");
    for target in ["server", "operator"] {
        let stage = text.split(&format!(" AS {target}\n")).nth(1).unwrap().split("\nFROM ").next().unwrap();
        assert!(
            stage.contains(&format!("ENTRYPOINT [\"/usr/local/bin/modelship-{target}\"]")),
            "{target}: exec-form entrypoint"
        );
        assert!(
            stage.contains(&format!("org.opencontainers.image.title=\"modelship-{target}\"")),
            "{target}: OCI title"
        );
    }
    let base = text.split(" AS base\n").nth(1).unwrap().split("\nFROM ").next().unwrap();
    assert!(base.contains("USER 65532:65532") && base.contains("org.opencontainers.image.source"), "{base}");
}

#[test]
fn actionlint_passes_on_every_workflow_and_catches_mistakes() {
    let actionlint = tool("ACTIONLINT");
    let shellcheck = tool("SHELLCHECK");
    let sc = shellcheck.to_string_lossy();
    let workflows: Vec<_> =
        std::fs::read_dir(root().join(".github/workflows")).unwrap().map(|e| e.unwrap().path()).collect();
    let names: BTreeSet<String> =
        workflows.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for required in ["ci.yml", "e2e.yml", "release.yml"] {
        assert!(names.contains(required), "{required} missing: {names:?}");
    }
    let files: Vec<String> = workflows.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let mut args = vec!["-shellcheck", &sc];
    args.extend(files.iter().map(String::as_str));
    run(&actionlint, &args, None).unwrap();

    let dir = std::env::temp_dir().join("modelship-actionlint");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo $UNQUOTED ${{ github.event.head_commit.message }}\n").unwrap();
    let err = run(&actionlint, &["-shellcheck", &sc, &bad.to_string_lossy()], None).unwrap_err().to_string();
    assert!(err.contains("SC2086") && err.contains("untrusted"), "actionlint with shellcheck: {err}");
}

#[test]
fn the_e2e_workflow_uses_kind_helm_and_the_gitops_path() {
    let e2e = std::fs::read_to_string(root().join(".github/workflows/e2e.yml")).unwrap();
    for needle in [
        "helm/kind-action",
        "kind load docker-image",
        "helm install modelship charts/modelship",
        "/predict",
        "argocd-cm-health.yaml",
        "models-dev-application.yaml",
    ] {
        assert!(e2e.contains(needle), "e2e.yml lacks {needle}");
    }
    assert!(Path::new(&root().join("manifests/argocd/models-dev-application.yaml")).exists());
}
