//! `modelship-operator`: watches MLModels and keeps their Deployments, Services and HPAs in step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::Controller;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use modelship_crds::MLModel;
use modelship_operator::api_requests::CountRequests;
use modelship_operator::caches::Caches;
use modelship_operator::desired::Settings;
use modelship_operator::leader::{self, Elector, LeaseConfig};
use modelship_operator::metrics::Metrics;
use modelship_operator::reconcile::{self, Context};
use modelship_operator::registry::{Credentials, RegistrySettings};
use modelship_operator::write_gate::{self, WriteGate};
use tracing::{error, info, warn};

/// The server image released together with this operator.
const DEFAULT_SERVER_IMAGE: &str = concat!("ghcr.io/modelship/modelship-server:", env!("CARGO_PKG_VERSION"));

#[derive(Parser, Debug)]
#[command(name = "modelship-operator", version, about = "Kubernetes operator that serves MLModels")]
struct Flags {
    /// Inference server image for models that do not set spec.server.image.
    #[arg(long, env = "MODELSHIP_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    server_image: String,
    /// Server images models may run: the effective image of every MLModel must start with one of
    /// these prefixes (comma-separated), else it goes Degraded ImageNotAllowed. Default: any image.
    #[arg(long, env = "MODELSHIP_ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MODELSHIP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader on a Lease so several replicas can run; only the leader writes.
    #[arg(long, env = "MODELSHIP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else the watched one, else "default").
    #[arg(long, env = "MODELSHIP_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    #[arg(long, default_value = "modelship-operator")]
    lease_name: String,
    /// Identity in the Lease (default: POD_NAME, else hostname plus a unique suffix).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// MLflow tracking server for `models:/` and `runs:/` URIs of models that set no
    /// spec.model.registry.trackingURI.
    #[arg(long, env = "MODELSHIP_MLFLOW_TRACKING_URI")]
    mlflow_tracking_uri: Option<String>,
    /// User name for MLflow basic auth; sent only to --mlflow-tracking-uri.
    #[arg(long, env = "MODELSHIP_MLFLOW_USERNAME", requires = "mlflow_password", hide_env_values = true)]
    mlflow_username: Option<String>,
    /// Password for MLflow basic auth (set it through the env, from a Secret).
    #[arg(long, env = "MODELSHIP_MLFLOW_PASSWORD", hide_env_values = true)]
    mlflow_password: Option<String>,
    /// Bearer token for MLflow (set it through the env, from a Secret); sent only to --mlflow-tracking-uri.
    #[arg(long, env = "MODELSHIP_MLFLOW_TOKEN", conflicts_with = "mlflow_username", hide_env_values = true)]
    mlflow_token: Option<String>,
    /// Reconciles that may run at once (of different models; one model is never reconciled twice
    /// at once).
    #[arg(long, env = "MODELSHIP_MAX_CONCURRENT_RECONCILES", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Events of one model within this window (its own status write, its Deployment's status
    /// updates) run one reconcile, after the last of them.
    #[arg(long, env = "MODELSHIP_DEBOUNCE_MS", default_value_t = 200)]
    debounce_ms: u64,
    /// Seconds between the resyncs of a Ready model (they send nothing when nothing changed).
    #[arg(long, env = "MODELSHIP_RESYNC_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    resync_seconds: u64,
    /// Log format.
    #[arg(long, env = "MODELSHIP_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{host}-{}-{nanos:x}", std::process::id())
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    init_logs(&flags.log_format);
    if let Err(e) = run(flags).await {
        error!(error = format!("{e:#}"), "operator failed");
        eprintln!("modelship-operator: {e:#}");
        std::process::exit(1);
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(Metrics::new());
    let count = CountRequests(metrics.clone());
    // Watches only: no read timeout (a quiet watch sends nothing for minutes; the watcher has its
    // own idle timeout).
    let client = kube::client::ClientBuilder::try_from(config.clone())
        .context("building the Kubernetes client")?
        .with_layer(&count)
        .build();
    // Reconciles and Events: bounded requests, and writes only while leading.
    let gate = WriteGate::closed();
    let writer = write_gate::gated_client(&config, &gate, &count).context("building the reconcile client")?;
    let models: Api<MLModel> = match &flags.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    models
        .list(&ListParams::default().limit(1))
        .await
        .context("cannot list MLModels: is the CRD installed? (kubectl apply -f crds/mlmodel.yaml)")?;

    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve_http(flags.metrics_addr, metrics.clone(), ready.clone()));
    let identity = flags.identity.clone().unwrap_or_else(default_identity);

    let lease_ns = flags
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| flags.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let lease_config = LeaseConfig::new(lease_ns, flags.lease_name.clone(), identity.clone());
    let elector = if flags.leader_elect {
        Some(Elector::new(lease_client(&config, &count)?, lease_config.clone()))
    } else {
        None
    };
    // Every replica, leader or standby, keeps the caches: a standby takes over warm.
    let (caches, watches) = Caches::start(&client, flags.namespace.as_deref(), &metrics);
    let watches = tokio::spawn(watches);
    let shutdown = tokio_util_shutdown();
    tokio::select! {
        synced = caches.wait_until_ready() => synced.context("the watches stopped before their first listing")?,
        _ = shutdown.clone() => { info!("stopped before the caches were ready"); return Ok(()); }
    }
    info!(models = caches.models.state().len(), "caches ready");
    ready.store(true, Ordering::Relaxed);

