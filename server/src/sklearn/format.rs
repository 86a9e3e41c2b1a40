//! Which kind of model file this is, from its first bytes: a Modelship (linfa) JSON artifact
//! (`{`), or a scikit-learn pickle (PROTO opcode 0x80) / joblib file (zlib, gzip, xz, lzma magic) /
//! skops zip (`PK\x03\x04`).

use crate::artifact::{Artifact, ArtifactError, Estimator, FORMAT, FORMAT_VERSION, TrainingInfo};

use super::{Encoding, Limits, SklearnError, SklearnModel};

/// The model file kinds the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A JSON artifact written by `modelship-server train`.
    Linfa,
    /// A scikit-learn model in a pickle, joblib or skops file.
    Sklearn(Encoding),
    /// An ONNX `ModelProto`.
    Onnx,
}

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Sklearn(#[from] SklearnError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    #[error(
        "unrecognised model file: expected a Modelship JSON artifact, a scikit-learn pickle / joblib / skops file or an ONNX model (first bytes {0})"
    )]
    Unknown(String),
    #[error("model file is {file} but spec.model.format (--model-format) is {declared}")]
    Mismatch { file: &'static str, declared: &'static str },
}

/// The format a model is declared to have (`spec.model.format`, `--model-format`); absent means
/// "whatever the file's signature says".
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeclaredFormat {
    /// A Modelship JSON artifact (`modelship-server train`).
    Linfa,
    /// A scikit-learn pickle, joblib or skops file.
    Sklearn,
    /// An ONNX model.
    Onnx,
}

impl DeclaredFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Linfa => "linfa",
            Self::Sklearn => "sklearn",
            Self::Onnx => "onnx",
        }
    }
}

impl ModelFormat {
    /// What the file is, as a mismatch error names it.
    fn described(self) -> &'static str {
        match self {
            Self::Linfa => "a Modelship (linfa) JSON artifact",
            Self::Sklearn(Encoding::Pickle) => "a scikit-learn pickle",
            Self::Sklearn(Encoding::Skops) => "a scikit-learn skops file",
            Self::Sklearn(_) => "a compressed scikit-learn joblib file",
            Self::Onnx => "an ONNX model",
        }
    }

    fn declared(self) -> DeclaredFormat {
        match self {
            Self::Linfa => DeclaredFormat::Linfa,
            Self::Sklearn(_) => DeclaredFormat::Sklearn,
            Self::Onnx => DeclaredFormat::Onnx,
        }
    }
}

/// Detects the format from the file's signature.
pub fn detect(bytes: &[u8]) -> Result<ModelFormat, ModelFileError> {
    if crate::onnx::looks_like_onnx(bytes) {
        return Ok(ModelFormat::Onnx);
    }
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
    read_declared(bytes, None, &Limits::default())
}

/// Reads a model file within `limits`, refusing it when its signature is not the `declared` format.
pub fn read_declared(
    bytes: &[u8],
    declared: Option<DeclaredFormat>,
    limits: &Limits,
) -> Result<Artifact, ModelFileError> {
    let found = match (detect(bytes), declared) {
        (Ok(found), Some(d)) if found.declared() != d => {
            return Err(ModelFileError::Mismatch { file: found.described(), declared: d.name() });
        }
        (found, _) => found?,
    };
    match found {
        ModelFormat::Linfa => Ok(Artifact::from_slice(bytes)?),
        ModelFormat::Sklearn(_) => Ok(to_artifact(SklearnModel::from_bytes(bytes, limits)?)),
        ModelFormat::Onnx => Ok(crate::onnx::OnnxModel::from_bytes(bytes)?.into_artifact()),
    }
}

/// Wraps a scikit-learn model in an [`Artifact`] (it has no training metadata or statistics).
pub fn to_artifact(model: SklearnModel) -> Artifact {
    let name = model.class().to_ascii_lowercase();
    let classes = model.classes().iter().map(ToString::to_string).collect();
    foreign_artifact(name, model.feature_names(), classes, Estimator::Sklearn(Box::new(model)))
}

/// An [`Artifact`] around a model from another framework, which has no training metadata.
pub fn foreign_artifact(
    name: String,
    feature_names: Vec<String>,
    class_names: Vec<String>,
    estimator: Estimator,
) -> Artifact {
    Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name,
        feature_names,
        class_names,
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
        estimator,
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
        assert_eq!(detect(&[0x08, 0x08, 0x12, 0x08]).unwrap(), ModelFormat::Onnx);
        assert_eq!(detect(b"PK\x03\x04zip").unwrap(), ModelFormat::Sklearn(Encoding::Skops));
        let err = detect(b"PK\x05\x06zip").unwrap_err().to_string();
        assert!(err.contains("unrecognised model file") && err.contains("504b0506"), "{err}");
    }

    #[test]
    fn a_declared_format_must_match_the_signature() {
        let err = |bytes: &[u8], d| read_declared(bytes, Some(d), &Limits::default()).unwrap_err().to_string();
        assert_eq!(
            err(&[0x80, 5, b'N', b'.'], DeclaredFormat::Linfa),
            "model file is a scikit-learn pickle but spec.model.format (--model-format) is linfa"
        );
        assert_eq!(
            err(b"{}", DeclaredFormat::Sklearn),
            "model file is a Modelship (linfa) JSON artifact but spec.model.format (--model-format) is sklearn"
        );
        assert!(err(&[0x1f, 0x8b, 0], DeclaredFormat::Onnx).contains("compressed scikit-learn joblib file"));
        assert!(err(&[0x08, 0x08, 0x12, 0x08], DeclaredFormat::Sklearn).contains("is an ONNX model"));
        // A matching declaration reads the file as before.
        let e = err(&[0x80, 5, b'N', b'.'], DeclaredFormat::Sklearn);
        assert!(e.contains("not a scikit-learn model"), "{e}");
    }
}
