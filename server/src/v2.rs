//! Open Inference Protocol V2 over REST (the KServe / Triton / MLServer protocol).

use std::sync::Arc;

use axum::extract::{Extension, Path, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::artifact::Estimator;
use crate::error::ApiError;
use crate::features::{Budget, Rows};
use crate::http::{Admission, AppState, Route, admit, json_from_model, offload, read_body};
use crate::infer_request::{self, InputTensor};
use crate::model::{Model, Predictions};
use crate::sklearn::Label;

/// Output tensor of predicted classes or values.
const PREDICT: &str = "predict";
/// Output tensor of class probabilities (classifiers only, on request).
const PREDICT_PROBA: &str = "predict_proba";

/// The V2 routes (see `http::Route`).
pub(crate) const ROUTES: &[Route] = &[
    Route { path: "/v2", handlers: |_| get(server_metadata) },
    Route { path: "/v2/health/live", handlers: |_| get(|| async { axum::Json(json!({"live": true})) }) },
    Route { path: "/v2/health/ready", handlers: |_| get(server_ready) },
    Route { path: "/v2/models/{name}", handlers: |_| get(model_metadata) },
    Route { path: "/v2/models/{name}/versions/{version}", handlers: |_| get(model_metadata_versioned) },
    Route { path: "/v2/models/{name}/ready", handlers: |_| get(model_ready) },
    Route { path: "/v2/models/{name}/versions/{version}/ready", handlers: |_| get(model_ready_versioned) },
    Route {
        path: "/v2/models/{name}/infer",
        handlers: |s| post(infer.layer(middleware::from_fn_with_state(s.clone(), admit))),
    },
    Route {
        path: "/v2/models/{name}/versions/{version}/infer",
        handlers: |s| post(infer_versioned.layer(middleware::from_fn_with_state(s.clone(), admit))),
    },
];

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

/// The `predict` output's datatype: a scikit-learn classifier's labels keep their type (BYTES
/// for strings, or for labels of mixed types); linfa classifiers answer class ids.
fn predict_datatype(model: &Model) -> &'static str {
    let Some(labels) = model.labels() else {
        return if model.artifact.estimator.is_classifier() { "INT64" } else { "FP64" };
    };
    let all = |f: fn(&Label) -> bool| labels.iter().all(f);
    if all(|l| matches!(l, Label::Int(_))) {
        "INT64"
    } else if all(|l| matches!(l, Label::Float(_))) {
        "FP64"
    } else if all(|l| matches!(l, Label::Bool(_))) {
        "BOOL"
    } else {
        "BYTES"
    }
}

/// The `predict` tensor of class ids `ids`, as [`predict_datatype`] says.
fn class_output(model: &Model, ids: Vec<usize>) -> OutputData {
    let Some(labels) = model.labels() else {
        return OutputData::Int64(ids.into_iter().map(|x| x as i64).collect());
    };
    // Ids come from the model's own predict, so they index its labels.
    let each = ids.iter().filter_map(|&i| labels.get(i));
    match predict_datatype(model) {
        "INT64" => {
            OutputData::Int64(each.filter_map(|l| if let Label::Int(v) = l { Some(*v) } else { None }).collect())
        }
        "FP64" => {
            OutputData::Fp64(each.filter_map(|l| if let Label::Float(v) = l { Some(*v) } else { None }).collect())
        }
        "BOOL" => OutputData::Bool(each.filter_map(|l| if let Label::Bool(v) = l { Some(*v) } else { None }).collect()),
        _ => OutputData::Bytes(each.map(ToString::to_string).collect()),
    }
}

/// The outputs a model has: `predict`, and `predict_proba` for models with probabilities.
fn output_names(model: &Model) -> &'static [&'static str] {
    if model.artifact.estimator.has_proba() { &[PREDICT, PREDICT_PROBA] } else { &[PREDICT] }
}

