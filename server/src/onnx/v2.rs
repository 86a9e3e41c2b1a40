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

/// One request input as a tract tensor, checked against the graph's input of that name.
fn input_tensor(spec: &TensorSpec, input: &Input, max_rows: usize, takes_missing: bool) -> Result<TValue, ApiError> {
    let name = &input.name;
    let err = |m: String| bad(format!("input {name:?}: {m}"));
    if input.datatype != spec.datatype.v2_name() {
        return Err(err(format!("datatype {} given, the model takes {}", input.datatype, spec.datatype.v2_name())));
    }
    if input.parameters.as_ref().and_then(|p| p.get("binary_data_size")).is_some() {
        return Err(err("binary tensor data is not supported for ONNX models; send \"data\"".into()));
    }
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
    let data = input.data.as_ref().ok_or_else(|| err("has no \"data\"".into()))?;
    let mut values = Vec::new();
    flatten(data, shape.len().max(1), &mut values, !spec.datatype.is_float()).map_err(err)?;
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

/// Runs a V2 request on an ONNX model and returns the response body (without name and version).
pub fn infer(m: &OnnxModel, body: &[u8], max_rows: usize) -> Result<Value, ApiError> {
    let req: Request = serde_json::from_slice(body).map_err(|e| bad(format!("invalid V2 request: {e}")))?;
    let mut inputs = TVec::with_capacity(m.inputs.len());
    for spec in &m.inputs {
        let given: Vec<&Input> = req.inputs.iter().filter(|i| i.name == spec.name).collect();
        match given.as_slice() {
            [one] => inputs.push(input_tensor(spec, one, max_rows, m.takes_missing)?),
            [] => return Err(bad(format!("input {:?} is missing", spec.name))),
            _ => return Err(bad(format!("input {:?} is given more than once", spec.name))),
        }
    }
    if let Some(extra) = req.inputs.iter().find(|i| !m.inputs.iter().any(|s| s.name == i.name)) {
        let names: Vec<&str> = m.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(bad(format!("the model has no input {:?}; its inputs are {names:?}", extra.name)));
    }
    let wanted: Vec<usize> = if req.outputs.is_empty() {
        (0..m.outputs.len()).collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                m.outputs.iter().position(|s| s.name == o.name).ok_or_else(|| {
                    let names: Vec<&str> = m.outputs.iter().map(|s| s.name.as_str()).collect();
                    bad(format!("the model has no output {:?}; its outputs are {names:?}", o.name))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let results = m.run(inputs).map_err(|e| bad(format!("the model could not run on these inputs: {e}")))?;
    let mut outputs = Vec::with_capacity(wanted.len());
    for i in wanted {
        let t = results.get(i).ok_or(ApiError::Internal)?;
        let (dt, shape, data) = tensors::output_json(t).map_err(bad)?;
        // serde_json writes NaN and infinities as null: an overflow, never a silent answer.
        if let Some(at) = data.as_array().and_then(|a| a.iter().position(Value::is_null)) {
            let per_row = t.len() / shape.first().copied().unwrap_or(1).max(1);
            return Err(ApiError::Input(InputError::NotFiniteOutput { row: at / per_row.max(1) }));
        }
        outputs.push(json!({"name": m.outputs[i].name, "datatype": dt.v2_name(), "shape": shape, "data": data}));
    }
    let mut resp = json!({"outputs": outputs});
    if let Some(id) = req.id {
        resp["id"] = json!(id);
    }
    Ok(resp)
}
