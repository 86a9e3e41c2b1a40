//! `modelship-server`: serve, train, batch-score and inspect Modelship model artifacts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use modelship_server::http::{AppState, Limits};
use modelship_server::router::app;
use modelship_server::serve::{ConnectionLimits, serve};
use modelship_server::sklearn::format::DeclaredFormat;
use modelship_server::{Model, batch, batch_output, load, mlflow, train};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "modelship-server", version, about = "Serve, train and batch-score classic ML models")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "MODELSHIP_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a model and serve it over HTTP.
    Serve {
        /// Model artifact: a path, file:///PATH, http://... or https://..., or an MLflow model
        /// (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH; see --mlflow-tracking-uri)
        #[arg(long, env = "MODELSHIP_MODEL")]
        model: String,
        /// MLflow tracking server of a models:/ or runs:/ model. Credentials come from
        /// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN.
        #[arg(long, env = "MLFLOW_TRACKING_URI")]
        mlflow_tracking_uri: Option<String>,
        /// Expected SHA-256 of the artifact (64 hex digits); required for an http:// model,
        /// optional for https:// and files.
        #[arg(long, env = "MODELSHIP_MODEL_SHA256")]
        sha256: Option<String>,
        /// The model's declared format; the file's own signature must agree (default: whatever
        /// the signature says).
        #[arg(long, value_enum, env = "MODELSHIP_MODEL_FORMAT")]
        model_format: Option<DeclaredFormat>,
        /// Name the model is served under (default: the name it was trained under).
        #[arg(long, env = "MODELSHIP_MODEL_NAME")]
        name: Option<String>,
        /// Version label reported in responses and metrics (default: the training time).
        #[arg(long, env = "MODELSHIP_MODEL_VERSION")]
        model_version: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0", env = "MODELSHIP_HOST")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8080, env = "MODELSHIP_PORT")]
        port: u16,
        /// Largest request body in bytes (413 beyond).
        #[arg(long, default_value_t = Limits::default().max_body_bytes, env = "MODELSHIP_MAX_BODY_BYTES")]
        max_body_bytes: usize,
        /// Most rows in one prediction request (400 beyond).
        #[arg(long, default_value_t = Limits::default().max_rows, env = "MODELSHIP_MAX_ROWS")]
        max_rows: usize,
        /// Most prediction requests served at once; more get 503 with Retry-After (no queue).
        /// Body memory is at most this times --max-body-bytes.
        #[arg(long, default_value_t = Limits::default().max_concurrent_requests, env = "MODELSHIP_MAX_CONCURRENT_REQUESTS",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_concurrent_requests: usize,
        /// Seconds a prediction request may take from its headers to its response: 408 if the
        /// body has not arrived by then, 503 if the prediction has not finished.
        #[arg(long, default_value_t = Limits::default().request_timeout.as_secs(), env = "MODELSHIP_REQUEST_TIMEOUT_SECONDS",
              value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout_seconds: u64,
        /// Seconds a connection may take to send a request's headers (and may stay idle between
        /// requests) before it is closed.
        #[arg(long, default_value_t = ConnectionLimits::default().header_read_timeout.as_secs(),
              env = "MODELSHIP_HEADER_READ_TIMEOUT_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        header_read_timeout_seconds: u64,
        /// Most open connections; beyond it new connections are closed at once.
        #[arg(long, default_value_t = ConnectionLimits::default().max_connections, env = "MODELSHIP_MAX_CONNECTIONS",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_connections: usize,
        /// Largest model artifact in bytes, as fetched and as decompressed (a joblib file); a
        /// bigger file or download is refused before it is read.
        #[arg(long, default_value_t = load::DEFAULT_MAX_MODEL_BYTES, env = "MODELSHIP_MAX_MODEL_BYTES")]
        max_model_bytes: u64,
        /// On SIGTERM, report not-ready and keep serving this long before draining (lets
        /// Service endpoints update first).
        #[arg(long, default_value_t = 0)]
        drain_seconds: u64,
    },
    /// Train a model with linfa and write an artifact.
    Train {
        /// A built-in data set.
        #[arg(long, value_parser = ["iris"], conflicts_with = "csv", required_unless_present = "csv")]
        dataset: Option<String>,
        /// A CSV file with a header row.
        #[arg(long, requires = "target")]
        csv: Option<PathBuf>,
        /// The CSV column to predict.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, value_enum, default_value = "logistic")]
        algorithm: train::Algorithm,
        /// Seed of the train/hold-out split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the artifact.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score a CSV or JSON lines file with a model, streaming rows with bounded memory.
    Batch {
        #[arg(long)]
        model: String,
        #[arg(long)]
        sha256: Option<String>,
        /// A file; a directory (its files, hidden and `_`-prefixed ones left out); or a pattern
        /// (`in/day-*.csv`, quoted from the shell). Several files are shared out whole among shards.
        #[arg(long)]
        input: PathBuf,
        /// The input's format: csv or jsonl (default: from each file's extension).
        #[arg(long)]
        format: Option<batch::Format>,
        /// The output's format (default: from its extension, else the input's).
        #[arg(long)]
        output_format: Option<batch::Format>,
        /// The input columns to carry to the output, comma-separated, in order (default: all).
        #[arg(long, value_delimiter = ',')]
        keep_columns: Option<Vec<String>>,
        /// Add a probability_CLASS column per class (classifiers that give probabilities).
        #[arg(long)]
        probabilities: bool,
        /// The scored file (written under a temporary name, renamed when complete).
        #[arg(long, required_unless_present = "output_dir", conflicts_with = "output_dir")]
        output: Option<PathBuf>,
        /// A directory for this shard's part (`part-INDEX-of-COUNT.csv`, or `.jsonl`) and its manifest; the
        /// shard that completes the set writes `_SUCCESS`, listing every part's rows and SHA-256.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Version label recorded in the manifests (default: the training time).
        #[arg(long, env = "MODELSHIP_MODEL_VERSION")]
        model_version: Option<String>,
        /// Rows scored per chunk.
        #[arg(long, default_value_t = 8192)]
        chunk_rows: usize,
        /// Threads scoring each chunk (0: as many CPUs as this process may use, container limits included).
        #[arg(long, env = "MODELSHIP_BATCH_THREADS", default_value_t = 0)]
        threads: usize,
        /// Score only shard INDEX of --shard-count: the records that start in its share of the
        /// input's bytes (an Indexed Job gives each pod its index as JOB_COMPLETION_INDEX).
        #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
        shard_index: u32,
        /// How many shards the input is cut into; together they score every record exactly once.
        #[arg(long, default_value_t = 1)]
        shard_count: u32,
    },
    /// Print an artifact's metadata.
    Inspect { file: PathBuf },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = rt.block_on(run(cli.command)) {
        fail(format!("{e:#}"));
    }
}