fn metadata(model: &Model) -> Value {
    if let Estimator::Onnx(m) = &model.artifact.estimator {
        let (inputs, outputs) = crate::onnx::v2::metadata(m);
        return json!({"name": model.name, "versions": [model.version], "platform": "onnx_tract", "inputs": inputs, "outputs": outputs});
    }
    let mut outputs = vec![json!({"name": PREDICT, "datatype": predict_datatype(model), "shape": [-1]})];
    if output_names(model).contains(&PREDICT_PROBA) {
        outputs.push(json!({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, model.class_names().len()]}));
    }
    json!({
        "name": model.name,
        "versions": [model.version],
        "platform": format!("linfa_{}", model.algorithm()),
        // The feature names (scikit-learn's feature_names_in_, an MLflow signature's inputs) in
        // the order the tensor's columns take them, as MLServer shows tensor parameters.
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features()],
                    "parameters": {"feature_names": model.artifact.feature_names}}],
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
    Bool(Vec<bool>),
    Bytes(Vec<String>),
}

impl OutputData {
    fn json(&self) -> Value {
        match self {
            Self::Int64(v) => json!(v),
            Self::Fp64(v) => json!(v),
            Self::Bool(v) => json!(v),
            Self::Bytes(v) => json!(v),
        }
    }

    /// The binary tensor data encoding: little-endian values, one byte per BOOL, and each
    /// BYTES element prefixed by its 4-byte little-endian length.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Self::Bytes(v) => {
                v.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect()
            }
        }
    }
}

/// The length of the JSON part of the body, when binary tensor data follows it.
fn json_part_len(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(v) = headers.get(INFERENCE_HEADER) else { return Ok(None) };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("{INFERENCE_HEADER} must be a byte count")))
}

/// Splits a body into its JSON part and the binary tensor data that follows it.
fn split_body(json_len: Option<usize>, body: &[u8]) -> Result<(&[u8], &[u8]), ApiError> {
    let Some(n) = json_len else { return Ok((body, &[])) };
    if n > body.len() {
        return Err(ApiError::BadRequest(format!("{INFERENCE_HEADER} is {n} but the body has {} bytes", body.len())));
    }
    Ok(body.split_at(n))
}

