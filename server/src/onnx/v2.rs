//! Open Inference Protocol V2 for ONNX models: the graph's own inputs, taken by name with their
//! datatypes, and its own outputs, returned by name.

use serde::Deserialize;
use serde_json::{Value, json};
use tract_onnx::prelude::*;

use super::{OnnxModel, TensorSpec, tensors};
use crate::error::ApiError;
use crate::model::InputError;

/// The metadata's `inputs` and `outputs`.
pub fn metadata(m: &OnnxModel) -> (Vec<Value>, Vec<Value>) {
    (m.inputs.iter().map(TensorSpec::metadata).collect(), m.outputs.iter().map(TensorSpec::metadata).collect())
}

#[derive(Deserialize)]
struct Request {
    id: Option<String>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

/// A boolean parameter (`binary_data_output`, `binary_data`), if given.
fn flag(parameters: Option<&Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(format!("parameter {name} must be true or false, not {other}"))),
    }
}

fn bad(m: String) -> ApiError {
    ApiError::BadRequest(m)
}

/// Flattens nested JSON arrays of at most `depth` levels into numbers, row-major.
fn flatten(v: &Value, depth: usize, out: &mut Vec<f64>, integer: bool) -> Result<(), String> {
    match v {
        Value::Array(items) if depth > 0 => items.iter().try_for_each(|i| flatten(i, depth - 1, out, integer)),
        Value::Number(n) => {
            let x = if integer { n.as_i64().map(|i| i as f64) } else { n.as_f64() };
            out.push(x.ok_or_else(|| format!("{n} is not {}", if integer { "an integer" } else { "a number" }))?);
            Ok(())
        }
        Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        // A missing value, as for the scikit-learn file; `input_tensor` refuses it unless the graph takes NaN.
        Value::Null if !integer => {
            out.push(f64::NAN);
            Ok(())
        }
        other => Err(format!("data must hold numbers nested like the shape, found {other}")),
    }
}

/// One request input as a tract tensor, checked against the graph's input of that name. Binary
/// data (`parameters.binary_data_size`) is taken from the front of `binary`, which is advanced.
fn input_tensor(
    spec: &TensorSpec,
    input: &Input,
    max_rows: usize,
    takes_missing: bool,
    binary: &mut &[u8],
) -> Result<TValue, ApiError> {
    let name = &input.name;
    let err = |m: String| bad(format!("input {name:?}: {m}"));
    if input.datatype != spec.datatype.v2_name() {
        return Err(err(format!("datatype {} given, the model takes {}", input.datatype, spec.datatype.v2_name())));
    }
    let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
        None => None,
        Some(size) => Some(
            size.as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| err(format!("binary_data_size must be a byte count, not {size}")))?,
        ),
    };
    let shape = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("shape {:?} has a negative dimension", input.shape))))
        .collect::<Result<Vec<_>, _>>()?;
    spec.check_shape(&shape).map_err(err)?;
    if let Some(&rows) = shape.first().filter(|&&r| r > max_rows) {
        return Err(ApiError::Input(InputError::TooManyRows { got: rows, limit: max_rows }));
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| err("shape overflows".into()))?;
    let mut values = Vec::new();
    match (binary_size, input.data.as_ref()) {
        (Some(size), _) => {
            if !spec.datatype.is_numeric() {
                return Err(err(format!("binary data for {} inputs is not supported; send \"data\"", input.datatype)));
            }
            let need = n.checked_mul(crate::v2::element_size(&input.datatype));
            if need != Some(size) {
                return Err(err(format!(
                    "binary_data_size is {size} but shape {shape:?} of {} needs {n} values",
                    input.datatype
                )));
            }
            if size > binary.len() {
                return Err(err(format!("binary_data_size {size} exceeds the {} binary bytes left", binary.len())));
            }
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            values = crate::v2::decode_binary(&input.datatype, bytes).map_err(err)?;
        }
        (None, Some(data)) => flatten(data, shape.len().max(1), &mut values, !spec.datatype.is_float()).map_err(err)?,
        (None, None) => return Err(err("has neither \"data\" nor parameters.binary_data_size".into())),
    }
    if values.len() != n {
        return Err(err(format!("shape {shape:?} needs {n} values, data has {}", values.len())));
    }
    if let Some(at) = values.iter().position(|v| !(v.is_finite() || takes_missing && v.is_nan())) {
        let per_row = n / shape.first().copied().unwrap_or(1).max(1);
        let (row, feature) = (at / per_row.max(1), (at % per_row.max(1)).to_string());
        return Err(ApiError::Input(if values[at].is_nan() {
            InputError::Missing { row, feature }
        } else {
            InputError::NotFinite { row, feature }
        }));
    }
    Ok(spec.tensor(&shape, &values).map_err(bad)?.into_tvalue())
}

