//! Fetching a model artifact from a path, `file://` or `http(s)://`, checked against a SHA-256.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::artifact::{Artifact, ArtifactError};

/// Why a model could not be loaded; the server prints this on one line and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read model file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot download model from {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("model checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("--sha256 must be 64 hex digits, got {0:?}")]
    BadChecksumArg(String),
    #[error("{0}")]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    ModelFile(#[from] crate::sklearn::format::ModelFileError),
}

/// Largest artifact a download may return.
const MAX_DOWNLOAD: usize = 512 * 1024 * 1024;

/// Reads the artifact bytes from `source`.
pub async fn fetch(source: &str) -> Result<Vec<u8>, LoadError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return download(source).await;
    }
    let path = source.strip_prefix("file://").unwrap_or(source);
    tokio::fs::read(path).await.map_err(|source| LoadError::Read { path: path.to_string(), source })
}

async fn download(url: &str) -> Result<Vec<u8>, LoadError> {
    let err = |reason: String| LoadError::Download { url: url.to_string(), reason };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut resp = client.get(url).send().await.map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP status {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        if body.len() + chunk.len() > MAX_DOWNLOAD {
            return Err(err(format!("larger than {MAX_DOWNLOAD} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Verifies `bytes` against an expected digest, if one is given.
pub fn verify(bytes: &[u8], expected: Option<&str>) -> Result<(), LoadError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LoadError::BadChecksumArg(expected));
    }
    let actual = sha256_hex(bytes);
    if actual != expected {
        return Err(LoadError::Checksum { expected, actual });
    }
    Ok(())
}

/// Fetches, verifies and parses an artifact.
pub async fn load(source: &str, sha256: Option<&str>) -> Result<Artifact, LoadError> {
    let bytes = fetch(source).await?;
    verify(&bytes, sha256)?;
    Ok(crate::sklearn::format::read_artifact(&bytes)?)
}