/// Size in bytes of one element of a numeric datatype.
pub fn element_size(datatype: &str) -> usize {
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

/// Decodes little-endian binary tensor data of a numeric datatype (NaN and infinities included:
/// [`Model::check`] refuses them for models that cannot take them).
pub fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<f64>, String> {
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
    Ok(values.collect())
}

const NUMERIC: &[&str] =
    &["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"];

/// Turns the input tensor into rows, checking datatype, shape and data length. `binary` is the
/// binary part of the body; its declared size is checked against the shape and the bytes sent
/// before anything is widened to `f64`. Public only for the fuzz targets (server/fuzz).
#[doc(hidden)]
pub fn input_rows(budget: Budget, input: InputTensor, binary: &[u8]) -> Result<Rows, ApiError> {
    let bad = |m: String| ApiError::BadRequest(format!("input {:?}: {m}", input.name));
    if !NUMERIC.contains(&input.datatype.as_str()) {
        return Err(bad(format!("datatype {} is not supported; use FP32, FP64 or INT*", input.datatype)));
    }
    let (n_rows, n_cols) = infer_request::rows_cols(&input.shape, budget).map_err(bad)?;
    let n_values = n_rows * n_cols;
    let data = match (input.binary_data_size, input.data) {
        (Some(size), _) => {
            let need = n_values * element_size(&input.datatype);
            if size != need {
                return Err(bad(format!(
                    "binary_data_size is {size} but shape {:?} of {} needs {need} bytes",
                    input.shape, input.datatype
                )));
            }
            let bytes = binary.get(..size).ok_or_else(|| {
                bad(format!("binary_data_size {size} exceeds the {} binary bytes sent", binary.len()))
            })?;
            decode_binary(&input.datatype, bytes).map_err(bad)?
        }
        (None, Some(data)) => {
            data.check_datatype(&input.datatype).map_err(bad)?;
            data.values
        }
        (None, None) => return Err(bad("has neither \"data\" nor parameters.binary_data_size".into())),
    };
    if data.len() != n_values {
        return Err(bad(format!("shape {:?} needs {n_values} values, data has {}", input.shape, data.len())));
    }
    Rows::from_flat(data, n_cols, input.shape.len() == 1).map_err(bad)
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Extension(admission): Extension<Admission>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    serve_infer(state, admission, name, None, req).await
}

async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    Extension(admission): Extension<Admission>,
    Path((name, version)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    serve_infer(state, admission, name, Some(version), req).await
}

async fn serve_infer(
    state: Arc<AppState>,
    admission: Admission,
    name: String,
    version: Option<String>,
    req: Request,
) -> Result<Response, ApiError> {
    lookup(&state, &name, version.as_deref())?;
    let json_len = json_part_len(req.headers())?;
    let body = read_body(&state, &admission, req).await?;
    let s = state.clone();
    offload(&state, &admission, body.len(), move || {
        let (json_part, binary) = split_body(json_len, &body)?;
        run_infer(&s, lookup(&s, &name, version.as_deref())?, json_part, binary)
    })
    .await
}

/// One output's tensor, computed once however the response sends it.
fn output(
    state: &AppState,
    model: &Model,
    rows: &Rows,
    name: &'static str,
) -> Result<(&'static str, Vec<usize>, OutputData), ApiError> {
    let n = rows.n_rows();
    if name == PREDICT_PROBA {
        let p = model.predict_proba(rows.matrix.view())?;
        let shape = vec![n, p.ncols()];
        return Ok(("FP64", shape, OutputData::Fp64(p.into_raw_vec_and_offset().0)));
    }
    let p = model.predict(rows.matrix.view())?;
    state.metrics.predicted(&p);
    let data = match p {
        Predictions::Classes(c) => class_output(model, c),
        Predictions::Values(v) => OutputData::Fp64(v),
    };
    Ok((predict_datatype(model), vec![n], data))
}

fn run_infer(state: &AppState, model: &Model, json_part: &[u8], binary: &[u8]) -> Result<Response, ApiError> {
    if let Estimator::Onnx(m) = &model.artifact.estimator {
        let (mut resp, blobs) = crate::onnx::v2::infer(m, json_part, binary, state.limits.max_rows)?;
        resp["model_name"] = json!(model.name);
        resp["model_version"] = json!(model.version);
        return Ok(respond(state, &resp, &blobs));
    }
    let req =
        infer_request::parse(json_part, state.budget(model), output_names(model)).map_err(ApiError::BadRequest)?;
    let rows = input_rows(state.budget(model), req.input, binary)?;
    model.check(rows.matrix.view(), state.limits.max_rows)?;

    let wanted = if req.outputs.is_empty() { vec![(PREDICT, None)] } else { req.outputs };
    let mut outputs = Vec::with_capacity(wanted.len());
    let mut blobs = Vec::new();
    for (name, binary_out) in wanted {
        let (datatype, shape, data) = output(state, model, &rows, name)?;
        if binary_out.unwrap_or(req.binary_data_output) {
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
    Ok(respond(state, &resp, &blobs))
}

/// The response: JSON alone, or with binary outputs the binary tensor data extension's body (the
/// JSON header, then each binary output in order).
fn respond(state: &AppState, resp: &Value, blobs: &[Vec<u8>]) -> Response {
    if blobs.is_empty() {
        return json_from_model(state, resp);
    }
    let mut body = serde_json::to_vec(resp).unwrap_or_default();
    let header_len = body.len();
    blobs.iter().for_each(|b| body.extend_from_slice(b));
    let mut response = json_from_model(state, &());
    *response.body_mut() = axum::body::Body::from(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(INFERENCE_HEADER, HeaderValue::from(header_len));
    h.remove(header::CONTENT_LENGTH);
    response.into_response()
}
