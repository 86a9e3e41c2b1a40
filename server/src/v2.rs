//! Open Inference Protocol V2 over REST (the KServe / Triton / MLServer protocol).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
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
    if model.artifact.estimator.has_proba() {
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
    Ok(json_from_model(&state, &metadata(model)))
}

async fn model_metadata_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, Some(&version))?;
    Ok(json_from_model(&state, &metadata(model)))
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, None)?;
    Ok(json_from_model(&state, &json!({"name": model.name, "ready": true})))
}

async fn model_ready_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = lookup(&state, &name, Some(&version))?;
    Ok(json_from_model(&state, &json!({"name": model.name, "ready": true})))
}

/// Header of the binary tensor data extension: the length of the JSON part of the body.
const INFERENCE_HEADER: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Parameters,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// The `parameters` we understand (of the request, an input, or a requested output).
#[derive(Deserialize, Default)]
struct Parameters {
    /// Input: this many bytes of the binary part hold the tensor.
    #[serde(default)]
    binary_data_size: Option<usize>,
    /// Requested output: send it as binary.
    #[serde(default)]
    binary_data: Option<bool>,
    /// Request: send every output as binary.
    #[serde(default)]
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// An output's values, kept typed until we know whether it goes out as JSON or binary.
enum OutputData {
    Int64(Vec<i64>),
    Fp64(Vec<f64>),
}

impl OutputData {
    fn json(&self) -> Value {
        match self {
            Self::Int64(v) => json!(v),
            Self::Fp64(v) => json!(v),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Splits a body into its JSON part and the binary tensor data that follows it.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(INFERENCE_HEADER) else { return Ok((body, &[])) };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{INFERENCE_HEADER} must be a byte count")))?;
    if n > body.len() {
        return Err(ApiError::BadRequest(format!("{INFERENCE_HEADER} is {n} but the body has {} bytes", body.len())));
    }
    Ok(body.split_at(n))
}

/// Size in bytes of one element of a numeric datatype.
fn element_size(datatype: &str) -> usize {
    match datatype {
        "INT8" | "UINT8" => 1,
        "FP16" | "INT16" | "UINT16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        _ => 8,
    }
}

/// IEEE 754 half precision to f64.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decodes little-endian binary tensor data of a numeric datatype.
fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<f64>, String> {
    let size = element_size(datatype);
    if !bytes.len().is_multiple_of(size) {
        return Err(format!("{} bytes are not whole {datatype} elements", bytes.len()));
    }
    let values = bytes.chunks_exact(size).map(|c| {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(c);
        match datatype {
            "FP16" => f16_to_f64(u16::from_le_bytes([b[0], b[1]])),
            "FP32" => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            "FP64" => f64::from_le_bytes(b),
            "INT8" => f64::from(c[0] as i8),
            "INT16" => f64::from(i16::from_le_bytes([b[0], b[1]])),
            "INT32" => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            "INT64" => i64::from_le_bytes(b) as f64,
            "UINT8" => f64::from(c[0]),
            "UINT16" => f64::from(u16::from_le_bytes([b[0], b[1]])),
            "UINT32" => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => u64::from_le_bytes(b) as f64,
        }
    });
    let values: Vec<f64> = values.collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err("data values must be finite numbers".into());
    }
    Ok(values)
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

/// Turns the one input tensor into rows, checking datatype, shape and data length. `binary` is
/// the binary part of the body, for inputs sent with the binary tensor data extension.
fn input_rows(model: &Model, input: &InputTensor, binary: &[u8]) -> Result<Rows, ApiError> {
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
    let data = match (input.parameters.binary_data_size, &input.data) {
        (Some(size), _) => {
            let bytes = binary.get(..size).ok_or_else(|| {
                bad(format!("binary_data_size {size} exceeds the {} binary bytes sent", binary.len()))
            })?;
            decode_binary(&input.datatype, bytes).map_err(bad)?
        }
        (None, Some(values)) => {
            let mut data = Vec::with_capacity(n_rows.saturating_mul(n_cols).min(1 << 20));
            flatten(values, &input.datatype, &mut data).map_err(bad)?;
            data
        }
        (None, None) => return Err(bad("has neither \"data\" nor parameters.binary_data_size".into())),
    };
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, None, &headers, body)
}

async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, Some(&version), &headers, body)
}

fn run_infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(state, body)?;
    let model = lookup(state, name, version)?;
    let (json_part, binary) = split_body(headers, &body)?;
    let req: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| ApiError::BadRequest(format!("invalid inference request: {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::BadRequest(format!("expected exactly one input tensor, got {}", req.inputs.len())));
    };
    let rows = input_rows(model, input, binary)?;
    model.check(rows.matrix.view(), state.limits.max_rows)?;

    let all_binary = req.parameters.binary_data_output.unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &req.outputs {
        Some(outs) if !outs.is_empty() => {
            outs.iter().map(|o| (o.name.clone(), o.parameters.binary_data.unwrap_or(all_binary))).collect()
        }
        _ => vec![(PREDICT.to_string(), all_binary)],
    };
    let n = rows.n_rows();
    let mut outputs = Vec::with_capacity(wanted.len());
    let mut blobs = Vec::new();
    for (out, binary_out) in &wanted {
        let (name, datatype, shape, data) = match out.as_str() {
            PREDICT => {
                let p = model.predict(rows.matrix.view());
                state.metrics.predicted(&p);
                let data = match p {
                    Predictions::Classes(c) => OutputData::Int64(c.into_iter().map(|x| x as i64).collect()),
                    Predictions::Values(v) => OutputData::Fp64(v),
                };
                (PREDICT, predict_datatype(model), vec![n], data)
            }
            PREDICT_PROBA => {
                let p = model.predict_proba(rows.matrix.view())?;
                let shape = vec![n, p.ncols()];
                (PREDICT_PROBA, "FP64", shape, OutputData::Fp64(p.iter().copied().collect()))
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown output {other:?}; outputs are {PREDICT:?} and {PREDICT_PROBA:?}"
                )));
            }
        };
        if *binary_out {
            let bytes = data.bytes();
            let parameters = Some(json!({"binary_data_size": bytes.len()}));
            outputs.push(OutputTensor { name, datatype, shape, parameters, data: None });
            blobs.push(bytes);
        } else {
            outputs.push(OutputTensor { name, datatype, shape, parameters: None, data: Some(data.json()) });
        }
    }
    let mut resp = json!({"model_name": model.name, "model_version": model.version, "outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = json!(id);
    }
    if blobs.is_empty() {
        return Ok(json_from_model(state, &resp));
    }
    // Binary tensor data extension: the JSON header, then each binary output in order.
    let mut body = serde_json::to_vec(&resp).unwrap_or_default();
    let header_len = body.len();
    blobs.iter().for_each(|b| body.extend_from_slice(b));
    let mut response = json_from_model(state, &());
    *response.body_mut() = axum::body::Body::from(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(INFERENCE_HEADER, HeaderValue::from(header_len));
    h.remove(header::CONTENT_LENGTH);
    Ok(response.into_response())
}
