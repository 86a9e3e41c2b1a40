//! The HTTP API: the classic `/predict`, KServe V1, Open Inference Protocol V2, health, metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::features::{Budget, rows_from_object};
use crate::metrics::Metrics;
use crate::model::{Model, Predictions, Shown};

/// Response header naming the model that served a prediction.
pub const MODEL_NAME_HEADER: HeaderName = HeaderName::from_static("x-model-name");
/// Response header naming the model version that served a prediction.
pub const MODEL_VERSION_HEADER: HeaderName = HeaderName::from_static("x-model-version");

/// Request limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most rows in one prediction request (400 beyond).
    pub max_rows: usize,
    /// Most prediction requests served at once; more are answered 503 with `Retry-After`
    /// rather than queued. Memory for bodies is at most this times `max_body_bytes`.
    pub max_concurrent_requests: usize,
    /// Time from a prediction request's headers to its response: the body must arrive within it
    /// (408 otherwise) and the prediction finish within it (503 otherwise).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_rows: 10_000,
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Bodies at least this large are parsed and predicted on the blocking pool, so that a burst of
/// big batches cannot starve the async workers that answer `/healthz`. Smaller ones (a single
/// row is ~100 bytes) stay inline: a thread hop would cost more than the work.
const OFFLOAD_BODY_BYTES: usize = 32 * 1024;

/// One route: its path template and its handlers. Each route is declared once, in a table ([`ROUTES`]
/// here, `v2::ROUTES`); the router and the request metrics' route labels are both built from the
/// tables (see `router`).
pub struct Route {
    pub path: &'static str,
    pub handlers: fn(&Arc<AppState>) -> MethodRouter<Arc<AppState>>,
}

/// The classic and KServe V1 routes, health and metrics.
pub(crate) const ROUTES: &[Route] = &[
    Route { path: "/predict", handlers: |s| post(predict.layer(middleware::from_fn_with_state(s.clone(), admit))) },
    Route {
        path: "/v1/models/{name}",
        handlers: |s| get(v1_model).post(v1_predict.layer(middleware::from_fn_with_state(s.clone(), admit))),
    },
    Route { path: "/healthz", handlers: |_| get(|| async { axum::Json(serde_json::json!({"status": "live"})) }) },
    Route { path: "/readyz", handlers: |_| get(readyz) },
    Route { path: "/metrics", handlers: |_| get(metrics) },
];

/// Most routes the request metrics keep a slot for (a test checks the tables fit).
pub const MAX_ROUTES: usize = 32;

/// Methods we label by name; anything else is `other`.
pub(crate) const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

pub(crate) fn method_label(m: &axum::http::Method) -> (usize, &'static str) {
    METHODS.iter().position(|x| *x == m.as_str()).map_or((METHODS.len(), "other"), |i| (i, METHODS[i]))
}

/// The model being served and its response headers, built once at load.
struct Served {
    model: Model,
    name: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

/// Shared state: the model once loaded, metrics, limits.
pub struct AppState {
    model: OnceLock<Served>,
    draining: AtomicBool,
    /// One permit per prediction request being served (see [`Limits::max_concurrent_requests`]).
    admission: Arc<Semaphore>,
    /// One permit per large request being parsed and predicted on the blocking pool: one core
    /// fewer than the machine has, so a core stays free for the async workers.
    heavy: Arc<Semaphore>,
    pub metrics: Metrics,
    pub limits: Limits,
}

impl AppState {
    pub fn new(limits: Limits) -> Arc<Self> {
        let metrics = Metrics::new((MAX_ROUTES + 1) * (METHODS.len() + 1));
        let admission = Arc::new(Semaphore::new(limits.max_concurrent_requests));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let heavy = Arc::new(Semaphore::new(cores.saturating_sub(1).max(1)));
        Arc::new(Self { model: OnceLock::new(), draining: AtomicBool::new(false), admission, heavy, metrics, limits })
    }

    /// A state with `model` already loaded.
    pub fn with_model(model: Model, limits: Limits) -> Arc<Self> {
        let state = Self::new(limits);
        state.set_model(model, 0.0);
        state
    }