    let recorder = Recorder::new(
        writer.clone(),
        Reporter { controller: "modelship-operator".into(), instance: Some(identity.clone()) },
    );
    let allowed_image_prefixes = flags.allowed_image_prefixes.iter().filter(|p| !p.is_empty()).cloned().collect();
    let settings = Settings { server_image: flags.server_image.clone(), allowed_image_prefixes };
    let credentials = match (flags.mlflow_username.clone(), flags.mlflow_password.clone(), flags.mlflow_token.clone()) {
        (Some(username), Some(password), _) => Some(Credentials::Basic { username, password }),
        (_, _, Some(token)) => Some(Credentials::Bearer(token)),
        _ => None,
    };
    let registry = RegistrySettings { default_tracking_uri: flags.mlflow_tracking_uri.clone(), credentials };
    let ctx = Arc::new(
        Context::new(writer, settings, metrics.clone(), recorder)
            .with_registry(registry)
            .with_caches(caches.clone())
            .with_resync(std::time::Duration::from_secs(flags.resync_seconds)),
    );
    let controller_config = ControllerConfig::default()
        .concurrency(flags.max_concurrent_reconciles)
        .debounce(std::time::Duration::from_millis(flags.debounce_ms));
    info!(namespace = flags.namespace.as_deref().unwrap_or("<all>"), server_image = %flags.server_image, %identity, "operator started");

    let batch = modelship_operator::batch::controller::available(&client, flags.namespace.as_deref())
        .await
        .then(|| (client.clone(), flags.namespace.clone()));
    let run = Run { caches, ctx, config: controller_config, grace: lease_config.stop_grace, batch };
    let Some(mut elector) = elector else {
        gate.open();
        run.controller(shutdown).await;
        watches.abort();
        info!("stopped");
        return Ok(());
    };
    // Lead, and fall back to standby whenever leadership is lost (e.g. the API server was away
    // longer than the renew deadline): never two writers, and no crash.
    loop {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => { info!("stopped while on standby"); return Ok(()); }
        }
        gate.open();
        metrics.leader.set(1);
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        let holder = tokio::spawn({
            let gate = gate.clone();
            async move {
                let reason = elector.hold().await;
                // Before anything else: from here on no mutating request is issued.
                gate.close();
                let _ = lost_tx.send(reason);
                elector
            }
        });
        let stop = {
            let (shutdown, gate) = (shutdown.clone(), gate.clone());
            async move {
                tokio::select! {
                    _ = shutdown => { info!("shutdown requested"); Stop::Shutdown }
                    reason = lost_rx => {
                        gate.close();
                        let reason = reason.unwrap_or_else(|_| "the lease renewal task ended".into());
                        warn!(%reason, "lost leadership; stopping the controller and returning to standby");
                        Stop::Lost
                    }
                }
            }
        };
        let why = run.controller(stop).await;
        let why = why.unwrap_or(Stop::Shutdown);
        gate.close();
        metrics.leader.set(0);
        if why == Stop::Shutdown {
            holder.abort();
        }
        elector = match holder.await {
            Ok(e) => e,
            Err(_) => Elector::new(lease_client(&config, &count)?, lease_config.clone()),
        };
        if why == Stop::Shutdown {
            elector.release().await;
            info!("stopped");
            return Ok(());
        }
    }
}

/// The lease client: bounded requests and no retries (a stalled renewal must fail, not hang).
fn lease_client(config: &kube::Config, count: &CountRequests) -> anyhow::Result<Client> {
    Ok(kube::client::ClientBuilder::try_from(write_gate::bounded_config(config))
        .context("building the lease client")?
        .with_layer(count)
        .build())
}

/// Why the controller was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Lost,
}

/// What each term of leadership runs the controller with.
struct Run {
    caches: Caches,
    ctx: Arc<Context>,
    config: ControllerConfig,
    grace: std::time::Duration,
    /// The MLBatchJob controller's watch client and namespace, when the cluster serves MLBatchJobs.
    batch: Option<(Client, Option<String>)>,
}

impl Run {
    /// Runs the MLModel controller on the warm caches until `stop` resolves, then stops it within
    /// `grace` (see [`leader::run_until_stopped`]). It reconciles every model at once, then each
    /// model whose objects change. Returns what `stop` resolved to, or `None` when the controller
    /// ended on its own.
    async fn controller<S>(&self, stop: impl std::future::Future<Output = S> + Send + 'static) -> Option<S> {
        info!(models = self.caches.models.state().len(), "starting controller");
        use futures::FutureExt;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = async move {
            let _ = stopping_rx.await;
        }
        .boxed()
        .shared();
        let batch = match self.batch.clone() {
            Some((client, ns)) => modelship_operator::batch::controller::run(
                client,
                ns,
                self.ctx.clone(),
                self.config.clone(),
                stopping.clone(),
            )
            .boxed(),
            None => futures::future::ready(()).boxed(),
        };
        let controller = Controller::for_shared_stream(futures::stream::pending(), self.caches.models.clone())
            .with_config(self.config.clone())
            .reconcile_on(self.caches.subscribe())
            .reconcile_all_on(futures::stream::once(async {}))
            .graceful_shutdown_on(stopping)
            .run(reconcile::reconcile, reconcile::error_policy, self.ctx.clone())
            .for_each(|res| async move {
                match res {
                    Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                    Err(other) => warn!(error = %other, "controller event"),
                }
            });
        let why = leader::run_until_stopped(
            futures::future::join(controller, batch).map(|_| ()),
            stop,
            move || {
                let _ = stopping_tx.send(());
            },
            self.grace,
        )
        .await;
        match why {
            Some(_) => info!("controller stopped"),
            None => warn!("controller stopped on its own"),
        }
        why
    }
}

/// A cloneable future that resolves on SIGTERM or Ctrl-C.
fn tokio_util_shutdown() -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
    }
    .boxed()
    .shared()
}

async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            info!(%addr, "serving /metrics, /healthz and /readyz");
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server failed");
            }
        }
        Err(e) => error!(%addr, error = %e, "cannot bind the metrics address"),
    }
}
