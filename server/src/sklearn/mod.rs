//! scikit-learn models (`pickle.dump`, `joblib.dump`, cloudpickle and `skops.io.dump` files)
//! served without Python and without executing anything from the file.
//!
//! The file is expanded if joblib compressed it ([`joblib`]), read by a pickle interpreter that
//! only builds data and refuses every global outside an allowlist ([`pickle`], [`globals`]),
//! numpy arrays are rebuilt from their bytes ([`numpy`]); a skops zip becomes the same node tree
//! ([`skops`]). The estimator's fitted attributes become a [`SklearnModel`] whose predictions
//! follow scikit-learn's arithmetic.

pub mod boosting;
pub mod estimator;
pub mod format;
pub mod globals;
pub mod joblib;
pub mod linear;
pub mod numpy;
pub mod object;
pub mod pickle;
pub mod preprocessing;
pub mod skops;
pub mod tree;

use ndarray::{Array2, ArrayView2};

pub use estimator::Fitted;
pub use joblib::Encoding;
pub use object::Label;

/// Why a scikit-learn model file cannot be served; each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum SklearnError {
    #[error(transparent)]
    Pickle(#[from] pickle::PickleError),
    #[error(transparent)]
    Container(#[from] joblib::ContainerError),
    #[error(transparent)]
    Skops(#[from] skops::SkopsError),
    #[error("not a pickle, joblib or skops file (unrecognised signature)")]
    UnknownFormat,
    #[error("pickle protocols 0 and 1 are not supported: save with protocol 2 or newer")]
    OldProtocol,
    #[error("unsupported estimator {class}; supported: {supported}")]
    Unsupported { class: String, supported: String },
    #[error("not a scikit-learn model: the file holds a {0}")]
    NotEstimator(&'static str),
    #[error("invalid {class}: {reason}")]
    Invalid { class: String, reason: String },
    #[error("expected {expected} features per row, got {got}")]
    FeatureCount { expected: usize, got: usize },
    #[error("probabilities are not available for this {0} model")]
    NoProbabilities(&'static str),
}

/// Limits on what a model file may make the reader allocate.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decompressed file, in bytes.
    pub max_file_bytes: usize,
    /// Limits of the pickle interpreter (largest array, nesting).
    pub pickle: pickle::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_file_bytes: 2 << 30, pickle: pickle::Limits::default() }
    }
}

impl Limits {
    /// The limits for a model of at most `max_bytes` (`--max-model-bytes`): the file as fetched,
    /// a compressed joblib file once expanded, and each array it declares (an array needs its
    /// bytes present in the file, so it is never larger than the model may be).
    pub fn for_model_bytes(max_bytes: usize) -> Self {
        let pickle = pickle::Limits { max_array_bytes: max_bytes, ..Default::default() };
        Self { max_file_bytes: max_bytes, pickle }
    }
}

/// Predictions: class indices into [`SklearnModel::classes`], or regression values.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Classes(Vec<usize>),
    Values(Vec<f64>),
}

/// A scikit-learn model ready to predict.
#[derive(Debug, Clone)]
pub struct SklearnModel {
    pub fitted: Fitted,
    /// How the file was encoded (pickle, or the joblib compressor).
    pub encoding: Encoding,
}

