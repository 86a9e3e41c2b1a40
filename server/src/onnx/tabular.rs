//! The classic `/predict` (and `batch`) on an ONNX model: rows fill its single 2-D input; the
//! label output gives the prediction and the probabilities output `proba`.

use ndarray::{Array2, ArrayView2};
use tract_onnx::prelude::*;

use super::{DataType, OnnxModel, tensors};
use crate::model::{InputError, Predictions};

impl OnnxModel {
    /// Why `/predict` cannot serve this model, if it cannot.
    pub fn tabular_error(&self) -> Option<InputError> {
        if self.n_features() > 0 && (self.label_output().is_some() || self.value_output().is_some()) {
            return None;
        }
        let inputs: Vec<String> =
            self.inputs.iter().map(|i| format!("{} {} {:?}", i.name, i.datatype.v2_name(), i.shape)).collect();
        Some(InputError::NotTabular(inputs.join(", ")))
    }

    fn run_rows(&self, rows: ArrayView2<'_, f64>) -> Result<TVec<TValue>, InputError> {
        let spec = self.tabular_input().ok_or_else(|| self.tabular_error().unwrap_or(InputError::Empty))?;
        let values: Vec<f64> = rows.iter().copied().collect();
        let t = spec.tensor(&[rows.nrows(), rows.ncols()], &values).map_err(InputError::Run)?;
        self.run(tvec![t.into_tvalue()]).map_err(InputError::Run)
    }

    /// Class ids (indices into [`OnnxModel::class_names`]) or regression values of checked rows.
    pub fn predict_rows(&self, rows: ArrayView2<'_, f64>) -> Result<Predictions, InputError> {
        let out = self.run_rows(rows)?;
        if let Some(i) = self.label_output() {
            let t = out.get(i).ok_or_else(|| InputError::Run("the label output is missing".into()))?;
            let labels: Vec<String> = match self.outputs[i].datatype {
                DataType::Bytes => tensors::values::<String>(t).map_err(InputError::Run)?,
                _ => tensors::output_f64(t).map_err(InputError::Run)?.iter().map(|v| (*v as i64).to_string()).collect(),
            };
            let names = self.class_names();
            let ids = labels
                .iter()
                .map(|l| {
                    names
                        .iter()
                        .position(|n| n == l)
                        .ok_or_else(|| InputError::Run(format!("label {l} is not a known class")))
                })
                .collect::<Result<_, _>>()?;
            return Ok(Predictions::Classes(ids));
        }
        let i = self.value_output().ok_or_else(|| self.tabular_error().unwrap_or(InputError::Empty))?;
        let t = out.get(i).ok_or_else(|| InputError::Run("the value output is missing".into()))?;
        let values = tensors::output_f64(t).map_err(InputError::Run)?;
        if values.len() != rows.nrows() {
            return Err(InputError::Run(format!(
                "{} values for {} rows (several targets: use V2)",
                values.len(),
                rows.nrows()
            )));
        }
        match values.iter().position(|v| !v.is_finite()) {
            Some(row) => Err(InputError::NotFiniteOutput { row }),
            None => Ok(Predictions::Values(values)),
        }
    }

    /// Class probabilities of checked rows, one column per class name.
    pub fn predict_proba_rows(&self, rows: ArrayView2<'_, f64>) -> Result<Array2<f64>, InputError> {
        let i = self.proba_output().ok_or(InputError::NoProbabilities("this onnx"))?;
        let out = self.run_rows(rows)?;
        let t = out.get(i).ok_or_else(|| InputError::Run("the probabilities output is missing".into()))?;
        let values = tensors::output_f64(t).map_err(InputError::Run)?;
        let cols = t.shape().get(1).copied().unwrap_or(0);
        if let Some(row) = values.iter().position(|v| !v.is_finite()).map(|p| p / cols.max(1)) {
            return Err(InputError::NotFiniteOutput { row });
        }
        Array2::from_shape_vec((rows.nrows(), cols), values).map_err(|e| InputError::Run(e.to_string()))
    }

    /// Class names: the classifier node's labels, else `0..k` from the probabilities' width.
    pub fn class_names(&self) -> Vec<String> {
        if !self.class_labels.is_empty() || self.label_output().is_none() {
            return self.class_labels.clone();
        }
        let k = self.proba_output().and_then(|i| self.outputs[i].shape.get(1).copied()).unwrap_or(-1);
        (0..k.max(0)).map(|c| c.to_string()).collect()
    }
}

impl OnnxModel {
    /// Wraps the model in an [`crate::Artifact`]: features `x0..` of its tabular input, if any.
    pub fn into_artifact(self) -> crate::Artifact {
        let features = (0..self.n_features()).map(|i| format!("x{i}")).collect();
        let classes = self.class_names();
        let estimator = crate::artifact::Estimator::Onnx(Box::new(self));
        crate::sklearn::format::foreign_artifact("onnx".into(), features, classes, estimator)
    }
}
