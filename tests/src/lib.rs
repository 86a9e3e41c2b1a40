//! Helpers for the integration suite: it runs against whatever cluster `KUBECONFIG` points to
//! (the local control plane of `tests/cluster/up`, or kind in GitHub Actions) and fails loudly
//! when none is reachable.

pub mod mlflow;
pub mod pod_template;
pub mod proxy;
pub mod token_gateway;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};

pub mod real_node;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built binary of the workspace (`cargo build --bins` runs before the suite).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let path = dir.join("debug").join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --bins` first", path.display());
    path
}

/// A client for the cluster under test; panics with a clear message when there is none.
pub async fn client() -> Client {
    let client = Client::try_default()
        .await
        .expect("no Kubernetes cluster configured: set KUBECONFIG (tests/cluster/up prints it)");
    client
        .apiserver_version()
        .await
        .expect("the Kubernetes API server is not reachable: start it with tests/cluster/up");
    client
}

/// Runs real `kubectl` against the cluster under test.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    kubectl_stdin(args, None)
}

/// Runs `kubectl` with `stdin` piped in; returns stdout, or stderr as the error.
pub fn kubectl_stdin(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    run(Path::new(&std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())), args, stdin)
}

/// Runs a program with `stdin` piped in; returns stdout, or the command and its stderr as the error.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{name} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tool that `tests/tools/install` provides, from the environment variable it prints
/// (`HELM`, `ACTIONLINT`, `HADOLINT`, `SHELLCHECK`); tests/run sets them.
pub fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("${var} is not set: run `eval \"$(tests/tools/install)\"` first (tests/run does)"));
    assert!(path.exists(), "${var} points to {}, which does not exist", path.display());
    path
}

/// Installs the CRDs (server-side, idempotent) and waits until they are established.
pub async fn install_crd() {
    static CRD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRD.get_or_init(|| async {
        for (file, _) in modelship_crds::crd_files() {
            let crd = root().join("crds").join(file);
            kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crd.to_string_lossy()])
                .expect("install CRD");
        }
        for crd in ["crd/mlmodels.modelship.dev", "crd/mlbatchjobs.modelship.dev"] {
            // A CRD created a moment ago may have no conditions yet: `kubectl wait` fails at once then.
            wait_for(crd, Duration::from_secs(60), || async {
                kubectl(&["wait", "--for=condition=Established", crd, "--timeout=10s"]).ok()
            })
            .await;
        }
    })
    .await;
}

/// The cluster under test with the CRD installed, and a fresh namespace for one test.
pub async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, prefix).await;
    (c, ns)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sending half of [`started`]: a watching task calls [`StartedTx::done`] once its watch has
/// delivered the current state.
pub struct StartedTx(Option<tokio::sync::oneshot::Sender<()>>);

impl StartedTx {
    pub fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Waits (with a deadline) until a spawned watch has delivered the current state, so a change the
/// test makes afterwards is seen as a change, not as the initial listing.
pub struct Started(tokio::sync::oneshot::Receiver<()>);

impl Started {
    pub async fn wait(self, what: &str) {
        match tokio::time::timeout(Duration::from_secs(30), self.0).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: the watch ended before it delivered the current state"),
            Err(_) => panic!("{what}: the watch delivered nothing within 30 s"),
        }
    }
}

/// A pair for a test to learn that a watch it spawned has started (see [`Started`]).
pub fn started() -> (StartedTx, Started) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (StartedTx(Some(tx)), Started(rx))
}

/// Merge-patches an MLModel with real kubectl, as a user would.
pub fn patch_mlmodel(ns: &str, name: &str, patch: &str) {
    kubectl(&["patch", "mlmodel", name, "-n", ns, "--type", "merge", "-p", patch]).expect("kubectl patch mlmodel");
}

/// Removes one field of an MLModel (a JSON-patch `remove` at `path`, e.g. `/spec/canary`) with kubectl.
pub fn remove_mlmodel_field(ns: &str, name: &str, path: &str) {
    let patch = format!(r#"[{{"op":"remove","path":"{path}"}}]"#);
    kubectl(&["patch", "mlmodel", name, "-n", ns, "--type", "json", "-p", &patch]).expect("kubectl patch mlmodel");
}

/// Whether the model is Ready for its current generation (and serving `version`, if given).
pub fn is_ready(m: &modelship_crds::MLModel, version: Option<&str>) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.observed_generation == m.metadata.generation
            && s.condition("Ready").is_some_and(|c| c.status == "True")
            && version.is_none_or(|v| s.model_version.as_deref() == Some(v))
    })
}

/// Waits until the model is Ready for its current generation, serving `version` if given.
pub async fn wait_ready(
    models: &Api<modelship_crds::MLModel>,
    name: &str,
    version: Option<&str>,
    timeout: Duration,
) -> modelship_crds::MLModel {
    let what = format!("MLModel {name} Ready{}", version.map(|v| format!(" at {v}")).unwrap_or_default());
    wait_for(&what, timeout, || async { models.get_opt(name).await.ok().flatten().filter(|m| is_ready(m, version)) })
        .await
}

