//! Open Inference Protocol V2 over REST (the KServe / Triton / MLServer protocol).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::features::Rows;
use crate::http::{AppState, body_bytes, json_from_model};
use crate::model::{Model, Predictions};

/// Output tensor of predicted classes or values.
const PREDICT: &str = "predict";
/// Output tensor of class probabilities (classifiers only, on request).
const PREDICT_PROBA: &str = "predict_proba";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { axum::Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_versioned))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_versioned))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_versioned))
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({"name": "modelship-server", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

async fn server_ready(State(state): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    state.model()?;
    Ok(axum::Json(json!({"ready": true})))
}

/// The model, if `name` (and `version`, when given) match what is served.
fn lookup<'a>(state: &'a AppState, name: &str, version: Option<&str>) -> Result<&'a Model, ApiError> {
    let model = state.model_named(name)?;
    match version {
        Some(v) if v != model.version => Err(ApiError::ModelNotFound(format!("{name} version {v}"))),
        _ => Ok(model),
    }
}

fn predict_datatype(model: &Model) -> &'static str {
    if model.artifact.estimator.is_classifier() { "INT64" } else { "FP64" }
}

fn metadata(model: &Model) -> Value {
    let mut outputs = vec![json!({"name": PREDICT, "datatype": predict_datatype(model), "shape": [-1]})];
    if matches!(model.artifact.estimator, crate::artifact::Estimator::LogisticRegression(_)) {
        outputs.push(json!({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, model.class_names().len()]}));
    }
    json!({
        "name": model.name,
        "versions": [model.version],
        "platform": format!("linfa_{}", model.algorithm()),
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features()]}],
        "outputs": outputs,
    })
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, None)?;
    Ok(json_from_model(model, &metadata(model)))
}

async fn model_metadata_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, Some(&version))?;
    Ok(json_from_model(model, &metadata(model)))
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, None)?;
    Ok(json_from_model(model, &json!({"name": model.name, "ready": true})))
}

async fn model_ready_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, Some(&version))?;
    Ok(json_from_model(model, &json!({"name": model.name, "ready": true})))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
}

#[derive(Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: Value,
}

/// Flattens nested `data` arrays (row-major) into numbers, checking the datatype.
fn flatten(value: &Value, datatype: &str, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, datatype, out)),
        Value::Number(n) => {
            let integer = datatype.starts_with("INT") || datatype.starts_with("UINT");
            if integer && !(n.is_i64() || n.is_u64()) {
                return Err(format!("{datatype} data holds a non-integer value {n}"));
            }
            if datatype.starts_with("UINT") && n.is_i64() && n.as_i64().unwrap_or_default() < 0 {
                return Err(format!("{datatype} data holds a negative value {n}"));
            }
            let v = n.as_f64().ok_or_else(|| format!("value {n} is not representable"))?;
            if !v.is_finite() {
                return Err("data values must be finite numbers".into());
            }
            out.push(v);
            Ok(())
        }
        other => Err(format!("data must hold numbers, found {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::String(_) => "a string",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Number(_) => "a number",
    }
}

const NUMERIC: &[&str] =
    &["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"];

/// Turns the one input tensor into rows, checking datatype, shape and data length.
fn input_rows(model: &Model, input: &InputTensor) -> Result<Rows, ApiError> {
    let bad = |m: String| ApiError::BadRequest(format!("input {:?}: {m}", input.name));
    if !NUMERIC.contains(&input.datatype.as_str()) {
        return Err(bad(format!("datatype {} is not supported; use FP32, FP64 or INT*", input.datatype)));
    }
    if input.shape.iter().any(|&d| d < 0) {
        return Err(bad(format!("shape {:?} has a negative dimension", input.shape)));
    }
    let (n_rows, n_cols) = match input.shape.as_slice() {
        [cols] => (1, *cols as usize),
        [rows, cols] => (*rows as usize, *cols as usize),
        other => {
            return Err(bad(format!("shape {other:?} must be [features] or [rows, features]")));
        }
    };
    let mut data = Vec::with_capacity(n_rows.saturating_mul(n_cols).min(1 << 20));
    flatten(&input.data, &input.datatype, &mut data).map_err(bad)?;
    if data.len() != n_rows.saturating_mul(n_cols) {
        return Err(bad(format!("shape {:?} needs {} values, data has {}", input.shape, n_rows * n_cols, data.len())));
    }
    if n_cols != model.n_features() {
        return Err(bad(format!("expected {} features per row, shape has {n_cols}", model.n_features())));
    }
    Rows::from_flat(data, n_cols, input.shape.len() == 1).map_err(bad)
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, None, body)
}

async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, Some(&version), body)
}

fn run_infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(state, body)?;
    let model = lookup(state, name, version)?;
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid inference request: {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::BadRequest(format!("expected exactly one input tensor, got {}", req.inputs.len())));
    };
    let rows = input_rows(model, input)?;
    model.check(rows.matrix.view(), state.limits.max_rows)?;

    let wanted: Vec<String> = match &req.outputs {
        Some(outs) if !outs.is_empty() => outs.iter().map(|o| o.name.clone()).collect(),
        _ => vec![PREDICT.to_string()],
    };
    let n = rows.n_rows();
    let mut outputs = Vec::with_capacity(wanted.len());
    for out in &wanted {
        match out.as_str() {
            PREDICT => {
                let p = model.predict(rows.matrix.view());
                state.metrics.predicted(&p);
                let data = match p {
                    Predictions::Classes(c) => json!(c),
                    Predictions::Values(v) => json!(v),
                };
                outputs.push(OutputTensor { name: PREDICT, datatype: predict_datatype(model), shape: vec![n], data });
            }
            PREDICT_PROBA => {
                let p = model.predict_proba(rows.matrix.view())?;
                let shape = vec![n, p.ncols()];
                outputs.push(OutputTensor {
                    name: PREDICT_PROBA,
                    datatype: "FP64",
                    shape,
                    data: json!(p.iter().collect::<Vec<_>>()),
                });
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown output {other:?}; outputs are {PREDICT:?} and {PREDICT_PROBA:?}"
                )));
            }
        }
    }
    let mut resp = json!({"model_name": model.name, "model_version": model.version, "outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = json!(id);
    }
    Ok(json_from_model(model, &resp))
}
