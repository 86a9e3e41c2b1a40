//! A loaded model: validated inputs in, predictions (and probabilities) out.

use linfa::prelude::Predict;
use ndarray::{Array1, Array2, ArrayView2};

use crate::artifact::{Artifact, Estimator};
use crate::sklearn::Label;

/// A model ready to serve, with the name and version it is served under.
#[derive(Debug)]
pub struct Model {
    pub artifact: Artifact,
    /// Name in URLs (`/v2/models/{name}`) and metrics.
    pub name: String,
    /// Version label (from `--model-version`, else the artifact's training time).
    pub version: String,
}

/// Predictions for a batch: class ids for classifiers, values for regression.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Predictions {
    Classes(Vec<usize>),
    Values(Vec<f64>),
}

impl Predictions {
    pub fn len(&self) -> usize {
        match self {
            Self::Classes(c) => c.len(),
            Self::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Predictions as the API answers them: class labels for a scikit-learn classifier, else as is.
pub struct Shown<'a> {
    pub predictions: Predictions,
    pub labels: Option<&'a [Label]>,
}

impl serde::Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.predictions, self.labels) {
            // Ids come from the model's own predict, so they index `classes_`.
            (Predictions::Classes(ids), Some(labels)) => s.collect_seq(ids.iter().map(|&i| labels.get(i))),
            (p, _) => p.serialize(s),
        }
    }
}

/// Why a set of rows cannot be predicted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("expected {expected} features per row, got {got}")]
    FeatureCount { expected: usize, got: usize },
    #[error("no rows to predict")]
    Empty,
    #[error("{got} rows exceed the limit of {limit} rows per request")]
    TooManyRows { got: usize, limit: usize },
    #[error("row {row}, feature {feature}: feature values must be finite numbers")]
    NotFinite { row: usize, feature: String },
    /// A missing value (JSON `null`, NaN) for a model that cannot take one.
    #[error(
        "row {row}, feature {feature}: missing value (null or NaN), but this model takes only finite numbers \
         (HistGradientBoosting models and pipelines with a SimpleImputer take missing values, and their ONNX exports)"
    )]
    Missing { row: usize, feature: String },
    /// An ONNX model whose inputs are not one 2-D numeric tensor.
    #[error(
        "the classic API needs a model with one 2-D numeric input of fixed width; this model takes {0}: use V2 infer"
    )]
    NotTabular(String),
    /// The ONNX runtime refused the rows.
    #[error("the model could not run on these rows: {0}")]
    Run(String),
    #[error("probabilities are not available for {0} models")]
    NoProbabilities(&'static str),
    /// Finite inputs so far outside the model's range that the arithmetic overflowed.
    #[error("the model's output for row {row} is not a finite number; the inputs are outside its numeric range")]
    NotFiniteOutput { row: usize },
}

impl Model {
    pub fn new(artifact: Artifact, name: Option<String>, version: Option<String>) -> Self {
        let name = name.unwrap_or_else(|| artifact.name.clone());
        // A scikit-learn file has no training time to fall back to.
        let trained_at = Some(artifact.training.trained_at.clone()).filter(|t| !t.is_empty());
        let version = version.or(trained_at).unwrap_or_else(|| "unversioned".into());
        Self { artifact, name, version }
    }

    pub fn n_features(&self) -> usize {
        self.artifact.n_features()
    }

