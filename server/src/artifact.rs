//! The model artifact: one self-describing JSON file holding the fitted linfa model and what a
//! server or a drift monitor needs to know about it.

use linfa_linear::FittedLinearRegression;
use linfa_logistic::MultiFittedLogisticRegression;
use linfa_trees::DecisionTree;
use serde::{Deserialize, Serialize};

/// Marker in every artifact, so that other JSON files are refused with a clear message.
pub const FORMAT: &str = "modelship.artifact";
/// The artifact format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// A trained model and its metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub format: String,
    pub format_version: u32,
    /// Name the model was trained under (e.g. `iris`).
    pub name: String,
    /// Names of the input features, in the order the model expects them.
    pub feature_names: Vec<String>,
    /// Class names of a classifier, indexed by class id; empty for regression.
    #[serde(default)]
    pub class_names: Vec<String>,
    pub training: TrainingInfo,
    /// Per-feature statistics of the training data, kept for drift monitoring.
    pub feature_stats: Vec<FeatureStats>,
    pub estimator: Estimator,
}

/// How and on what the model was trained.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainingInfo {
    /// RFC 3339 time of training.
    pub trained_at: String,
    /// Rows used to fit the model.
    pub train_rows: usize,
    /// Rows held out for evaluation.
    pub holdout_rows: usize,
    /// `accuracy` for classifiers, `r2` for regression.
    pub holdout_metric: String,
    pub holdout_score: f64,
    /// Where the data came from (`iris`, or the CSV file name).
    pub dataset: String,
    pub modelship_version: String,
}

/// Summary statistics of one feature over the training rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureStats {
    pub name: String,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Equal-width bins between `min` and `max`: `edges` has one more entry than `counts`.
    pub histogram_edges: Vec<f64>,
    pub histogram_counts: Vec<u64>,
}

/// The fitted model itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    LogisticRegression(MultiFittedLogisticRegression<f64, usize>),
    DecisionTree(DecisionTree<f64, usize>),
    LinearRegression(FittedLinearRegression<f64>),
    /// A scikit-learn model read from a pickle, joblib or skops file (never written as JSON).
    #[serde(skip)]
    Sklearn(Box<crate::sklearn::SklearnModel>),
    /// An ONNX graph run with tract (never written as JSON).
    #[serde(skip)]
    Onnx(Box<crate::onnx::OnnxModel>),
}

impl Estimator {
    /// Stable algorithm name, used in metadata and metrics.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::LogisticRegression(_) => "logistic_regression",
            Self::DecisionTree(_) => "decision_tree",
            Self::LinearRegression(_) => "linear_regression",
            Self::Sklearn(_) => "sklearn",
            Self::Onnx(_) => "onnx",
        }
    }

    pub fn is_classifier(&self) -> bool {
        match self {
            Self::Sklearn(m) => m.is_classifier(),
            Self::Onnx(m) => m.label_output().is_some(),
            other => !matches!(other, Self::LinearRegression(_)),
        }
    }

    /// Whether the model gives class probabilities.
    pub fn has_proba(&self) -> bool {
        match self {
            Self::Sklearn(m) => m.has_proba(),
            Self::Onnx(m) => m.proba_output().is_some(),
            other => matches!(other, Self::LogisticRegression(_)),
        }
    }
}

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a Modelship artifact: {0}")]
    NotAnArtifact(String),
    #[error(
        "artifact format version {found} is newer than this server supports ({supported}); upgrade modelship-server"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("artifact format version {0} is not supported")]
    Unsupported(u32),
    #[error("corrupt artifact: {0}")]
    Corrupt(String),
    #[error("inconsistent artifact: {0}")]
    Inconsistent(String),
}

