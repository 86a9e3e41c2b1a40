//! Which kind of model file this is, from its first bytes: a Modelship (linfa) JSON artifact
//! (`{`), or a scikit-learn pickle (PROTO opcode 0x80) / joblib file (zlib, gzip, xz, lzma magic).

use crate::artifact::{Artifact, ArtifactError, Estimator, FORMAT, FORMAT_VERSION, TrainingInfo};

use super::{Encoding, Limits, SklearnError, SklearnModel};

/// The model file kinds the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A JSON artifact written by `modelship-server train`.
    Linfa,
    /// A scikit-learn model in a pickle or joblib file.
    Sklearn(Encoding),
}

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Sklearn(#[from] SklearnError),
    #[error(
        "unrecognised model file: expected a Modelship JSON artifact or a scikit-learn pickle / joblib file (first bytes {0})"
    )]
    Unknown(String),
}

/// Detects the format from the file's signature.
pub fn detect(bytes: &[u8]) -> Result<ModelFormat, ModelFileError> {
    if let Some(e) = Encoding::detect(bytes) {
        return Ok(ModelFormat::Sklearn(e));
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(ModelFormat::Linfa),
        // Old pickles: let the reader say why they are refused.
        Some(b'c' | b'(' | b']' | b'}') => Ok(ModelFormat::Sklearn(Encoding::Pickle)),
        _ => Err(ModelFileError::Unknown(hex::encode(bytes.get(..8).unwrap_or(bytes)))),
    }
}

/// Reads a model file of either format into an [`Artifact`] the server can serve.
pub fn read_artifact(bytes: &[u8]) -> Result<Artifact, ModelFileError> {
    match detect(bytes)? {
        ModelFormat::Linfa => Ok(Artifact::from_slice(bytes)?),
        ModelFormat::Sklearn(_) => Ok(to_artifact(SklearnModel::from_bytes(bytes, &Limits::default())?)),
    }
}

/// Wraps a scikit-learn model in an [`Artifact`] (it has no training metadata or statistics).
pub fn to_artifact(model: SklearnModel) -> Artifact {
    Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: model.class().to_ascii_lowercase(),
        feature_names: model.feature_names(),
        class_names: model.classes().iter().map(ToString::to_string).collect(),
        training: TrainingInfo {
            trained_at: String::new(),
            train_rows: 0,
            holdout_rows: 0,
            holdout_metric: String::new(),
            holdout_score: f64::NAN,
            dataset: String::new(),
            modelship_version: String::new(),
        },
        feature_stats: Vec::new(),
        estimator: Estimator::Sklearn(Box::new(model)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_signature() {
        assert_eq!(detect(b"  {\"format\"").unwrap(), ModelFormat::Linfa);
        assert_eq!(detect(&[0x80, 5]).unwrap(), ModelFormat::Sklearn(Encoding::Pickle));
        assert_eq!(detect(&[0x1f, 0x8b]).unwrap(), ModelFormat::Sklearn(Encoding::Gzip));
        let err = detect(b"PK\x03\x04zip").unwrap_err().to_string();
        assert!(err.contains("unrecognised model file") && err.contains("504b0304"), "{err}");
    }
}
