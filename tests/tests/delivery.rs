//! Delivery against the real API server: the chart and every kustomize overlay apply with
//! `--dry-run=server`; a real `helm install` gives the operator's ServiceAccount exactly what the
//! operator needs (`kubectl auth can-i` both ways), and the operator, running on that
//! ServiceAccount's own token, serves iris.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use modelship_crds::MLModel;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, client, install_crd, kubectl, kubectl_stdin, remove_mlmodel_field, root,
    run, tool, wait_ready,
};

fn helm(args: &[&str]) -> anyhow::Result<String> {
    run(&tool("HELM"), args, None)
}

fn path(rel: &str) -> String {
    root().join(rel).to_string_lossy().into_owned()
}

/// A Helm release that is uninstalled (with its cluster-scoped RBAC) when dropped.
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn install(name: &str, namespace: &str, sets: &[&str]) -> Self {
        assert!(name.contains("modelship"), "the chart then names its objects after the release");
        let chart = path("charts/modelship");
        let mut args = vec!["install", name, &chart, "--namespace", namespace, "--wait", "--timeout", "120s"];
        for s in sets {
            args.extend(["--set", s]);
        }
        helm(&args).unwrap();
        Self { name: name.into(), namespace: namespace.into() }
    }

    /// The chart names everything after a release whose name contains "modelship".
    fn service_account(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", &self.name, "--namespace", &self.namespace, "--wait"]);
    }
}

/// `resource` is kubectl's TYPE[/NAME], optionally followed by `--subresource=...`.
fn can_i(sa: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    // `auth can-i` exits 1 for "no"; its stdout says which.
    let mut args = vec!["auth", "can-i", verb, "--as", sa, "-n", namespace];
    args.extend(resource.split_whitespace());
    let out = kubectl(&args);
    match out {
        Ok(s) => s.trim() == "yes",
        Err(e) if e.to_string().trim_end().ends_with("no") => false,
        Err(e) => panic!("kubectl auth can-i {verb} {resource}: {e}"),
    }
}

/// What the operator does where models live (see delivery_static.rs for the exact rule list).
const ALLOWED: &[(&str, &str)] = &[
    ("get", "mlmodels.modelship.dev"),
    ("list", "mlmodels.modelship.dev"),
    ("watch", "mlmodels.modelship.dev"),
    ("patch", "mlmodels.modelship.dev --subresource=status"),
    ("watch", "mlbatchjobs.modelship.dev"),
    ("patch", "mlbatchjobs.modelship.dev --subresource=status"),
    ("create", "jobs.batch"),
    ("list", "jobs.batch"),
    ("patch", "cronjobs.batch"),
    ("delete", "cronjobs.batch"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("watch", "deployments.apps"),
    ("create", "services"),
    ("patch", "services"),
    ("get", "horizontalpodautoscalers.autoscaling"),
    ("watch", "horizontalpodautoscalers.autoscaling"),
    ("patch", "horizontalpodautoscalers.autoscaling"),
    ("delete", "horizontalpodautoscalers.autoscaling"),
    ("watch", "configmaps"),
    ("get", "persistentvolumeclaims"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "events.events.k8s.io"),
    ("patch", "events.events.k8s.io"),
    ("delete", "deployments.apps"),
    ("patch", "httproutes.gateway.networking.k8s.io"),
];

/// What it must never do: write a spec (GitOps holds it), touch secrets, act outside its objects.
const DENIED: &[(&str, &str)] = &[
    ("update", "mlmodels.modelship.dev"),
    ("patch", "mlbatchjobs.modelship.dev"),
    ("update", "mlbatchjobs.modelship.dev --subresource=status"),
    ("patch", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("patch", "mlmodels.modelship.dev"),
    ("delete", "mlmodels.modelship.dev"),
    ("create", "mlmodels.modelship.dev"),
    ("update", "mlmodels.modelship.dev --subresource=scale"),
    ("update", "mlmodels.modelship.dev --subresource=status"),
    ("update", "deployments.apps"),
    ("deletecollection", "deployments.apps"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("create", "events"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "namespaces"),
    ("delete", "persistentvolumeclaims"),
];

#[tokio::test]
async fn the_rendered_chart_applies_with_server_dry_run() {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "chart-dry").await;
    let chart = path("charts/modelship");
    for sets in [
        vec![],
        vec!["--set", "replicaCount=2", "--set", "networkPolicy.enabled=true"],
        vec!["--set", "watchNamespace=default"],
    ] {
        let mut args = vec!["template", "dry", chart.as_str(), "--namespace", ns.name.as_str(), "--include-crds"];
        args.extend(sets.iter().copied());
        let yaml = helm(&args).unwrap();
        let out = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml))
            .unwrap_or_else(|e| panic!("helm template {sets:?} does not apply: {e}"));
        assert!(out.contains("deployment.apps/dry-modelship created (server dry run)"), "{out}");
    }
}

