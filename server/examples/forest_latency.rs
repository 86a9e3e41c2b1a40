//! In-process per-row latency of the native scikit-learn reader, for `bench/run`:
//! loads a pickle/joblib file and times single-row `predict` calls.
//!
//! Usage: `forest_latency MODEL.pkl ROWS.f64 CALLS RUNS` where ROWS.f64 is little-endian f64 rows
//! (the model's feature count each). Prints one JSON line: the median over RUNS of the mean
//! nanoseconds per call, and every run's figure. The Python side (bench/forest_latency.py) times
//! scikit-learn and onnxruntime the same way, so the ratios compare like with like.

use std::time::Instant;

use modelship_server::sklearn::Prediction;
use modelship_server::sklearn::{Limits, SklearnModel};
use ndarray::{ArrayView2, Axis};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, rows, calls, runs] = args.as_slice() else {
        return Err("usage: forest_latency MODEL.pkl ROWS.f64 CALLS RUNS".into());
    };
    let model = SklearnModel::from_bytes(&std::fs::read(model)?, &Limits::default())?;
    let calls: usize = calls.parse().map_err(|e| format!("CALLS {calls:?}: {e}"))?;
    let runs: usize = runs.parse().map_err(|e| format!("RUNS {runs:?}: {e}"))?;
    if calls == 0 || runs == 0 {
        return Err("CALLS and RUNS must be at least 1".into());
    }
    let bytes = std::fs::read(rows)?;
    let values: Vec<f64> = bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect();
    let n = model.n_features();
    if values.is_empty() || !values.len().is_multiple_of(n) {
        return Err(format!("{} values in the rows file: not a whole number of {n}-feature rows", values.len()).into());
    }
    let x = ArrayView2::from_shape((values.len() / n, n), &values)?;
    let mut per_call = Vec::with_capacity(runs);
    let mut checksum = 0usize;
    for _ in 0..runs {
        let t0 = Instant::now();
        for i in 0..calls {
            let r = i % x.nrows();
            // One row per call, as a single-row /predict does; the checksum keeps the call alive.
            if let Prediction::Classes(c) = model.predict(x.row(r).insert_axis(Axis(0)))? {
                checksum = checksum.wrapping_add(c.first().copied().unwrap_or(0));
            }
        }
        per_call.push(t0.elapsed().as_nanos() as f64 / calls as f64);
    }
    let mut sorted = per_call.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!("{}", serde_json::json!({"ns_per_row": median, "runs_ns": per_call, "checksum": checksum}));
    Ok(())
}
