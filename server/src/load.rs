//! Fetching a model artifact from a path, `file://` or `http(s)://`, checked against a SHA-256.
//!
//! Every read is capped (a size over the cap is refused before the bytes are read where the
//! size is known, and as soon as the cap is passed otherwise). `http://` needs a `sha256`
//! because nothing else authenticates it; for `https://` it stays optional. A redirect may
//! never go from https to http.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::artifact::{Artifact, ArtifactError};
use crate::sklearn::format::DeclaredFormat;

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
    #[error("model {from} is larger than --max-model-bytes ({limit} bytes)")]
    TooLarge { from: String, limit: u64 },
    #[error("model {0} is fetched over plain http: give --sha256 so its bytes are verified (or use https)")]
    UnverifiedHttp(String),
    #[error(transparent)]
    ModelFile(#[from] crate::sklearn::format::ModelFileError),
    #[error(transparent)]
    Mlflow(#[from] crate::mlflow::MlflowLoadError),
}

/// Credentials sent with a download (MLflow's basic auth or bearer token).
#[derive(Clone)]
pub enum HttpAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

/// Default of `--max-model-bytes`.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;

/// Whether `source` starts with `scheme` (`http://`), ignoring case as URLs do.
fn has_scheme(source: &str, scheme: &str) -> bool {
    source.get(..scheme.len()).is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

/// Reads at most `max_bytes` of artifact from `source`.
pub async fn fetch(source: &str, max_bytes: u64) -> Result<Vec<u8>, LoadError> {
    if has_scheme(source, "http://") || has_scheme(source, "https://") {
        return download(source, max_bytes, None).await;
    }
    let path = source.strip_prefix("file://").unwrap_or(source);
    read_file(path, max_bytes).await
}

async fn read_file(path: &str, max_bytes: u64) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read { path: path.to_string(), source };
    let too_large = || LoadError::TooLarge { from: path.to_string(), limit: max_bytes };
    let file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let len = file.metadata().await.map_err(read_err)?.len();
    if len > max_bytes {
        return Err(too_large());
    }
    // `take` as well: the file may grow, or be a pipe or device whose length says nothing.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).await.map_err(read_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Whether a redirect from the chain `previous` to `next` may be followed: never https to http.
pub fn redirect_allowed(previous: &[reqwest::Url], next: &reqwest::Url) -> Result<(), String> {
    if previous.len() >= 10 {
        return Err("more than 10 redirects".into());
    }
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(format!("refused a redirect from https to {next}"));
    }
    Ok(())
}

/// Downloads at most `max_bytes` from `url`, with `auth` if given.
pub async fn download(url: &str, max_bytes: u64, auth: Option<&HttpAuth>) -> Result<Vec<u8>, LoadError> {
    let err = |reason: String| LoadError::Download { url: url.to_string(), reason };
    let too_large = || LoadError::TooLarge { from: url.to_string(), limit: max_bytes };
    let policy =
        reqwest::redirect::Policy::custom(|attempt| match redirect_allowed(attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(reason),
        });
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .redirect(policy)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let request = match auth {
        Some(HttpAuth::Basic { username, password }) => client.get(url).basic_auth(username, Some(password)),
        Some(HttpAuth::Bearer(token)) => client.get(url).bearer_auth(token),
        None => client.get(url),
    };
    let mut resp = request.send().await.map_err(|e| err(format!("{e:#}")))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP status {}", resp.status())));
    }
    if resp.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large());
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

/// Fetches (at most `max_bytes`), verifies and parses an artifact of any format.
pub async fn load(source: &str, sha256: Option<&str>, max_bytes: u64) -> Result<Artifact, LoadError> {
    load_declared(source, sha256, max_bytes, None).await
}

/// Like [`load`], refusing a file that is not of the `declared` format. `max_bytes` bounds the
/// file as fetched and, for a compressed joblib file, as expanded.
pub async fn load_declared(
    source: &str,
    sha256: Option<&str>,
    max_bytes: u64,
    declared: Option<DeclaredFormat>,
) -> Result<Artifact, LoadError> {
    if sha256.is_none() && has_scheme(source, "http://") {
        return Err(LoadError::UnverifiedHttp(source.to_string()));
    }
    let bytes = fetch(source, max_bytes).await?;
    verify(&bytes, sha256)?;
    let limits = crate::sklearn::Limits::for_model_bytes(usize::try_from(max_bytes).unwrap_or(usize::MAX));
    Ok(crate::sklearn::format::read_declared(&bytes, declared, &limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("valid URL")
    }

    #[test]
    fn redirects_never_downgrade_https() {
        assert!(redirect_allowed(&[url("https://a/m")], &url("https://b/m")).is_ok());
        assert!(redirect_allowed(&[url("http://a/m")], &url("http://b/m")).is_ok());
        assert!(redirect_allowed(&[url("http://a/m")], &url("https://b/m")).is_ok());
        let e = redirect_allowed(&[url("https://a/m")], &url("http://b/m")).expect_err("downgrade");
        assert!(e.contains("from https to http://b/m"), "{e}");
        let e = redirect_allowed(&[url("https://a/m"), url("https://b/m")], &url("HTTP://c/m")).expect_err("downgrade");
        assert!(e.contains("from https"), "{e}");
        assert!(redirect_allowed(&vec![url("https://a/m"); 10], &url("https://a/m")).is_err());
    }

    #[tokio::test]
    async fn plain_http_needs_a_sha256_and_is_refused_before_connecting() {
        // Port 9 (discard) on loopback: nothing is fetched, the refusal comes first.
        let e = load("HTTP://127.0.0.1:9/m.json", None, 1024).await.expect_err("refused");
        assert!(matches!(e, LoadError::UnverifiedHttp(_)), "{e}");
        assert!(e.to_string().contains("give --sha256"), "{e}");
    }

    #[tokio::test]
    async fn the_model_byte_cap_also_bounds_decompression() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("modelship-load-zcap-{}", std::process::id()));
        // 2,000 zeros compress to a few bytes: the file is far under the cap, its contents are not.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
        z.write_all(&[0; 2000]).expect("compress");
        std::fs::write(&path, z.finish().expect("compress")).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let e = load_declared(p, None, 1024, None).await.expect_err("expands past the cap");
        assert!(e.to_string().contains("larger than the limit of 1024 bytes"), "{e}");
        std::fs::remove_file(&path).ok();
    }

    #[tokio::test]
    async fn files_over_the_cap_are_refused_before_reading() {
        let path = std::env::temp_dir().join(format!("modelship-load-cap-{}", std::process::id()));
        std::fs::write(&path, vec![b'x'; 2048]).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let e = fetch(p, 1024).await.expect_err("too large");
        assert!(e.to_string().contains("larger than --max-model-bytes (1024 bytes)"), "{e}");
        assert_eq!(fetch(p, 2048).await.expect("at the cap").len(), 2048);
        std::fs::remove_file(&path).ok();
    }
}
