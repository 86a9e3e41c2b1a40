//! The graph's tensors as V2 sees them: names, datatypes, shapes (-1 for a dynamic dimension),
//! and the conversions between V2 data and tract tensors.

use serde_json::{Value, json};
use tract_onnx::pb::ValueInfoProto;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto;
use tract_onnx::prelude::*;

use super::OnnxError;

/// The element types we exchange with clients (ONNX `TensorProto.DataType` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Fp32,
    Fp64,
    Int32,
    Int64,
    Bool,
    Bytes,
}

impl DataType {
    fn from_onnx(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::Fp32,
            11 => Self::Fp64,
            6 => Self::Int32,
            7 => Self::Int64,
            9 => Self::Bool,
            8 => Self::Bytes,
            _ => return None,
        })
    }

    fn from_datum(dt: DatumType) -> Option<Self> {
        Some(match dt {
            DatumType::F32 => Self::Fp32,
            DatumType::F64 => Self::Fp64,
            DatumType::I32 => Self::Int32,
            DatumType::I64 => Self::Int64,
            DatumType::Bool => Self::Bool,
            DatumType::String => Self::Bytes,
            _ => return None,
        })
    }

    /// tract's element type.
    pub fn datum_type(self) -> DatumType {
        match self {
            Self::Fp32 => DatumType::F32,
            Self::Fp64 => DatumType::F64,
            Self::Int32 => DatumType::I32,
            Self::Int64 => DatumType::I64,
            Self::Bool => DatumType::Bool,
            Self::Bytes => DatumType::String,
        }
    }

    /// The Open Inference Protocol name.
    pub fn v2_name(self) -> &'static str {
        match self {
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Bool => "BOOL",
            Self::Bytes => "BYTES",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::Fp32 | Self::Fp64)
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Fp32 | Self::Fp64 | Self::Int32 | Self::Int64)
    }
}

/// One graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// Dimensions, -1 where the graph leaves one dynamic.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub(super) fn from_proto(v: &ValueInfoProto) -> Result<Self, OnnxError> {
        let bad = |m: &str| OnnxError::Invalid(format!("graph value {:?}: {m}", v.name));
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(bad("only tensor inputs and outputs are supported (turn zipmap off when exporting)"));
        };
        let datatype = DataType::from_onnx(t.elem_type)
            .ok_or_else(|| bad(&format!("element type {} is not supported", t.elem_type)))?;
        let shape = t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(dimension::Value::DimValue(n)) if n >= 0 => n,
                        _ => -1,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { name: v.name.clone(), datatype, shape })
    }

    /// The V2 metadata entry.
    pub fn metadata(&self) -> Value {
        json!({"name": self.name, "datatype": self.datatype.v2_name(), "shape": self.shape})
    }

    /// Checks a request's shape against the declared one (a -1 or undeclared rank accepts any).
    pub fn check_shape(&self, shape: &[usize]) -> Result<(), String> {
        let fits = self.shape.is_empty()
            || (self.shape.len() == shape.len()
                && self.shape.iter().zip(shape).all(|(&d, &n)| d < 0 || d as usize == n));
        if fits { Ok(()) } else { Err(format!("shape {shape:?} does not fit the model's {:?}", self.shape)) }
    }

    /// A tract tensor of this input's type from row-major values (already checked to be in range).
    pub fn tensor(&self, shape: &[usize], values: &[f64]) -> Result<Tensor, String> {
        let t = match self.datatype {
            DataType::Fp32 => Tensor::from_shape(shape, &values.iter().map(|&v| v as f32).collect::<Vec<_>>()),
            DataType::Fp64 => Tensor::from_shape(shape, values),
            DataType::Int32 => Tensor::from_shape(shape, &values.iter().map(|&v| v as i32).collect::<Vec<_>>()),
            DataType::Int64 => Tensor::from_shape(shape, &values.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            DataType::Bool => Tensor::from_shape(shape, &values.iter().map(|&v| v != 0.0).collect::<Vec<_>>()),
            DataType::Bytes => return Err(format!("input {:?} takes BYTES, which is not supported", self.name)),
        };
        t.map_err(|e| format!("input {:?}: {e}", self.name))
    }
}

/// An output's V2 datatype, with the tensor to read it from: tract computes some integer outputs
/// (a label from ArgMax) as symbolic dimensions, which are cast to INT64.
fn output_typed(t: &Tensor) -> Result<(DataType, std::borrow::Cow<'_, Tensor>), String> {
    let t = if t.datum_type() == DatumType::TDim {
        std::borrow::Cow::Owned(t.cast_to::<i64>().map_err(|e| e.to_string())?.into_owned())
    } else {
        std::borrow::Cow::Borrowed(t)
    };
    let dt = DataType::from_datum(t.datum_type())
        .ok_or_else(|| format!("output type {:?} is not supported", t.datum_type()))?;
    Ok((dt, t))
}

/// An output tensor as V2 JSON: datatype, shape and flat row-major data.
pub fn output_json(t: &Tensor) -> Result<(DataType, Vec<usize>, Value), String> {
    let (dt, t) = output_typed(t)?;
    let data = match dt {
        DataType::Fp32 => json!(values::<f32>(&t)?.into_iter().map(f64::from).collect::<Vec<_>>()),
        DataType::Fp64 => json!(values::<f64>(&t)?),
        DataType::Int32 => json!(values::<i32>(&t)?),
        DataType::Int64 => json!(values::<i64>(&t)?),
        DataType::Bool => json!(values::<bool>(&t)?),
        DataType::Bytes => json!(values::<String>(&t)?),
    };
    Ok((dt, t.shape().to_vec(), data))
}

/// An output in the binary tensor data encoding: little-endian values, one byte per BOOL, each
/// BYTES element prefixed by its 4-byte little-endian length.
pub fn output_binary(t: &Tensor) -> Result<(DataType, Vec<usize>, Vec<u8>), String> {
    let (dt, t) = output_typed(t)?;
    let bytes = match dt {
        DataType::Fp32 => values::<f32>(&t)?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DataType::Fp64 => values::<f64>(&t)?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DataType::Int32 => values::<i32>(&t)?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DataType::Int64 => values::<i64>(&t)?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DataType::Bool => values::<bool>(&t)?.into_iter().map(u8::from).collect(),
        DataType::Bytes => values::<String>(&t)?
            .iter()
            .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
            .collect(),
    };
    Ok((dt, t.shape().to_vec(), bytes))
}

/// The flat index of a float output's first NaN or infinity, read in place (other types have none).
pub fn first_non_finite(t: &Tensor) -> Option<usize> {
    match t.datum_type() {
        DatumType::F32 => t.to_plain_array_view::<f32>().ok()?.iter().position(|x| !x.is_finite()),
        DatumType::F64 => t.to_plain_array_view::<f64>().ok()?.iter().position(|x| !x.is_finite()),
        _ => None,
    }
}

/// A tensor's elements, row-major.
pub fn values<T: Datum + Clone>(t: &Tensor) -> Result<Vec<T>, String> {
    t.to_plain_array_view::<T>().map(|a| a.iter().cloned().collect()).map_err(|e| e.to_string())
}

/// A float or integer output as `f64`s (for `/predict`).
pub fn output_f64(t: &Tensor) -> Result<Vec<f64>, String> {
    let floats = t.cast_to::<f64>().map_err(|e| e.to_string())?;
    values::<f64>(&floats)
}