#[tokio::test]
async fn every_kustomize_overlay_and_gitops_environment_applies_with_server_dry_run() {
    client().await;
    install_crd().await;
    // Namespaced objects only dry-run into namespaces that exist, so create those for real.
    for ns in [
        "manifests/base/namespace.yaml",
        "manifests/gitops/models/dev/namespace.yaml",
        "manifests/gitops/models/prod/namespace.yaml",
    ] {
        kubectl(&["apply", "-f", &path(ns)]).unwrap();
    }
    for dir in [
        "manifests/overlays/dev",
        "manifests/overlays/prod",
        "manifests/gitops/models/dev",
        "manifests/gitops/models/prod",
    ] {
        let out = kubectl(&["apply", "--dry-run=server", "-k", &path(dir)])
            .unwrap_or_else(|e| panic!("kubectl apply -k {dir} --dry-run=server: {e}"));
        assert!(out.contains("(server dry run)"), "{dir}: {out}");
        if dir.contains("gitops") {
            assert!(out.contains("mlmodel.modelship.dev/iris"), "{dir}: {out}");
        } else {
            assert!(out.contains("deployment.apps/modelship"), "{dir}: {out}");
        }
    }
}

#[tokio::test]
async fn helm_install_grants_the_service_account_exactly_what_the_operator_needs() {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "helm").await;
    let release = Release::install(&format!("modelship-{}", &ns.name[5..]), &ns.name, &["serverImage.tag=test"]);
    let sa = release.service_account();
    let out = helm(&["status", &release.name, "-n", &ns.name]).unwrap();
    assert!(out.contains("STATUS: deployed"), "{out}");
    // Cluster-wide: checked in a namespace the release has never seen.
    let elsewhere = "default";
    for (verb, resource) in ALLOWED {
        assert!(can_i(&sa, verb, resource, elsewhere), "the operator needs to {verb} {resource}");
    }
    for (verb, resource) in DENIED {
        assert!(!can_i(&sa, verb, resource, elsewhere), "the operator must not be able to {verb} {resource}");
    }
    // Its Lease, in its own namespace only.
    assert!(can_i(&sa, "create", "leases.coordination.k8s.io", &ns.name));
    assert!(can_i(&sa, "update", &format!("leases.coordination.k8s.io/{}", release.name), &ns.name));
    assert!(!can_i(&sa, "update", "leases.coordination.k8s.io/someone-elses", &ns.name));
    assert!(!can_i(&sa, "delete", &format!("leases.coordination.k8s.io/{}", release.name), &ns.name));
    assert!(!can_i(&sa, "create", "leases.coordination.k8s.io", elsewhere));
}

/// A kubeconfig for the cluster under test that authenticates with `token`.
fn token_kubeconfig(token: &str, file: &str) -> PathBuf {
    let current: serde_json::Value =
        serde_json::from_str(&kubectl(&["config", "view", "--raw", "--minify", "-o", "json"]).unwrap()).unwrap();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "under-test", "cluster": current["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "under-test", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = std::env::temp_dir().join(file);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test]
async fn the_operator_on_its_chart_service_account_token_serves_a_model() {
    let c = client().await;
    install_crd().await;
    let system = TestNamespace::new(&c, "helm-sys").await;
    let models_ns = TestNamespace::new(&c, "helm-models").await;
    let watch = format!("watchNamespace={}", models_ns.name);
    let release = Release::install(&format!("modelship-{}", &system.name[9..]), &system.name, &[&watch]);
    // Namespace-scoped install: nothing cluster-wide, and nothing outside the watched namespace.
    let sa = release.service_account();
    assert!(can_i(&sa, "patch", "deployments.apps", &models_ns.name));
    assert!(!can_i(&sa, "patch", "deployments.apps", "default"));
    assert!(!can_i(&sa, "list", "mlmodels.modelship.dev", "default"));

    let token = kubectl(&["create", "token", &release.name, "-n", &system.name, "--duration", "1h"]).unwrap();
    let kubeconfig = token_kubeconfig(token.trim(), &format!("modelship-{}.kubeconfig", release.name));
    let op = Operator::start_own(&OperatorOptions {
        lease_name: release.name.clone(),
        lease_namespace: system.name.clone(),
        kubeconfig: Some(kubeconfig),
        ..OperatorOptions::for_namespace(&models_ns.name)
    });
    kubectl(&["apply", "-n", &models_ns.name, "-f", &path("examples/iris.yaml")]).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &models_ns.name);
    wait_ready(&models, "iris", Some("v1"), Duration::from_secs(90)).await;
    // A scale-up and an HPA exercise the remaining verbs (handover patch, HPA create and delete).
    kubectl(&[
        "patch",
        "mlmodel",
        "iris",
        "-n",
        &models_ns.name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"autoscaling":{"minReplicas":1,"maxReplicas":3}}}"#,
    ])
    .unwrap();
    modelship_tests::wait_for("the HPA", Duration::from_secs(60), || async {
        kubectl(&["get", "hpa", "iris", "-n", &models_ns.name]).ok()
    })
    .await;
    remove_mlmodel_field(&models_ns.name, "iris", "/spec/autoscaling");
    modelship_tests::wait_for("the HPA removed", Duration::from_secs(60), || async {
        kubectl(&["get", "hpa", "iris", "-n", &models_ns.name]).err().map(|_| ())
    })
    .await;
    wait_ready(&models, "iris", Some("v1"), Duration::from_secs(60)).await;
    let events = kubectl(&["get", "events.events.k8s.io", "-n", &models_ns.name, "-o", "name"]).unwrap();
    assert!(!events.trim().is_empty(), "the operator could record Events");
    let log = op.log_text();
    assert!(!log.contains("forbidden") && !log.contains("Forbidden"), "an RBAC denial in the operator log:\n{log}");
    assert_eq!(op.metric("modelship_operator_leader").await, 1.0, "it holds the Lease its Role allows");
}