/// A namespace for one test. Dropped: dumps its objects if the test failed, then deletes it.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("{prefix}-{:x}", nanos ^ std::process::id());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create test namespace");
        // Pods need the namespace's default ServiceAccount, which a controller creates.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for("the default ServiceAccount", Duration::from_secs(30), || async {
            sas.get_opt("default").await.ok().flatten()
        })
        .await;
        Self { name }
    }

    /// The namespace's objects, for failure reports.
    pub fn dump(&self) -> String {
        let all = kubectl(&[
            "-n",
            &self.name,
            "get",
            "mlmodels,mlbatchjobs,deployments,replicasets,jobs,cronjobs,services,pods,hpa,configmaps,pvc,events",
            "-o",
            "wide",
        ])
        .unwrap_or_else(|e| e.to_string());
        let yaml = kubectl(&["-n", &self.name, "get", "mlmodels,mlbatchjobs,deployments,jobs", "-o", "yaml"])
            .unwrap_or_else(|e| e.to_string());
        format!("{all}\n{yaml}")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== objects in namespace {} at failure ====\n{}", self.name, self.dump());
        }
        // kubectl, not our client: the client's worker lives on the test's runtime, which may be
        // gone or blocked by now.
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The server image the tests' operators put in model pods: `MODELSHIP_TEST_SERVER_IMAGE`
/// (the image loaded into kind), else a name that only kwok's fake pods can "run".
pub fn server_image() -> String {
    std::env::var("MODELSHIP_TEST_SERVER_IMAGE").unwrap_or_else(|_| "modelship-server:test".into())
}

/// A way for a model version to fail, for the rollback tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    CrashLoop,
    NeverReady,
}

/// Whether faults are real (`MODELSHIP_TEST_FAULTS=real`: pods really run, as on kind) or
/// simulated by kwok's fault stages on the local plane (tests/cluster/kwok-stages, the default).
pub fn real_faults() -> bool {
    std::env::var("MODELSHIP_TEST_FAULTS").as_deref() == Ok("real")
}

/// `spec.model` (or `spec.canary.model`) of the iris example at `version`.
pub fn iris_model(version: &str) -> serde_json::Value {
    serde_json::json!({"uri": "configmap://iris-model/model.json", "version": version})
}

/// A model whose pods fail the way `fault` says. Real: a checksum the artifact does not have
/// (the server exits, the pod crash-loops) or an address that never answers (never ready). kwok:
/// the version label its fault stages select.
pub fn failing_model(fault: Fault) -> serde_json::Value {
    let version = match fault {
        Fault::CrashLoop => "fault-crash-loop",
        Fault::NeverReady => "fault-never-ready",
    };
    let mut m = iris_model(version);
    if real_faults() {
        match fault {
            Fault::CrashLoop => m["sha256"] = "0".repeat(64).into(),
            Fault::NeverReady => m["uri"] = "http://10.255.255.1/model.json".into(),
        }
    }
    m
}

/// The operator under test: by default a `modelship-operator` process per test, run out of
/// cluster from the freshly built binary and watching only the test's namespace.
///
/// With `MODELSHIP_OPERATOR=external`, one operator that watches every namespace is already
/// running (the in-cluster one on kind, installed by the Helm chart; or `tests/external-operator`
/// here) and the suite reaches it through three shell commands:
/// `MODELSHIP_OPERATOR_METRICS_CMD` (prints its /metrics), `MODELSHIP_OPERATOR_RESTART_CMD`
/// (kills it and waits for the replacement) and `MODELSHIP_OPERATOR_LOGS_CMD`. Run that mode
/// with one test thread: its metrics are shared by every test.
pub struct Operator {
    process: Option<(Child, u16)>,
    pub log: PathBuf,
}

/// How to start an operator in a test.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub leader_elect: bool,
    pub lease_namespace: String,
    /// Run with this kubeconfig instead of the test's `KUBECONFIG` (e.g. a ServiceAccount's token).
    pub kubeconfig: Option<PathBuf>,
    /// More command-line flags, e.g. `--allowed-image-prefixes=...`.
    pub extra_args: Vec<String>,
}

impl OperatorOptions {
    pub fn for_namespace(ns: &str) -> Self {
        Self {
            namespace: ns.into(),
            lease_name: format!("op-{ns}"),
            identity: format!("test-{ns}"),
            leader_elect: true,
            lease_namespace: ns.into(),
            kubeconfig: None,
            extra_args: vec![],
        }
    }
}

