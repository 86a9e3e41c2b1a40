//! The skops reader (`.skops` zips: schema.json plus .npy entries): any bytes load or fail with
//! an error, and a model that loads predicts a few rows of its width without panicking.
//! `server/fuzz/run` seeds it with skops files made at run time with the parity tests' venv.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::sklearn::{Limits, SklearnModel};

/// Row values that stress prediction: ordinary, zero, NaN, tiny and huge.
const VALUES: &[f64] = &[5.1, 0.0, -0.0, f64::NAN, -7.25, f64::MIN_POSITIVE, 1e300, -1e300];

fuzz_target!(|bytes: &[u8]| {
    // Small caps keep each run fast; the reader must refuse, not allocate, beyond them.
    let limits = Limits { max_file_bytes: 64 << 20, ..Limits::default() };
    let Ok(model) = SklearnModel::from_bytes(bytes, &limits) else { return };
    let n = model.n_features();
    let rows = ndarray::Array2::from_shape_fn((3, n), |(i, j)| VALUES[(i * 5 + j) % VALUES.len()]);
    if let Ok(p) = model.predict(rows.view()) {
        let len = match p {
            modelship_server::sklearn::Prediction::Classes(c) => c.len(),
            modelship_server::sklearn::Prediction::Values(v) => v.len(),
        };
        assert_eq!(len, 3, "predictions for 3 rows");
    }
    let _ = model.predict_proba(rows.view());
});
