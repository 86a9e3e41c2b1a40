//! Hostile and broken model files (written by real pickle / joblib / skops and zipfile in
//! `tests/sklearn/hostile.py`):
//! code-running payloads are refused by name and never run, broken files give a one-line error,
//! and no input makes the reader panic.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "sklearn/common.rs"]
mod common;

use modelship_server::sklearn::{Limits, SklearnError, SklearnModel};
use proptest::prelude::*;

/// Files written once per test process, with the marker file every payload would create.
struct Files {
    dir: PathBuf,
    marker: PathBuf,
}

fn files() -> &'static Files {
    static FILES: std::sync::OnceLock<Files> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let (_, python) = common::venvs().into_iter().next().expect("a venv");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Earlier runs' files go; this run writes its own.
        for old in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with("sklearn-hostile-") {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let dir = tmp.join(format!("sklearn-hostile-{}", std::process::id()));
        let marker = dir.join("pwned");
        let out = Command::new(python)
            .arg(common::here().join("hostile.py"))
            .arg(&dir)
            .arg(&marker)
            .output()
            .expect("run hostile.py");
        assert!(out.status.success(), "hostile.py failed: {}", String::from_utf8_lossy(&out.stderr));
        Files { dir, marker }
    })
}

/// Valid files in every encoding, to truncate and mutate.
const GOOD: [&str; 9] = [
    "tree.skops",
    "tree-deflate.skops",
    "tree.pkl",
    "tree_p2.pkl",
    "tree.joblib",
    "tree-zlib.joblib",
    "tree-gzip.joblib",
    "tree-xz.joblib",
    "tree-lzma.joblib",
];