/// Runs a V2 request on an ONNX model: `body` is the JSON part, `binary` the binary tensor data
/// after it (empty without the extension). Returns the response JSON (without name and version)
/// and the binary outputs in order, whose sizes the JSON gives.
pub fn infer(m: &OnnxModel, body: &[u8], binary: &[u8], max_rows: usize) -> Result<(Value, Vec<Vec<u8>>), ApiError> {
    let req: Request = serde_json::from_slice(body).map_err(|e| bad(format!("invalid V2 request: {e}")))?;
    let all_binary = flag(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    // Binary inputs follow the JSON in the order of the request's inputs.
    let mut rest = binary;
    let mut parsed: Vec<Option<TValue>> = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let spec = m.inputs.iter().find(|s| s.name == input.name);
        parsed.push(spec.map(|spec| input_tensor(spec, input, max_rows, m.takes_missing, &mut rest)).transpose()?);
    }
    let mut inputs = TVec::with_capacity(m.inputs.len());
    for spec in &m.inputs {
        let given: Vec<usize> = (0..req.inputs.len()).filter(|&k| req.inputs[k].name == spec.name).collect();
        match given.as_slice() {
            [one] => inputs.push(parsed[*one].take().ok_or(ApiError::Internal)?),
            [] => return Err(bad(format!("input {:?} is missing", spec.name))),
            _ => return Err(bad(format!("input {:?} is given more than once", spec.name))),
        }
    }
    if let Some(extra) = req.inputs.iter().find(|i| !m.inputs.iter().any(|s| s.name == i.name)) {
        let names: Vec<&str> = m.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(bad(format!("the model has no input {:?}; its inputs are {names:?}", extra.name)));
    }
    let wanted: Vec<(usize, bool)> = if req.outputs.is_empty() {
        (0..m.outputs.len()).map(|i| (i, all_binary)).collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                let i = m.outputs.iter().position(|s| s.name == o.name).ok_or_else(|| {
                    let names: Vec<&str> = m.outputs.iter().map(|s| s.name.as_str()).collect();
                    bad(format!("the model has no output {:?}; its outputs are {names:?}", o.name))
                })?;
                Ok((i, flag(o.parameters.as_ref(), "binary_data")?.unwrap_or(all_binary)))
            })
            .collect::<Result<_, ApiError>>()?
    };
    let results = m.run(inputs).map_err(|e| bad(format!("the model could not run on these inputs: {e}")))?;
    let (mut outputs, mut blobs) = (Vec::with_capacity(wanted.len()), Vec::new());
    for (i, binary_out) in wanted {
        let t = results.get(i).ok_or(ApiError::Internal)?;
        // An overflow to NaN or infinity is an error, never a silent answer.
        if let Some(at) = tensors::first_non_finite(t) {
            let per_row = t.len() / t.shape().first().copied().unwrap_or(1).max(1);
            return Err(ApiError::Input(InputError::NotFiniteOutput { row: at / per_row.max(1) }));
        }
        let name = &m.outputs[i].name;
        if binary_out {
            let (dt, shape, bytes) = tensors::output_binary(t).map_err(bad)?;
            let parameters = json!({"binary_data_size": bytes.len()});
            outputs.push(json!({"name": name, "datatype": dt.v2_name(), "shape": shape, "parameters": parameters}));
            blobs.push(bytes);
        } else {
            let (dt, shape, data) = tensors::output_json(t).map_err(bad)?;
            outputs.push(json!({"name": name, "datatype": dt.v2_name(), "shape": shape, "data": data}));
        }
    }
    let mut resp = json!({"outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = json!(id);
    }
    Ok((resp, blobs))
}