    /// Installs the loaded model; the server becomes ready. Later calls are ignored.
    pub fn set_model(&self, model: Model, load_seconds: f64) {
        self.metrics.model_loaded(&model, load_seconds);
        let name = HeaderValue::from_str(&model.name).ok();
        let version = HeaderValue::from_str(&model.version).ok();
        let _ = self.model.set(Served { model, name, version });
    }

    /// Marks the server as shutting down: `/readyz` turns 503, requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn model(&self) -> Result<&Model, ApiError> {
        self.model.get().map(|s| &s.model).ok_or(ApiError::NotReady)
    }

    /// The model, if `name` is the name it is served under.
    pub fn model_named(&self, name: &str) -> Result<&Model, ApiError> {
        let model = self.model()?;
        if model.name == name { Ok(model) } else { Err(ApiError::ModelNotFound(name.to_string())) }
    }

    /// What one request may parse: `max_rows` rows of the model's features.
    pub(crate) fn budget(&self, model: &Model) -> Budget {
        Budget { n_features: model.n_features(), max_rows: self.limits.max_rows }
    }
}

/// A prediction request's admission: its concurrency permit, held until the request's work ends.
#[derive(Clone)]
pub(crate) struct Admission {
    /// Shared with work moved to the blocking pool, so the permit is held until that work ends
    /// even when the request has already timed out.
    held: Arc<Held>,
}

struct Held {
    _permit: OwnedSemaphorePermit,
    /// Whether the whole body has arrived: a request timing out before then gets a 408.
    body_read: AtomicBool,
}

/// Admits a prediction request if a permit is free (503 + `Retry-After` otherwise, never a
/// queue), and bounds it by the request timeout: one timer for the whole request, reading the
/// body included (408 if the body had not arrived by then, 503 if the work had not finished).
/// Every prediction handler is wrapped in it.
pub(crate) async fn admit(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Ok(permit) = state.admission.clone().try_acquire_owned() else {
        return ApiError::Busy(state.limits.max_concurrent_requests).into_response();
    };
    let timeout = state.limits.request_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let held = Arc::new(Held { _permit: permit, body_read: AtomicBool::new(false) });
    req.extensions_mut().insert(Admission { held: held.clone() });
    match within(deadline, next.run(req)).await {
        Some(resp) => resp,
        None if !held.body_read.load(Ordering::Acquire) => ApiError::BodyTimeout(timeout).into_response(),
        None => ApiError::Timeout(timeout).into_response(),
    }
}

