//! A real MLflow tracking server for the registry tests (tests/mlflow/server): SQLite backend,
//! `--serve-artifacts` into a temporary directory, stopped (its whole process group) on drop, its
//! log printed when the test failed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Container;

use crate::{binary, free_port, root};

/// One `mlflow server` process group on 127.0.0.1 (or another local address).
pub struct Mlflow {
    dir: PathBuf,
    host: String,
    port: u16,
    basic_auth: bool,
    /// `http://HOST:PORT`.
    pub url: String,
}

/// What `tests/mlflow/register.py log` printed for one registered version.
#[derive(Debug, serde::Deserialize)]
pub struct Logged {
    pub version: u64,
    /// The run that logged it (for `runs:/RUN_ID/model`).
    pub run_id: String,
    /// The signature's columns (empty for an ONNX model, whose graph names its input).
    pub features: Vec<String>,
    pub rows: Vec<Vec<f64>>,
    pub predictions: Vec<i64>,
}

/// The default admin of `--app-name basic-auth` (tests/mlflow/server writes it in auth.ini).
pub const ADMIN: (&str, &str) = ("admin", "modelship-tests-admin-7f3");

impl Mlflow {
    /// Starts a server on 127.0.0.1 and waits until it answers; `basic_auth` runs `--app-name basic-auth`.
    pub fn start(basic_auth: bool) -> Self {
        Self::start_on("127.0.0.1", basic_auth)
    }

    /// Starts a server listening on `host`, an address of this machine (the real node's pod
    /// gateway, for pods to download from).
    pub fn start_on(host: &str, basic_auth: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("modelship-mlflow-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("MLflow directory");
        let m = Self { dir, host: host.to_string(), port, basic_auth, url: format!("http://{host}:{port}") };
        m.up();
        m
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new(root().join("tests/mlflow/server"))
            .args(args)
            .env("MODELSHIP_MLFLOW_HOST", &self.host)
            .output()
            .expect("tests/mlflow/server");
        assert!(
            out.status.success(),
            "tests/mlflow/server {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let (dir, port) = (self.dir.to_string_lossy().into_owned(), self.port.to_string());
        let mut args = vec!["start", dir.as_str(), port.as_str()];
        if self.basic_auth {
            args.push("basic-auth");
        }
        self.script(&args);
    }

    /// Stops the server (same port and store kept for [`Mlflow::restart`]).
    pub fn stop(&self) {
        self.script(&["stop", &self.dir.to_string_lossy()]);
    }

    /// Starts the stopped server again on the same port with the same store.
    pub fn restart(&self) {
        self.up();
    }

    fn python(&self, args: &[&str]) -> String {
        let python = Command::new(root().join("tests/mlflow/venv")).arg("--check").output().expect("tests/mlflow/venv");
        assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
        let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/mlflow/register.py")).args(args);
        if self.basic_auth {
            cmd.env("MLFLOW_TRACKING_USERNAME", ADMIN.0).env("MLFLOW_TRACKING_PASSWORD", ADMIN.1);
        }
        let out = cmd.output().expect("register.py");
        assert!(out.status.success(), "register.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
    }

    /// Logs and registers the tutorial's iris model under `name` (a new version each call).
    pub fn log_model(&self, name: &str, serialization: &str) -> Logged {
        serde_json::from_str(&self.python(&["log", &self.url, name, serialization])).expect("register.py output")
    }

    /// Logs a version of `name` whose stored model file is garbage (as a corrupted upload would
    /// leave it): resolvable in the registry, but no server can load it.
    pub fn log_broken_model(&self, name: &str) -> Logged {
        serde_json::from_str(&self.python(&["log", &self.url, name, "pickle", "--broken"])).expect("register.py output")
    }

    /// Saves the tutorial's model into `dir` (served at `base_url` by an [`ArtifactHost`]) and
    /// registers it as the next version of `name` with that plain HTTP location as its source;
    /// `columns` records a signature of only that many columns.
    pub fn save_http(&self, name: &str, host: &ArtifactHost, columns: Option<usize>) -> Logged {
        let dir = host.dir.to_string_lossy().into_owned();
        let mut args = vec!["save-http".to_string(), self.url.clone(), name.into(), dir, host.url.clone()];
        if let Some(n) = columns {
            args.extend(["--columns".to_string(), n.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&self.python(&args)).expect("register.py output")
    }

    /// Points `name@alias` at `version`.
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) {
        self.python(&["alias", &self.url, name, alias, &version.to_string()]);
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("mlflow.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("==== MLflow log (last 60 lines) ====");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = Command::new(root().join("tests/mlflow/server")).args(["stop", &self.dir.to_string_lossy()]).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A plain HTTP file server on 127.0.0.1 (Python's `http.server`) over a temporary directory: an
/// artifact location that is neither MLflow's artifact proxy nor a cloud store. Stopped on drop.
pub struct ArtifactHost {
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
}

impl ArtifactHost {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("modelship-artifacts-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("artifact directory");
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "http.server on port {port} did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { dir, url: format!("http://127.0.0.1:{port}"), child }
    }
}

impl Drop for ArtifactHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the real `modelship-server` with the generated container's args and env on a free port
/// (env from Secrets as `secret_env` gives it, as the kubelet would). Returns it and its base URL.
pub fn run_container(container: &Container, secret_env: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let mut args = container.args.clone().unwrap_or_default();
    let i = args.iter().position(|a| a == "--port").expect("--port in the args");
    args[i + 1] = port.to_string();
    let mut cmd = Command::new(binary("modelship-server"));
    cmd.args(&args).env_clear().env("PATH", "/usr/bin:/bin").stdout(Stdio::null()).stderr(Stdio::piped());
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            cmd.env(&e.name, v);
        }
    }
    for (k, v) in secret_env {
        cmd.env(k, v);
    }
    (cmd.spawn().expect("start modelship-server"), format!("http://127.0.0.1:{port}"))
}
