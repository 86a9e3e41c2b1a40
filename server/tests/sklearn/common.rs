//! Shared by the scikit-learn tests: where the scripts are and which venvs exist.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `server/tests/sklearn`, where the generator scripts live.
pub fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn")
}

/// The venvs, as (scikit-learn version, python), newest first; fails saying how to create them.
pub fn venvs() -> Vec<(String, PathBuf)> {
    let out = Command::new(here().join("venv")).arg("--check").output().expect("run tests/sklearn/venv");
    assert!(
        out.status.success(),
        "scikit-learn venvs missing: {}(run server/tests/sklearn/venv once; it caches them under ~/.cache/modelship)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(v, p)| (v.to_string(), PathBuf::from(p))))
        .collect()
}