/// `fut`'s output if it finishes by `deadline` (as `tokio::time::timeout_at`), with the timer
/// set only if `fut` does not finish on its first poll: a small request whose body came with its
/// headers (hyper hands the body over before it polls the handler) never touches the runtime's
/// timer wheel, which otherwise costs a registration and a cancellation on every request.
pub(crate) async fn within<F: Future>(deadline: tokio::time::Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(out);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

/// The request body (bounded in time by [`admit`]'s timeout, which answers 408 while it is read).
pub(crate) async fn read_body(state: &AppState, admission: &Admission, req: Request) -> Result<Bytes, ApiError> {
    let body = Bytes::from_request(req, &()).await;
    admission.held.body_read.store(true, Ordering::Release);
    body_bytes(state, body)
}

/// Runs `work` (parse and predict a body of `body_len` bytes) inline for small bodies and on the
/// blocking pool for large ones, at most one per spare core (waiting in turn within the request's
/// deadline), holding the request's permit until it ends.
pub(crate) async fn offload<F>(
    state: &AppState,
    admission: &Admission,
    body_len: usize,
    work: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Result<Response, ApiError> + Send + 'static,
{
    if body_len < OFFLOAD_BODY_BYTES {
        return work();
    }
    let core = state.heavy.clone().acquire_owned().await.map_err(|_| ApiError::Internal)?;
    let permit = admission.held.clone();
    // Both permits move into the task: a timed-out request's work still counts until it ends.
    tokio::task::spawn_blocking(move || {
        let _held = (permit, core);
        work()
    })
    .await
    .map_err(|_| ApiError::Internal)?
}

/// The body bytes, with an oversized body reported as a JSON 413.
pub(crate) fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(state.limits.max_body_bytes)
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

/// A JSON response carrying the served model's name and version headers.
pub(crate) fn json_from_model<T: Serialize>(state: &AppState, body: &T) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    if let Some(served) = state.model.get() {
        let headers = resp.headers_mut();
        if let Some(v) = &served.name {
            headers.insert(MODEL_NAME_HEADER, v.clone());
        }
        if let Some(v) = &served.version {
            headers.insert(MODEL_VERSION_HEADER, v.clone());
        }
    }
    resp
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PredictQuery {
    /// Add class probabilities and the class names.
    #[serde(default)]
    proba: bool,
    /// Add the predicted class names.
    #[serde(default)]
    labels: bool,
}

#[derive(Serialize)]
struct PredictResponse<'a> {
    prediction: Shown<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<&'a [String]>,
}

/// Predicts `rows`, with optional labels and probabilities, counting them in the metrics.
fn run_prediction<'m>(
    state: &AppState,
    model: &'m Model,
    rows: &ndarray::Array2<f64>,
    labels: bool,
    proba: bool,
) -> Result<PredictResponse<'m>, ApiError> {
    model.check(rows.view(), state.limits.max_rows)?;
    let probabilities =
        if proba { Some(model.predict_proba(rows.view())?.outer_iter().map(|r| r.to_vec()).collect()) } else { None };
    let prediction = model.predict(rows.view())?;
    state.metrics.predicted(&prediction);
    let labels = match (&prediction, labels) {
        (Predictions::Classes(ids), true) => {
            Some(ids.iter().map(|&i| model.class_names().get(i).map_or("", String::as_str)).collect())
        }
        _ => None,
    };
    let classes = proba.then(|| model.class_names());
    let prediction = Shown { predictions: prediction, labels: model.labels() };
    Ok(PredictResponse { prediction, labels, probabilities, classes })
}

/// `POST /predict {"features": [..] | [[..], ..]}` → `{"prediction": [..]}`.
async fn predict(
    State(state): State<Arc<AppState>>,
    Extension(admission): Extension<Admission>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state.model()?;
    let body = read_body(&state, &admission, req).await?;
    let s = state.clone();
    offload(&state, &admission, body.len(), move || {
        let model = s.model()?;
        let rows = rows_from_object(&body, "features", s.budget(model), &model.artifact.feature_names)
            .map_err(ApiError::BadRequest)?;
        let resp = run_prediction(&s, model, &rows.matrix, q.labels, q.proba)?;
        Ok(json_from_model(&s, &resp))
    })
    .await
}

/// `GET /v1/models/{name}`: KServe V1 model status.
async fn v1_model(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let model = state.model_named(&name)?;
    Ok(json_from_model(&state, &serde_json::json!({"name": model.name, "ready": true})))
}

/// `POST /v1/models/{name}:predict {"instances": [[..]]}` → `{"predictions": [..]}`.
async fn v1_predict(
    State(state): State<Arc<AppState>>,
    Extension(admission): Extension<Admission>,
    Path(name_verb): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(name) = name_verb.strip_suffix(":predict") else {
        return Err(ApiError::NoRoute(format!("/v1/models/{name_verb}")));
    };
    state.model_named(name)?;
    let body = read_body(&state, &admission, req).await?;
    let s = state.clone();
    offload(&state, &admission, body.len(), move || {
        let model = s.model()?;
        let rows = rows_from_object(&body, "instances", s.budget(model), &model.artifact.feature_names)
            .map_err(ApiError::BadRequest)?;
        let resp = run_prediction(&s, model, &rows.matrix, false, false)?;
        Ok(json_from_model(&s, &serde_json::json!({"predictions": resp.prediction})))
    })
    .await
}

/// `GET /readyz`: 200 once the model is loaded, 503 before and while draining.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let model = state.model()?;
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Draining);
    }
    Ok(axum::Json(serde_json::json!({"status": "ready", "model": model.name, "version": model.version}))
        .into_response())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
