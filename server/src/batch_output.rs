//! The output directory of a sharded batch run: one part per shard, each with a small JSON
//! manifest, and a `_SUCCESS` manifest once every shard is done.
//!
//! A shard writes its part under a temporary name and renames it when complete, then writes its
//! manifest the same way, then looks for every other shard's manifest: the shard that finds them
//! all writes `_SUCCESS` (listing every part with its rows and SHA-256). Two shards finishing at
//! once may both write it, with the same content. A retried shard replaces its part whole, so a
//! retry never leaves duplicate or partial rows. Parts are named with the shard count
//! (`part-00002-of-00016.csv`), so the parts of a run with another count are never counted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::{AtomicOutput, BatchError, BatchReport};
use crate::shard::Shard;

/// The file listing a complete run's parts.
pub const SUCCESS: &str = "_SUCCESS";

/// What one shard wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartManifest {
    pub shard: u32,
    pub shards: u32,
    /// The part's file name in the output directory.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The input this shard read, and the model version that scored it.
    pub input: String,
    pub model_version: String,
}

/// A complete run: every part, in shard order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuccessManifest {
    pub shards: u32,
    pub rows: u64,
    pub model_version: String,
    pub files: Vec<PartManifest>,
}

/// The name of shard `shard`'s part, with the extension of its format.
pub fn part_name(shard: Shard, extension: &str) -> String {
    format!("part-{:05}-of-{:05}.{extension}", shard.index, shard.count)
}

fn manifest_name(shard: Shard) -> String {
    format!("{}.json", part_name(shard, "manifest"))
}

fn write_json_atomically(path: &Path, value: &impl Serialize) -> Result<(), BatchError> {
    let (atomic, mut file) = AtomicOutput::create(path)?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| BatchError::Input(e.to_string()))?;
    file.write_all(&json).map_err(|source| BatchError::Io { path: path.display().to_string(), source })?;
    atomic.commit(file)
}

/// Records that `shard` completed with `report` (its part in `dir`), then writes `_SUCCESS` if
/// every shard of the run has: returns it when this call wrote it.
pub fn complete(
    dir: &Path,
    shard: Shard,
    report: &BatchReport,
    input: &str,
    model_version: &str,
) -> Result<Option<SuccessManifest>, BatchError> {
    let part = PartManifest {
        shard: shard.index,
        shards: shard.count,
        file: report.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        rows: report.rows,
        bytes: report.bytes,
        sha256: report.sha256.clone(),
        input: input.to_string(),
        model_version: model_version.to_string(),
    };
    write_json_atomically(&dir.join(manifest_name(shard)), &part)?;
    finalize(dir, shard.count)
}

/// Writes `_SUCCESS` if all `shards` manifests are in `dir` (and name the same model version).
pub fn finalize(dir: &Path, shards: u32) -> Result<Option<SuccessManifest>, BatchError> {
    let mut files = Vec::with_capacity(shards as usize);
    for index in 0..shards {
        let path: PathBuf = dir.join(manifest_name(Shard { index, count: shards }));
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BatchError::Io { path: path.display().to_string(), source }),
        };
        let part: PartManifest = serde_json::from_slice(&text)
            .map_err(|e| BatchError::Input(format!("{}: not a part manifest: {e}", path.display())))?;
        files.push(part);
    }
    let model_version = files.first().map(|p| p.model_version.clone()).unwrap_or_default();
    if let Some(other) = files.iter().find(|p| p.model_version != model_version) {
        return Err(BatchError::Input(format!(
            "shard {} was scored by model version {:?}, shard 0 by {model_version:?}: not one run",
            other.shard, other.model_version
        )));
    }
    let manifest = SuccessManifest { shards, rows: files.iter().map(|p| p.rows).sum(), model_version, files };
    write_json_atomically(&dir.join(SUCCESS), &manifest)?;
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dir: &Path, shard: Shard, rows: u64) -> BatchReport {
        let output = dir.join(part_name(shard, "csv"));
        std::fs::write(&output, format!("{rows}")).unwrap();
        BatchReport { rows, seconds: 0.0, peak_rss_mib: None, output, bytes: 1, sha256: format!("sha-{}", shard.index) }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("modelship-batch-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn success_is_written_by_the_shard_that_completes_the_set_whatever_the_order() {
        let d = dir("order");
        let shards = 3;
        for (k, index) in [2, 0, 1].into_iter().enumerate() {
            let shard = Shard::new(index, shards).unwrap();
            let done = complete(&d, shard, &report(&d, shard, 10 + u64::from(index)), "in.csv", "v1").unwrap();
            assert_eq!(done.is_some(), k == 2, "after shard {index}");
            assert_eq!(d.join(SUCCESS).exists(), k == 2);
        }
        let success: SuccessManifest = serde_json::from_slice(&std::fs::read(d.join(SUCCESS)).unwrap()).unwrap();
        assert_eq!(success.rows, 33);
        assert_eq!(
            success.files.iter().map(|p| p.file.as_str()).collect::<Vec<_>>(),
            ["part-00000-of-00003.csv", "part-00001-of-00003.csv", "part-00002-of-00003.csv"]
        );
        assert_eq!(success.files[1].sha256, "sha-1");
        // No temporary file is left beside them.
        let names: Vec<String> =
            std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_retried_shard_replaces_its_part_and_the_parts_of_another_shard_count_are_not_counted() {
        let d = dir("retry");
        // An earlier run with 2 shards left one part: it does not complete a run of 3.
        let old = Shard::new(0, 2).unwrap();
        complete(&d, old, &report(&d, old, 99), "in.csv", "v1").unwrap();
        for index in 0..3 {
            let shard = Shard::new(index, 3).unwrap();
            complete(&d, shard, &report(&d, shard, 1), "in.csv", "v1").unwrap();
        }
        // Shard 1 retried: the manifest and _SUCCESS say what it wrote the second time.
        let shard = Shard::new(1, 3).unwrap();
        let success = complete(&d, shard, &report(&d, shard, 5), "in.csv", "v1").unwrap().unwrap();
        assert_eq!((success.rows, success.files.len()), (7, 3));
    }

    #[test]
    fn parts_scored_by_different_model_versions_are_not_one_run() {
        let d = dir("versions");
        let a = Shard::new(0, 2).unwrap();
        let b = Shard::new(1, 2).unwrap();
        complete(&d, a, &report(&d, a, 1), "in.csv", "v1").unwrap();
        let err = complete(&d, b, &report(&d, b, 1), "in.csv", "v2").unwrap_err();
        assert!(err.to_string().contains("shard 1 was scored by model version \"v2\""), "{err}");
        assert!(!d.join(SUCCESS).exists());
    }
}
