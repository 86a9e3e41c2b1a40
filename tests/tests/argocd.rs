//! GitOps with a real ArgoCD (tests/argocd/up: ArgoCD v3.2.11's repo server, application
//! controller and ApplicationSet controller against the local plane, syncing from a Git
//! repository on this machine). What a user does: check out their fork (repoURL pointed at it),
//! `kubectl apply -n argocd -k manifests/argocd`, then commit. The operator ArgoCD installs runs
//! for real on the real node, and so do the models' pods.
//!
//! Run by tests/run after the rest of the suite (the operator ArgoCD installs watches the whole
//! cluster), one test at a time: they share the Applications. Without MODELSHIP_ARGOCD_DIR (set
//! by tests/argocd/up's env file) each test says it is skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use modelship_crds::MLModel;
use modelship_tests::{client, is_ready, kubectl, wait_for};
use serde_json::Value;

/// Syncs, real pods and ArgoCD's 20 s resync on a busy 2-core machine.
const T: Duration = Duration::from_secs(240);

/// The ArgoCD that tests/argocd/up started, from its env file.
struct ArgoCd {
    repo: String,
}

impl ArgoCd {
    fn from_env() -> Option<Self> {
        let Some(dir) = std::env::var_os("MODELSHIP_ARGOCD_DIR") else {
            eprintln!("skipped: no ArgoCD (tests/argocd/up starts one; tests/run does)");
            return None;
        };
        let env = std::fs::read_to_string(Path::new(&dir).join("env")).expect("tests/argocd/up's env file");
        let repo = env.lines().find_map(|l| l.strip_prefix("MODELSHIP_ARGOCD_REPO=")).unwrap().to_string();
        Some(Self { repo })
    }
}

/// A user's checkout of their fork: a clone of the repository ArgoCD syncs from.
struct Fork {
    dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=modelship-tests", "-c", "user.email=tests@modelship.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Fork {
    /// A clone whose main holds the tree tests/argocd/up seeded (tag `baseline`): what an earlier
    /// test left in Git is committed away first.
    fn clone(argo: &ArgoCd) -> Self {
        let dir = std::env::temp_dir().join(format!("modelship-fork-{}-{}", std::process::id(), rand_suffix()));
        git(&std::env::temp_dir(), &["clone", "-q", &argo.repo, dir.to_str().unwrap()]);
        let fork = Self { dir };
        git(&fork.dir, &["rm", "-rq", "."]);
        git(&fork.dir, &["checkout", "baseline", "--", "."]);
        if !git(&fork.dir, &["status", "--porcelain"]).is_empty() {
            git(&fork.dir, &["commit", "-qam", "back to the baseline"]);
            fork.push();
        }
        fork
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).to_string_lossy().into_owned()
    }

    /// Commits what `edit` changed in the checkout and pushes it; returns the commit.
    fn commit(&self, message: &str, edit: impl FnOnce(&Path)) -> String {
        edit(&self.dir);
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-qm", message]);
        self.push()
    }

    /// `git revert` of the last commit, pushed.
    fn revert_last(&self) -> String {
        git(&self.dir, &["revert", "--no-edit", "HEAD"]);
        self.push()
    }

    fn push(&self) -> String {
        git(&self.dir, &["push", "-q", "origin", "main"]);
        git(&self.dir, &["rev-parse", "HEAD"])
    }
}

impl Drop for Fork {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn application(name: &str) -> Option<Value> {
    let json = kubectl(&["get", "-n", "argocd", "application", name, "-o", "json"]).ok()?;
    serde_json::from_str(&json).ok()
}

/// `(sync status, health status, synced revision)` of an Application.
fn state(app: &Value) -> (String, String, String) {
    let s = |p: &str| app.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    (s("/status/sync/status"), s("/status/health/status"), s("/status/sync/revision"))
}

/// Asks ArgoCD to look at Git again now (it polls every 3 minutes by default).
fn refresh(name: &str) {
    kubectl(&["annotate", "-n", "argocd", "application", name, "argocd.argoproj.io/refresh=hard", "--overwrite"])
        .unwrap();
}

/// Waits until the Application is Synced and Healthy (at `revision`, if given).
async fn synced_and_healthy(name: &str, revision: Option<&str>) -> Value {
    wait_for(&format!("Application {name} Synced and Healthy"), T, || async {
        let app = application(name)?;
        let (sync, health, at) = state(&app);
        (sync == "Synced" && health == "Healthy" && revision.is_none_or(|r| r == at)).then_some(app)
    })
    .await
}

/// The health of the MLModel `name` in an Application's resource list, with its message.
fn model_health(app: &Value, name: &str) -> Option<(String, String)> {
    let r = app["status"]["resources"].as_array()?.iter().find(|r| r["kind"] == "MLModel" && r["name"] == name)?;
    let s = |k: &str| r["health"][k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("message")))
}

/// Applies the app of apps from the fork, as the README says, and waits until everything is
/// Synced and Healthy.
async fn installed(argo: &ArgoCd) -> Fork {
    let fork = Fork::clone(argo);
    let head = git(&fork.dir, &["rev-parse", "HEAD"]);
    kubectl(&["apply", "-n", "argocd", "-k", &fork.path("manifests/argocd")]).unwrap();
    for app in ["modelship-apps", "modelship", "modelship-models-dev", "modelship-models-prod"] {
        wait_for(&format!("Application {app}"), T, || async { application(app).map(|_| ()) }).await;
        refresh(app);
        synced_and_healthy(app, Some(&head)).await;
    }
    fork
}

async fn ready_models(ns: &str) -> Vec<MLModel> {
    let models: Api<MLModel> = Api::namespaced(client().await, ns);
    models.list(&Default::default()).await.unwrap().items
}

