//! In-process latency of an ONNX model under tract: `cargo run --release -p modelship-server
//! --example onnx_latency -- MODEL.onnx ROWS.json [REPEATS]`, where ROWS.json is a JSON list of
//! rows. Prints the median single-row and per-row (whole batch) times as JSON; `bench/onnx_latency.py`
//! runs it beside onnxruntime on the same model and rows.

use std::time::Instant;

use modelship_server::onnx::OnnxModel;
use tract_onnx::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, rows, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: onnx_latency MODEL.onnx ROWS.json [REPEATS]");
    };
    let repeats: usize = rest.first().map_or(Ok(5), |r| r.parse())?;
    let model = OnnxModel::from_bytes(&std::fs::read(model)?)?;
    let rows: Vec<Vec<f64>> = serde_json::from_slice(&std::fs::read(rows)?)?;
    let width = rows.first().map_or(0, Vec::len);
    let spec = &model.inputs[0];
    let tensor = |r: &[Vec<f64>]| -> anyhow::Result<TValue> {
        let flat: Vec<f64> = r.iter().flatten().copied().collect();
        Ok(spec.tensor(&[r.len(), width], &flat).map_err(anyhow::Error::msg)?.into_tvalue())
    };
    let singles: Vec<TValue> = rows.chunks(1).map(tensor).collect::<anyhow::Result<_>>()?;
    let (mut single, mut batch) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        for t in &singles {
            model.run(tvec![t.clone()]).map_err(anyhow::Error::msg)?;
        }
        single.push(start.elapsed().as_secs_f64() / rows.len() as f64);
        let all = tensor(&rows)?;
        let start = Instant::now();
        model.run(tvec![all]).map_err(anyhow::Error::msg)?;
        batch.push(start.elapsed().as_secs_f64() / rows.len() as f64);
    }
    let out = serde_json::json!({"single_row_us": median(single) * 1e6, "batch_per_row_us": median(batch) * 1e6});
    println!("{out}");
    Ok(())
}