    pub fn algorithm(&self) -> &'static str {
        self.artifact.estimator.algorithm()
    }

    pub fn class_names(&self) -> &[String] {
        &self.artifact.class_names
    }

    fn onnx(&self) -> Option<&crate::onnx::OnnxModel> {
        match &self.artifact.estimator {
            Estimator::Onnx(m) => Some(m),
            _ => None,
        }
    }

    /// Checks rows against the model before predicting, so linfa's shape assertions never fire.
    pub fn check(&self, rows: ArrayView2<'_, f64>, limit: usize) -> Result<(), InputError> {
        if let Some(e) = self.onnx().and_then(crate::onnx::OnnxModel::tabular_error) {
            return Err(e);
        }
        if rows.nrows() == 0 {
            return Err(InputError::Empty);
        }
        if rows.ncols() != self.n_features() {
            return Err(InputError::FeatureCount { expected: self.n_features(), got: rows.ncols() });
        }
        if rows.nrows() > limit {
            return Err(InputError::TooManyRows { got: rows.nrows(), limit });
        }
        let nan_ok = self.handles_nan();
        if let Some(((row, col), v)) = rows.indexed_iter().find(|(_, v)| !(v.is_finite() || nan_ok && v.is_nan())) {
            let feature = self.artifact.feature_names.get(col).cloned().unwrap_or_else(|| col.to_string());
            return Err(if v.is_nan() {
                InputError::Missing { row, feature }
            } else {
                InputError::NotFinite { row, feature }
            });
        }
        Ok(())
    }

    /// Whether rows may carry NaN as "missing" (some scikit-learn models and ONNX graphs; never linfa ones).
    pub fn handles_nan(&self) -> bool {
        match &self.artifact.estimator {
            Estimator::Sklearn(m) => m.handles_nan(),
            Estimator::Onnx(m) => m.takes_missing,
            _ => false,
        }
    }

    /// `classes_` of a scikit-learn classifier, which predictions are answered with (ints or
    /// strings, as scikit-learn's `predict` returns them); `None` for linfa models, which
    /// answer with class ids.
    pub fn labels(&self) -> Option<&[Label]> {
        match &self.artifact.estimator {
            Estimator::Sklearn(m) if m.is_classifier() => Some(m.classes()),
            _ => None,
        }
    }

    /// Predicts checked rows (see [`Model::check`]); an overflow to NaN or infinity is an error,
    /// never a silently wrong answer.
    pub fn predict(&self, rows: ArrayView2<'_, f64>) -> Result<Predictions, InputError> {
        match &self.artifact.estimator {
            Estimator::LogisticRegression(m) => {
                // linfa's rule (argmax of intercept + x·params, first on ties) without its
                // per-call allocations; the tests check it against linfa's own `predict`.
                let (params, intercept, classes) = (m.params(), m.intercept(), m.classes());
                // `Artifact::check` proved `classes` non-empty and as long as `intercept`.
                let mut ids = Vec::with_capacity(rows.nrows());
                for (i, row) in rows.outer_iter().enumerate() {
                    let mut best = (f64::NEG_INFINITY, 0);
                    for (k, b) in intercept.iter().enumerate() {
                        let z = b + row.dot(&params.column(k));
                        if !z.is_finite() {
                            return Err(InputError::NotFiniteOutput { row: i });
                        }
                        if z > best.0 {
                            best = (z, k);
                        }
                    }
                    ids.push(classes[best.1]);
                }
                Ok(Predictions::Classes(ids))
            }
            Estimator::DecisionTree(t) => {
                let y: Array1<usize> = t.predict(&rows);
                Ok(Predictions::Classes(y.to_vec()))
            }
            Estimator::LinearRegression(m) => {
                let y: Array1<f64> = m.predict(&rows);
                if let Some(row) = y.iter().position(|v| !v.is_finite()) {
                    return Err(InputError::NotFiniteOutput { row });
                }
                Ok(Predictions::Values(y.to_vec()))
            }
            // `check` proved the width, the only input error the reader reports.
            Estimator::Sklearn(m) => match m.predict(rows) {
                Ok(crate::sklearn::Prediction::Classes(c)) => Ok(Predictions::Classes(c)),
                Ok(crate::sklearn::Prediction::Values(v)) => match v.iter().position(|y| !y.is_finite()) {
                    Some(row) => Err(InputError::NotFiniteOutput { row }),
                    None => Ok(Predictions::Values(v)),
                },
                Err(_) => Err(InputError::FeatureCount { expected: self.n_features(), got: rows.ncols() }),
            },
            Estimator::Onnx(m) => m.predict_rows(rows),
        }
    }

    /// Class probabilities of checked rows, one row per input row and one column per class name.
    pub fn predict_proba(&self, rows: ArrayView2<'_, f64>) -> Result<Array2<f64>, InputError> {
        match &self.artifact.estimator {
            Estimator::LogisticRegression(m) => {
                let p = m.predict_probabilities(&rows);
                if let Some((row, _)) = p.indexed_iter().find(|(_, v)| !v.is_finite()) {
                    return Err(InputError::NotFiniteOutput { row: row.0 });
                }
                // linfa orders columns by `classes()`; reorder to class-id order.
                let mut out = Array2::zeros((rows.nrows(), self.class_names().len()));
                for (col, &class) in m.classes().iter().enumerate() {
                    out.column_mut(class).assign(&p.column(col));
                }
                Ok(out)
            }
            Estimator::Sklearn(m) => m.predict_proba(rows).map_err(|_| InputError::NoProbabilities(m.class())),
            Estimator::Onnx(m) => m.predict_proba_rows(rows),
            other => Err(InputError::NoProbabilities(other.algorithm())),
        }
    }
}