/// Where the kubelet reads a terminated container's message (the pod's `terminationMessagePath`).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Prints a one-line reason and exits non-zero (so a pod crash-loops with a clear message).
///
/// The reason also goes to the termination log when it exists (the kubelet creates it in a
/// pod), so the pod status carries exactly this line rather than the last log lines, whose
/// timestamps would change the operator's condition message on every restart.
fn fail(reason: String) -> ! {
    error!(%reason, "modelship-server failed");
    eprintln!("modelship-server: {reason}");
    termination_log(&format!("modelship-server: {reason}"));
    std::process::exit(1)
}

/// Writes `line` to the termination log, when there is one (in a pod: the kubelet creates it and
/// copies it into the container's terminated state, where the operator reads it).
fn termination_log(line: &str) {
    let path = std::env::var_os("MODELSHIP_TERMINATION_LOG").map_or_else(|| TERMINATION_LOG.into(), PathBuf::from);
    // Only an existing file: outside a pod, never create one under /dev.
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).truncate(true).open(&path) {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            model,
            mlflow_tracking_uri,
            sha256,
            model_format,
            name,
            model_version,
            host,
            port,
            max_body_bytes,
            max_rows,
            max_concurrent_requests,
            request_timeout_seconds,
            header_read_timeout_seconds,
            max_connections,
            max_model_bytes,
            drain_seconds,
        } => {
            let state = AppState::new(Limits {
                max_body_bytes,
                max_rows,
                max_concurrent_requests,
                request_timeout: Duration::from_secs(request_timeout_seconds),
            });
            let connections = ConnectionLimits {
                header_read_timeout: Duration::from_secs(header_read_timeout_seconds),
                max_connections,
            };
            let addr = SocketAddr::new(host, port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            info!(%addr, "listening; loading model");
            let loader = {
                let state = state.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let loaded = if mlflow::is_mlflow_uri(&model) {
                        let auth = mlflow::auth_from_env();
                        mlflow::load(&model, mlflow_tracking_uri.as_deref(), auth.as_ref(), max_model_bytes).await
                    } else {
                        load::load_declared(&model, sha256.as_deref(), max_model_bytes, model_format).await
                    };
                    match loaded {
                        Ok(artifact) => {
                            let m = Model::new(artifact, name, model_version);
                            let secs = start.elapsed().as_secs_f64();
                            info!(model = %m.name, version = %m.version, algorithm = m.algorithm(), seconds = secs, "model loaded");
                            state.set_model(m, secs);
                        }
                        Err(e) => fail(format!("model failed to load: {e}")),
                    }
                })
            };
            let shutdown = {
                let state = state.clone();
                async move {
                    shutdown_signal().await;
                    state.start_draining();
                    info!(drain_seconds, "shutdown requested; draining");
                    tokio::time::sleep(Duration::from_secs(drain_seconds)).await;
                }
            };
            serve(listener, app(state), connections, shutdown).await?;
            loader.abort();
            info!("stopped");
            Ok(())
        }
        Command::Train { dataset, csv, target, algorithm, seed, out } => {
            let table = match (dataset, csv, target) {
                (Some(_), _, _) => train::iris(),
                (None, Some(path), Some(target)) => train::read_csv(&path, &target)?,
                _ => anyhow::bail!("give --dataset iris, or --csv FILE --target COLUMN"),
            };
            let artifact = train::train(&table, algorithm, seed)?;
            let bytes = artifact.to_vec();
            std::fs::write(&out, &bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            println!(
                "trained {} on {} ({} rows): hold-out {} {:.4}; wrote {} ({} bytes, sha256 {})",
                artifact.estimator.algorithm(),
                artifact.training.dataset,
                artifact.training.train_rows,
                artifact.training.holdout_metric,
                artifact.training.holdout_score,
                out.display(),
                bytes.len(),
                load::sha256_hex(&bytes)
            );
            Ok(())
        }
        Command::Batch {
            model,
            sha256,
            input,
            format,
            output_format,
            keep_columns,
            probabilities,
            output,
            output_dir,
            model_version,
            chunk_rows,
            threads,
            shard_index,
            shard_count,
        } => {
            let shard = modelship_server::shard::Shard::new(shard_index, shard_count)?;
            let opts = batch::BatchOptions {
                chunk_rows,
                threads,
                shard,
                input_format: format,
                output_format,
                keep_columns,
                probabilities,
            };
            let files = batch::inputs::list(&input, format)?;
            let out_format = opts.output_format(&files, output.as_deref())?;
            let artifact = load::load(&model, sha256.as_deref(), load::DEFAULT_MAX_MODEL_BYTES).await?;
            let model = Model::new(artifact, None, model_version);
            let output = match (&output, &output_dir) {
                (Some(file), _) => file.clone(),
                (None, Some(dir)) => {
                    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                    dir.join(batch_output::part_name(shard, out_format.extension()))
                }
                (None, None) => unreachable!("clap requires --output or --output-dir"),
            };
            let (report, success) = tokio::task::spawn_blocking(move || {
                let report = batch::score(&model, &files, &output, &opts)?;
                let success = match &output_dir {
                    Some(dir) => batch_output::complete(dir, shard, &report, &input.to_string_lossy(), &model.version)?,
                    None => None,
                };
                Ok::<_, batch::BatchError>((report, success))
            })
            .await??;
            println!("{report}");
            // What a batch Job's operator reads from the pod: this shard's rows and part.
            let part = report.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            termination_log(
                &serde_json::json!({
                    "shard": shard_index, "shards": shard_count, "rows": report.rows,
                    "file": part, "sha256": report.sha256, "complete": success.is_some(),
                })
                .to_string(),
            );
            if let Some(done) = success {
                println!("all {} shards done: {} rows; wrote {}", done.shards, done.rows, batch_output::SUCCESS);
            }
            Ok(())
        }
        Command::Inspect { file } => {
            let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let artifact = modelship_server::sklearn::format::read_artifact(&bytes)?;
            let described = match &artifact.estimator {
                modelship_server::artifact::Estimator::Sklearn(m) => Some(m.describe()),
                modelship_server::artifact::Estimator::Onnx(m) => Some(m.describe()),
                _ => None,
            };
            if let Some(mut meta) = described {
                meta["sha256"] = load::sha256_hex(&bytes).into();
                println!("{}", serde_json::to_string_pretty(&meta)?);
                return Ok(());
            }
            let meta = serde_json::json!({
                "name": artifact.name,
                "format_version": artifact.format_version,
                "algorithm": artifact.estimator.algorithm(),
                "feature_names": artifact.feature_names,
                "class_names": artifact.class_names,
                "training": artifact.training,
                "feature_stats": artifact.feature_stats,
                "sha256": load::sha256_hex(&bytes),
            });
            println!("{}", serde_json::to_string_pretty(&meta)?);
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