impl SklearnModel {
    /// Reads a model from the bytes of a pickle, joblib or skops file.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self, SklearnError> {
        let encoding = match Encoding::detect(bytes) {
            Some(e) => e,
            // Protocol 0/1 pickles have no PROTO opcode; they start with a GLOBAL or a MARK.
            None if matches!(bytes.first(), Some(b'c' | b'(' | b']' | b'}')) => return Err(SklearnError::OldProtocol),
            None => return Err(SklearnError::UnknownFormat),
        };
        if encoding == Encoding::Skops {
            let p = skops::read(bytes, limits)?;
            return Ok(Self { fitted: Fitted::from_pickle(&p)?, encoding });
        }
        let expanded;
        let raw = if encoding == Encoding::Pickle {
            bytes
        } else {
            expanded = joblib::decompress(bytes, encoding, limits.max_file_bytes)?;
            expanded.as_slice()
        };
        let p = pickle::read(raw, limits.pickle)?;
        Ok(Self { fitted: Fitted::from_pickle(&p)?, encoding })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.fitted.n_features
    }

    /// `feature_names_in_`, or scikit-learn's default names `x0`, `x1`, ...
    pub fn feature_names(&self) -> Vec<String> {
        self.fitted.feature_names.clone().unwrap_or_else(|| (0..self.n_features()).map(|i| format!("x{i}")).collect())
    }

    /// `classes_` of a classifier (empty for regression).
    pub fn classes(&self) -> &[Label] {
        &self.fitted.classes
    }

    /// Whether the model predicts classes.
    pub fn is_classifier(&self) -> bool {
        !self.fitted.classes.is_empty()
    }

    /// Whether rows may carry NaN for missing values (see [`Fitted::handles_nan`]).
    pub fn handles_nan(&self) -> bool {
        self.fitted.handles_nan()
    }

    /// Whether [`SklearnModel::predict_proba`] is available.
    pub fn has_proba(&self) -> bool {
        self.fitted.has_proba()
    }

    /// Class of the pickled estimator (e.g. `Pipeline`, `LogisticRegression`).
    pub fn class(&self) -> &'static str {
        self.fitted.class
    }

    fn checked(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>, SklearnError> {
        if x.ncols() != self.n_features() {
            return Err(SklearnError::FeatureCount { expected: self.n_features(), got: x.ncols() });
        }
        Ok(self.fitted.transform(x))
    }

    /// Predicts rows of `n_features` values (NaN where the model handles missing values).
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Result<Prediction, SklearnError> {
        let x = self.checked(x)?;
        let x = x.view();
        Ok(match &self.fitted.predictor {
            estimator::Predictor::Linear(m) => Prediction::Values(m.predict(x)),
            estimator::Predictor::TreeRegressor(t) => Prediction::Values(t.predict_values(x)),
            estimator::Predictor::LinearClassifier(m) => Prediction::Classes(m.predict(x)),
            estimator::Predictor::TreeClassifier(t) => Prediction::Classes(t.predict_classes(x)),
            estimator::Predictor::BoostingRegressor(b) => Prediction::Values(b.predict_values(x)),
            estimator::Predictor::BoostingClassifier(b) => Prediction::Classes(b.predict_classes(x)),
        })
    }

    /// Class probabilities, one column per entry of [`SklearnModel::classes`].
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>, SklearnError> {
        let x = self.checked(x)?;
        let none = || SklearnError::NoProbabilities(self.fitted.class);
        match &self.fitted.predictor {
            estimator::Predictor::LinearClassifier(m) => m.predict_proba(x.view()).ok_or_else(none),
            estimator::Predictor::TreeClassifier(t) => Ok(t.predict_proba(x.view())),
            estimator::Predictor::BoostingClassifier(b) => Ok(b.predict_proba(x.view())),
            _ => Err(none()),
        }
    }

    /// What `inspect` prints: class, steps, features, classes, trees.
    pub fn describe(&self) -> serde_json::Value {
        let trees = match &self.fitted.predictor {
            estimator::Predictor::TreeClassifier(t) | estimator::Predictor::TreeRegressor(t) => {
                serde_json::json!({"trees": t.n_trees(), "nodes": t.n_nodes()})
            }
            estimator::Predictor::BoostingClassifier(b) | estimator::Predictor::BoostingRegressor(b) => {
                serde_json::json!({"trees": b.n_trees()})
            }
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "format": "sklearn",
            "encoding": self.encoding.name(),
            "class": self.class(),
            "sklearn_version": self.fitted.sklearn_version,
            "steps": self.fitted.steps,
            "n_features": self.n_features(),
            "feature_names": self.feature_names(),
            "classes": self.classes(),
            "predict_proba": self.has_proba(),
            "trees": trees,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Limits, pickle};

    #[test]
    fn the_model_byte_limit_bounds_the_file_its_expansion_and_each_array() {
        // Above the 1 GiB default per array: a larger --max-model-bytes admits larger arrays.
        let big = Limits::for_model_bytes(3 << 30);
        assert_eq!((big.max_file_bytes, big.pickle.max_array_bytes), (3 << 30, 3 << 30));
        let small = Limits::for_model_bytes(4096);
        assert_eq!((small.max_file_bytes, small.pickle.max_array_bytes), (4096, 4096));
        assert_eq!(small.pickle.max_nesting, pickle::Limits::default().max_nesting);
        let e = super::numpy::Array::from_raw(
            super::numpy::Dtype::parse("<f8").unwrap(),
            vec![1024],
            &[0u8; 8192],
            false,
            small.pickle.max_array_bytes,
        )
        .unwrap_err();
        assert_eq!(e, "array of 8192 bytes exceeds the limit of 4096 bytes");
    }
}
