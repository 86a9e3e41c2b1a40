//! The artifact loader, both formats (linfa JSON and scikit-learn pickle/joblib, told apart by
//! their first bytes as `serve` does): any bytes load or fail with an error, and a model that
//! loads must check and predict a few rows of its width without panicking (a panic aborts the
//! release server). `server/fuzz/run` adds scikit-learn seeds made with the parity tests' venv.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::Model;
use modelship_server::sklearn::format::read_artifact;

/// Row values that stress prediction: ordinary, zero, negative zero, tiny and huge.
const VALUES: &[f64] = &[5.1, 3.5, 1.4, 0.2, 0.0, -0.0, -7.25, f64::MIN_POSITIVE, 1e300, -1e300];

fuzz_target!(|bytes: &[u8]| {
    let Ok(artifact) = read_artifact(bytes) else { return };
    let n = artifact.n_features();
    let model = Model::new(artifact, None, None);
    let rows = ndarray::Array2::from_shape_fn((4, n), |(i, j)| VALUES[(i * 3 + j) % VALUES.len()]);
    let view = rows.view();
    if model.check(view, 10).is_ok() {
        let predictions = model.predict(view);
        assert!(predictions.as_ref().map_or(true, |p| p.len() == 4), "predictions for 4 rows: {predictions:?}");
        let _ = model.predict_proba(view);
    }
});