fn external() -> bool {
    match std::env::var("MODELSHIP_OPERATOR").as_deref() {
        Ok("external") => true,
        Ok("") | Ok("own") | Err(_) => false,
        Ok(other) => panic!("MODELSHIP_OPERATOR={other}: expected `own` or `external`"),
    }
}

/// Runs one of the external operator's commands (see [`Operator`]).
fn external_cmd(var: &str) -> String {
    let cmd = std::env::var(var).unwrap_or_else(|_| panic!("MODELSHIP_OPERATOR=external needs ${var}"));
    let out = Command::new("sh").args(["-c", &cmd]).output().unwrap_or_else(|e| panic!("{var}: {e}"));
    assert!(out.status.success(), "{var} ({cmd}) failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Operator {
    /// The operator for a test: its own process, or the external one (see [`Operator`]).
    pub fn start(opts: &OperatorOptions) -> Self {
        if external() {
            return Self { process: None, log: PathBuf::new() };
        }
        Self::start_own(opts)
    }

    /// An operator process of the test's own, even with `MODELSHIP_OPERATOR=external`: for tests
    /// about the process itself (leader election between replicas, a ServiceAccount's token).
    pub fn start_own(opts: &OperatorOptions) -> Self {
        assert!(
            !external(),
            "this test runs operator processes of its own next to the external one, which would make two \
             writers: run it without MODELSHIP_OPERATOR=external"
        );
        let metrics_port = free_port();
        let log = std::env::temp_dir().join(format!("modelship-operator-{}-{}.log", opts.identity, metrics_port));
        let file = std::fs::File::create(&log).expect("operator log file");
        // MODELSHIP_OPERATOR_BIN: another build, e.g. the release binary for tests/scale.
        let bin = std::env::var_os("MODELSHIP_OPERATOR_BIN").map(PathBuf::from);
        let mut cmd = Command::new(bin.unwrap_or_else(|| binary("modelship-operator")));
        if let Some(kubeconfig) = &opts.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        let child = cmd
            .args([
                "--namespace",
                &opts.namespace,
                "--lease-namespace",
                &opts.lease_namespace,
                "--lease-name",
                &opts.lease_name,
            ])
            .args(["--identity", &opts.identity, "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--leader-elect", if opts.leader_elect { "true" } else { "false" }])
            .args(["--server-image", &server_image()])
            .args(&opts.extra_args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start modelship-operator");
        Self { process: Some((child, metrics_port)), log }
    }

    /// Whether this is a process of the test's own (not the shared external operator).
    pub fn is_own(&self) -> bool {
        self.process.is_some()
    }

    /// The operator's Prometheus metrics text.
    pub async fn metrics(&self) -> Option<String> {
        match &self.process {
            Some((_, port)) => reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok(),
            None => tokio::task::spawn_blocking(|| external_cmd("MODELSHIP_OPERATOR_METRICS_CMD")).await.ok(),
        }
    }

    /// The value of one sample (exact series text, labels included), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(s, _)| *s == series)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// `modelship_operator_api_requests_total`: requests sent, as (verb, resource, count).
    pub async fn api_requests(&self) -> Vec<(String, String, f64)> {
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("modelship_operator_api_requests_total{"))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once("} ")?;
                let label = |k: &str| {
                    labels.split(',').find_map(|p| p.strip_prefix(&format!("{k}=\"")).map(|v| v.trim_end_matches('"')))
                };
                Some((label("verb")?.to_string(), label("resource")?.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// Write requests sent (create, update, patch, delete), leader Lease renewals left out.
    pub async fn writes_sent(&self) -> f64 {
        let writes = ["create", "update", "patch", "delete", "deletecollection"];
        self.api_requests()
            .await
            .iter()
            .filter(|(verb, resource, _)| writes.contains(&verb.as_str()) && resource != "leases")
            .map(|(_, _, n)| n)
            .sum()
    }

    /// The process id of the test's own operator.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|(c, _)| c.id())
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited successfully. The external
    /// operator is restarted instead.
    pub fn terminate(mut self) -> bool {
        match self.process.as_mut() {
            Some((child, _)) => {
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                child.wait().map(|s| s.success()).unwrap_or(false)
            }
            None => {
                external_cmd("MODELSHIP_OPERATOR_RESTART_CMD");
                true
            }
        }
    }

    /// Kills the process at once (a crash); the external operator is restarted.
    pub fn kill(mut self) {
        match self.process.as_mut() {
            Some((child, _)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {
                external_cmd("MODELSHIP_OPERATOR_RESTART_CMD");
            }
        }
    }

    pub fn log_text(&self) -> String {
        match &self.process {
            Some(_) => std::fs::read_to_string(&self.log).unwrap_or_default(),
            None => external_cmd("MODELSHIP_OPERATOR_LOGS_CMD"),
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let Some((child, _)) = self.process.as_mut() else { return };
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("==== operator log {} ====\n{log}", self.log.display());
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