/// Checks every node linfa's `predict` visits: a split has both children and a named feature, a
/// leaf predicts a named class. Iterative (`iter_nodes` is breadth-first), so depth costs no stack.
fn check_tree(t: &DecisionTree<f64, usize>, n_features: usize, n_classes: usize) -> Result<(), ArtifactError> {
    let bad = |m: String| Err(ArtifactError::Inconsistent(m));
    for node in t.iter_nodes() {
        if let Some(class) = node.prediction() {
            if class >= n_classes {
                return bad(format!(
                    "a tree leaf predicts class id {class}, which has no class name ({n_classes} names)"
                ));
            }
            continue;
        }
        let (feature, split, _) = node.split();
        if feature >= n_features {
            return bad(format!("the tree splits on feature {feature}; the metadata names {n_features}"));
        }
        if split.is_nan() {
            return bad("a tree split value is NaN".into());
        }
        if node.children().iter().any(|c| c.is_none()) {
            return bad(format!("a tree node at depth {} is not a leaf but lacks a child", node.depth()));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    format_version: Option<u32>,
}

impl Artifact {
    /// Reads an artifact, checking the format marker and version before the model body.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ArtifactError> {
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| ArtifactError::NotAnArtifact(format!("not JSON ({e})")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(ArtifactError::NotAnArtifact(format!("missing \"format\": \"{FORMAT}\"")));
        }
        match header.format_version {
            Some(FORMAT_VERSION) => {}
            Some(v) if v > FORMAT_VERSION => {
                return Err(ArtifactError::TooNew { found: v, supported: FORMAT_VERSION });
            }
            Some(v) => return Err(ArtifactError::Unsupported(v)),
            None => {
                return Err(ArtifactError::NotAnArtifact("missing format_version".into()));
            }
        }
        let artifact: Self = serde_json::from_slice(bytes).map_err(|e| ArtifactError::Corrupt(e.to_string()))?;
        artifact.check()?;
        Ok(artifact)
    }

    /// Serialises the artifact as JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Number of input features the model expects.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Proves every index and dimension prediction uses, so a loaded artifact can never panic at
    /// predict (release builds abort on panic, which would take the whole pod down).
    fn check(&self) -> Result<(), ArtifactError> {
        let n = self.n_features();
        let bad = |m: String| Err(ArtifactError::Inconsistent(m));
        if n == 0 {
            return bad("no features".into());
        }
        let classes = self.class_names.len();
        match &self.estimator {
            Estimator::LogisticRegression(m) => {
                if m.classes().is_empty() {
                    return bad("the logistic model has no classes".into());
                }
                if m.params().nrows() != n {
                    return bad(format!("model has {} inputs, metadata names {n}", m.params().nrows()));
                }
                if m.params().ncols() != m.classes().len() || m.intercept().len() != m.classes().len() {
                    return bad("parameter and class counts differ".into());
                }
                if let Some(c) = m.classes().iter().find(|&&c| c >= classes) {
                    return bad(format!("class id {c} has no class name ({classes} names)"));
                }
                if m.params().iter().chain(m.intercept()).any(|v| !v.is_finite()) {
                    return bad("the logistic model has a non-finite coefficient".into());
                }
            }
            Estimator::DecisionTree(t) => check_tree(t, n, classes)?,
            Estimator::LinearRegression(m) => {
                if m.params().len() != n {
                    return bad(format!("model has {} inputs, metadata names {n}", m.params().len()));
                }
                if !m.intercept().is_finite() || m.params().iter().any(|v| !v.is_finite()) {
                    return bad("the linear model has a non-finite coefficient".into());
                }
            }
            Estimator::Sklearn(m) => {
                if m.n_features() != n || m.classes().len() != self.class_names.len() {
                    return bad("the scikit-learn model does not match its metadata".into());
                }
            }
            Estimator::Onnx(_) => return bad("an ONNX model is never read from a JSON artifact".into()),
        }
        if !self.feature_stats.is_empty() && self.feature_stats.len() != n {
            return bad("feature statistics do not match the features".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::train::{Algorithm, iris, train};

    fn artifact_json(algorithm: Algorithm) -> Value {
        serde_json::from_slice(&train(&iris(), algorithm, 42).expect("iris trains").to_vec()).expect("JSON")
    }

    /// Loads `v`, expecting an `Inconsistent` error containing `want`.
    fn refused(v: &Value, want: &str) {
        match Artifact::from_slice(v.to_string().as_bytes()) {
            Err(ArtifactError::Inconsistent(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("expected an inconsistent artifact ({want}), got {other:?}"),
        }
    }

    #[test]
    fn trees_that_would_panic_at_predict_are_refused() {
        let v = artifact_json(Algorithm::Tree);
        assert!(Artifact::from_slice(v.to_string().as_bytes()).is_ok());
        let root = "/estimator/decision_tree/root_node";
        let mut no_child = v.clone();
        *no_child.pointer_mut(&format!("{root}/right_child")).expect("a split root") = Value::Null;
        refused(&no_child, "not a leaf but lacks a child");
        let mut bad_feature = v.clone();
        *bad_feature.pointer_mut(&format!("{root}/right_child/feature_idx")).expect("an inner split") = json!(4);
        refused(&bad_feature, "splits on feature 4");
        let mut bad_class = v.clone();
        *bad_class.pointer_mut(&format!("{root}/left_child/prediction")).expect("a leaf") = json!(3);
        refused(&bad_class, "class id 3, which has no class name");
    }

    #[test]
    fn logistic_and_linear_shapes_are_proved() {
        let v = artifact_json(Algorithm::Logistic);
        let mut no_classes = v.clone();
        let m = no_classes.pointer_mut("/estimator/logistic_regression").expect("logistic");
        *m = json!({"intercept": {"v": 1, "dim": [0], "data": []}, "params": {"v": 1, "dim": [4, 0], "data": []}, "classes": []});
        refused(&no_classes, "no classes");
        let mut short = v.clone();
        *short.pointer_mut("/estimator/logistic_regression/intercept").expect("intercept") =
            json!({"v": 1, "dim": [2], "data": [0.0, 1.0]});
        refused(&short, "parameter and class counts differ");
        let mut unnamed = v.clone();
        *unnamed.pointer_mut("/class_names").expect("names") = json!(["a", "b"]);
        refused(&unnamed, "class id 2 has no class name");
        let mut features = v;
        features["feature_names"] = json!(["a", "b", "c"]);
        features["feature_stats"] = json!([]);
        refused(&features, "model has 4 inputs, metadata names 3");
    }
}