fn read(name: &str) -> Vec<u8> {
    std::fs::read(files().dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn load(bytes: &[u8]) -> Result<SklearnModel, SklearnError> {
    SklearnModel::from_bytes(bytes, &Limits::default())
}

/// Loads a file that must be refused; returns the error message, checked to be one line.
fn refused(name: &str) -> String {
    let err = load(&read(name)).err().unwrap_or_else(|| panic!("{name} was accepted")).to_string();
    assert!(!err.contains('\n'), "{name}: error is not one line: {err}");
    err
}

#[test]
fn the_payloads_are_live_when_python_loads_them() {
    // The control shows the marker mechanism works: Python's pickle runs the payload.
    let (_, python) = common::venvs().into_iter().next().expect("a venv");
    let control = files().dir.join("control.pkl");
    let status = Command::new(python)
        .args(["-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"])
        .arg(&control)
        .status()
        .expect("run python");
    assert!(status.success());
    assert!(files().marker.with_extension("control").exists(), "the control payload did not run under Python");
    // skops runs a LossNode's class once the user trusts it, as `skops.io.get_untrusted_types` asks.
    let (_, python) = common::venvs().into_iter().next().expect("a venv");
    let status = Command::new(python)
        .args(["-c", "import skops.io, sys; skops.io.load(sys.argv[1], trusted=['posix.system'])"])
        .arg(files().dir.join("skops_control.skops"))
        .status()
        .expect("run python");
    assert!(status.success());
    assert!(files().marker.with_extension("skops-control").exists(), "the skops control payload did not run");
}

#[test]
fn skops_files_naming_code_are_refused_by_name_and_never_run() {
    for (file, what) in [
        // skops itself writes os.system and eval (builtin functions) as TypeNodes.
        ("skops_function.skops", "type posix.system"),
        ("skops_nested_eval.skops", "type builtins.eval"),
        ("skops_function_node.skops", "function posix.system"),
        ("skops_eval_class.skops", "class builtins.eval"),
        ("skops_popen_class.skops", "class subprocess.Popen"),
        ("skops_loss_system.skops", "class posix.system"),
    ] {
        let err = refused(file);
        let want = format!("refusing {what}: not a supported scikit-learn class; supported: LogisticRegression");
        assert!(err.starts_with(&want), "{file}: {err}");
    }
    assert!(!files().marker.exists(), "a payload ran: {} exists", files().marker.display());
}

#[test]
fn broken_skops_files_give_one_line_errors() {
    for (file, want) in [
        ("skops_bomb.skops", "expands to 1291845632 bytes, more than the limit of 1073807360 bytes"),
        (
            "skops_big_schema.skops",
            "skops entry schema.json expands to 68157440 bytes, more than the limit of 67108864",
        ),
        ("skops_lying_size.skops", "corrupt skops entry schema.json: holds 101 bytes, its header declares 100"),
        ("skops_huge_shape.skops", "array of 64000000000000 bytes exceeds the limit of 1073741824 bytes"),
        ("skops_short_array.skops", "array of shape [1000] needs 8000 bytes, the file has 8"),
        ("skops_path_dotdot.skops", "refusing skops entry \"../../tmp/evil.npy\": not a plain file name"),
        ("skops_path_absolute.skops", "refusing skops entry \"/etc/evil.npy\": not a plain file name"),
        ("skops_path_subdir.skops", "refusing skops entry \"a/b.npy\": not a plain file name"),
        ("skops_missing_entry.skops", "the skops file has no entry nothere.npy"),
    ] {
        let err = refused(file);
        assert!(err.contains(want), "{file}: {err:?} does not contain {want:?}");
    }
    // The cap on all entries together: a stored file expands to about its own size.
    let tree = read("tree.skops");
    let capped = |max_file_bytes| SklearnModel::from_bytes(&tree, &Limits { max_file_bytes, ..Limits::default() });
    for cap in [tree.len() / 2, tree.len() * 9 / 10] {
        let err = capped(cap).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("more than the limit of"), "cap {cap}: {err:?}");
    }
    assert!(capped(tree.len() * 2).is_ok());
}

#[test]
fn code_running_globals_are_refused_by_name_and_never_run() {
    for (file, global) in [
        ("os_system_p2.pkl", "posix.system"),
        ("os_system_p5.pkl", "posix.system"),
        ("eval.pkl", "builtins.eval"),
        ("popen.pkl", "subprocess.Popen"),
        ("nested_global.pkl", "posix.system"),
        ("estimator_with_payload.pkl", "posix.system"),
        ("payload.joblib", "posix.system"),
        ("payload-zlib.joblib", "posix.system"),
    ] {
        let err = refused(file);
        assert!(
            err.starts_with(&format!("refusing global {global}: not a supported scikit-learn class; supported: ")),
            "{file}: {err}"
        );
        assert!(err.contains("LogisticRegression") && err.contains("Pipeline"), "{file}: {err}");
    }
    assert!(!files().marker.exists(), "a payload ran: {} exists", files().marker.display());
}

#[test]
fn broken_files_give_one_line_errors() {
    let cases = [
        ("protocol0.pkl", "pickle protocols 0 and 1 are not supported"),
        ("protocol1.pkl", "pickle protocols 0 and 1 are not supported"),
        ("tree_child_out_of_range.pkl", "invalid Tree: node 0 has child indices 9999"),
        ("tree_child_cycle.pkl", "invalid Tree: node 1 has child indices"),
        ("tree_feature_out_of_range.pkl", "invalid Tree: node 0 splits on feature 77, the model has 4 features"),
        ("huge_shape.joblib", "exceeds the limit"),
        ("shared_trees.pkl", "reads far more values than its file holds"),
        ("wide_shared_trees.pkl", "reads far more values than its file holds"),
        (
            "svc.pkl",
            "refusing global sklearn.svm._classes.SVC: not a supported scikit-learn class; supported: LogisticRegression",
        ),
        ("bare_tree.pkl", "unsupported estimator Tree; supported: LogisticRegression"),
        ("scaler_only.joblib", "invalid StandardScaler: it transforms but does not predict"),
    ];
    for (file, want) in cases {
        let err = refused(file);
        assert!(err.contains(want), "{file}: {err:?} does not contain {want:?}");
    }
    let mut p6 = read("tree.pkl");
    p6[1] = 6;
    assert_eq!(load(&p6).unwrap_err().to_string(), "pickle protocol 6 is not supported (protocols 2 to 5 are)");
    assert!(load(b"{\"format\": 1}").unwrap_err().to_string().contains("unrecognised signature"));
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    for name in GOOD {
        let bytes = read(name);
        assert!(load(&bytes).is_ok(), "{name} should load");
        for len in 0..bytes.len() {
            match load(&bytes[..len]) {
                Ok(_) => panic!("{name} truncated to {len} bytes was accepted"),
                Err(e) => assert!(!e.to_string().contains('\n')),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), proto in 2u8..=5) {
        bytes.splice(0..0, [0x80, proto]);
        let _ = load(&bytes);
    }

    #[test]
    fn random_zip_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        bytes.splice(0..0, *b"PK\x03\x04");
        let _ = load(&bytes);
    }

    #[test]
    fn mutated_real_files_never_panic(
        file in prop::sample::select(GOOD.to_vec()),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = read(file);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = load(&bytes);
    }
}

/// `inspect` and `serve` of payload and broken files exit non-zero with the reason on one line,
/// running nothing.
#[test]
fn the_binary_refuses_payloads_and_broken_files_in_one_line() {
    let mut truncated = read("tree.pkl");
    truncated.truncate(truncated.len() / 2);
    let truncated_path = files().dir.join("truncated-tree.pkl");
    std::fs::write(&truncated_path, truncated).expect("write the truncated file");
    let cases = [
        ("os_system_p5.pkl", "refusing global posix.system"),
        ("payload-zlib.joblib", "refusing global posix.system"),
        ("tree_child_out_of_range.pkl", "invalid Tree"),
        ("skops_function_node.skops", "refusing function posix.system"),
        ("protocol0.pkl", "pickle protocols 0 and 1 are not supported"),
        ("huge_shape.joblib", "exceeds the limit"),
        ("truncated-tree.pkl", "truncated"),
    ];
    for (file, want) in cases {
        let path = files().dir.join(file);
        let inspect = Command::new(env!("CARGO_BIN_EXE_modelship-server")).arg("inspect").arg(&path).output();
        let serve = Command::new(env!("CARGO_BIN_EXE_modelship-server"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
            .arg(&path)
            .output();
        for out in [inspect, serve] {
            let out = out.expect("run modelship-server");
            assert_eq!(out.status.code(), Some(1), "{file} was not refused with exit 1");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            assert!(last.starts_with("modelship-server: "), "{file}: {stderr}");
            assert!(last.contains(want), "{file}: {last:?} does not contain {want:?}");
        }
    }
    assert!(!files().marker.exists(), "a payload ran");
}