#[tokio::test]
async fn the_app_of_apps_installs_the_operator_first_then_every_environment_with_its_models_ready() {
    let Some(argo) = ArgoCd::from_env() else { return };
    let start = Instant::now();
    let _fork = installed(&argo).await;
    eprintln!("every Application Synced and Healthy {:.1} s after kubectl apply -k", start.elapsed().as_secs_f64());

    // Sync waves: the ApplicationSet (wave 1) was made only once the operator (wave 0) was up.
    let operator: Api<Deployment> = Api::namespaced(client().await, "modelship-system");
    let d = operator.get("modelship").await.unwrap();
    let available = d.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True");
    let set: Value = serde_json::from_str(
        &kubectl(&["get", "-n", "argocd", "applicationset", "modelship-models", "-o", "json"]).unwrap(),
    )
    .unwrap();
    let set_created: Time = serde_json::from_value(set["metadata"]["creationTimestamp"].clone()).unwrap();
    assert!(
        set_created >= available.last_transition_time.unwrap(),
        "the models' ApplicationSet was created before the operator Deployment was Available"
    );
    let pods = kubectl(&["get", "pods", "-n", "modelship-system", "-o", "jsonpath={.items[*].spec.nodeName}"]).unwrap();
    assert!(!pods.is_empty() && pods.split(' ').all(|n| n == modelship_tests::real_node::NODE), "{pods}");

    for ns in ["models-dev", "models-prod"] {
        let models = ready_models(ns).await;
        assert!(!models.is_empty() && models.iter().all(|m| is_ready(m, None)), "{ns}: {models:?}");
    }
}

/// A dev-only change of the iris model, as a kustomize patch in manifests/gitops/models/dev.
fn set_dev_version(dir: &Path, version: &str) {
    let k = dir.join("manifests/gitops/models/dev/kustomization.yaml");
    let mut text = std::fs::read_to_string(&k).unwrap();
    text.push_str(&format!(
        "patches:\n  - target: {{group: modelship.dev, kind: MLModel, name: iris}}\n    patch: |-\n      \
         - op: replace\n        path: /spec/model/version\n        value: {version}\n"
    ));
    std::fs::write(k, text).unwrap();
}

#[tokio::test]
async fn a_commit_rolls_a_model_out_progressing_until_ready_and_a_revert_rolls_it_back() {
    let Some(argo) = ArgoCd::from_env() else { return };
    let fork = installed(&argo).await;
    let app = "modelship-models-dev";

    let commit = fork.commit("dev: iris v2", |dir| set_dev_version(dir, "v2"));
    let pushed = Instant::now();
    refresh(app);
    // ArgoCD runs our health check on the MLModel: Progressing while the new version rolls out.
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    wait_for("the dev Application to be Synced to the commit and Healthy again", T, || async {
        let app = application(app)?;
        let (sync, health, at) = state(&app);
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&health) {
            seen.push(health.clone());
        }
        (sync == "Synced" && at == commit && health == "Healthy" && seen.iter().any(|h| h == "Progressing"))
            .then_some(())
    })
    .await;
    let seen = seen.into_inner().unwrap();
    eprintln!("v2: Healthy {:.1} s after the push; health seen: {seen:?}", pushed.elapsed().as_secs_f64());
    let iris = ready_models("models-dev").await.into_iter().find(|m| m.metadata.name.as_deref() == Some("iris"));
    assert!(iris.as_ref().is_some_and(|m| is_ready(m, Some("v2"))), "{iris:?}");

    let revert = fork.revert_last();
    refresh(app);
    synced_and_healthy(app, Some(&revert)).await;
    let models: Api<MLModel> = Api::namespaced(client().await, "models-dev");
    wait_for("iris back at v1 and Ready", T, || async {
        models.get("iris").await.ok().filter(|m| is_ready(m, Some("v1"))).map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn a_model_whose_configmap_is_missing_is_degraded_with_our_message_and_a_revert_removes_it() {
    let Some(argo) = ArgoCd::from_env() else { return };
    let fork = installed(&argo).await;
    let app = "modelship-models-dev";

    fork.commit("dev: a model whose ConfigMap nobody made", |dir| {
        let dev = dir.join("manifests/gitops/models/dev");
        std::fs::write(
            dev.join("broken.yaml"),
            "apiVersion: modelship.dev/v1alpha1\nkind: MLModel\nmetadata:\n  name: broken\nspec:\n  model:\n    \
             uri: configmap://no-such-model/model.json\n",
        )
        .unwrap();
        let k = dev.join("kustomization.yaml");
        let text = std::fs::read_to_string(&k)
            .unwrap()
            .replace("  - namespace.yaml\n", "  - namespace.yaml\n  - broken.yaml\n");
        std::fs::write(k, text).unwrap();
    });
    refresh(app);
    let (health, message) = wait_for("the dev Application to show the broken model Degraded", T, || async {
        let app = application(app)?;
        let (status, message) = model_health(&app, "broken")?;
        (state(&app).1 == "Degraded" && status == "Degraded").then_some((status, message))
    })
    .await;
    assert!(
        message.contains(r#"ConfigMap "no-such-model" referenced by spec.model.uri does not exist"#),
        "{health}: {message}"
    );

    // The revert removes the model from Git: ArgoCD prunes it, its children are collected.
    let revert = fork.revert_last();
    refresh(app);
    synced_and_healthy(app, Some(&revert)).await;
    let models: Api<MLModel> = Api::namespaced(client().await, "models-dev");
    wait_for("the broken model pruned", T, || async {
        models.get_opt("broken").await.unwrap().is_none().then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client().await, "models-dev");
    wait_for("its children collected", T, || async {
        let left =
            deployments.list(&kube::api::ListParams::default().labels("modelship.dev/model=broken")).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}
