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
    /// A scikit-learn model read from a pickle or joblib file (never written as JSON).
    #[serde(skip)]
    Sklearn(Box<crate::sklearn::SklearnModel>),
}

impl Estimator {
    /// Stable algorithm name, used in metadata and metrics.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::LogisticRegression(_) => "logistic_regression",
            Self::DecisionTree(_) => "decision_tree",
            Self::LinearRegression(_) => "linear_regression",
            Self::Sklearn(_) => "sklearn",
        }
    }

    pub fn is_classifier(&self) -> bool {
        match self {
            Self::Sklearn(m) => m.is_classifier(),
            other => !matches!(other, Self::LinearRegression(_)),
        }
    }

    /// Whether the model gives class probabilities.
    pub fn has_proba(&self) -> bool {
        match self {
            Self::Sklearn(m) => m.has_proba(),
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

    /// Checks that the model's shape agrees with the metadata, so prediction can never panic.
    fn check(&self) -> Result<(), ArtifactError> {
        let n = self.n_features();
        let bad = |m: String| Err(ArtifactError::Inconsistent(m));
        if n == 0 {
            return bad("no features".into());
        }
        match &self.estimator {
            Estimator::LogisticRegression(m) => {
                if m.params().nrows() != n {
                    return bad(format!("model has {} inputs, metadata names {n}", m.params().nrows()));
                }
                if m.params().ncols() != m.classes().len() || m.intercept().len() != m.classes().len() {
                    return bad("parameter and class counts differ".into());
                }
                if m.classes().iter().any(|&c| c >= self.class_names.len()) {
                    return bad("a class id has no class name".into());
                }
            }
            Estimator::DecisionTree(t) => {
                if t.features().iter().any(|&f| f >= n) {
                    return bad("the tree splits on a feature the metadata does not name".into());
                }
            }
            Estimator::LinearRegression(m) => {
                if m.params().len() != n {
                    return bad(format!("model has {} inputs, metadata names {n}", m.params().len()));
                }
            }
            Estimator::Sklearn(m) => {
                if m.n_features() != n || m.classes().len() != self.class_names.len() {
                    return bad("the scikit-learn model does not match its metadata".into());
                }
            }
        }
        if !self.feature_stats.is_empty() && self.feature_stats.len() != n {
            return bad("feature statistics do not match the features".into());
        }
        Ok(())
    }
}
