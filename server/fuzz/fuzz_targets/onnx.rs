//! The ONNX loader: any bytes load or fail with an error (never a panic, which aborts the release
//! server), and a model that loads answers a V2 request for each of its inputs without panicking.
//! `server/fuzz/run` adds skl2onnx seeds made with the ONNX parity test's venv.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::onnx::OnnxModel;

fuzz_target!(|bytes: &[u8]| {
    // tract's own panics are caught by the loader and become errors (as in the release server,
    // which unwinds); libFuzzer's hook would abort on them before the catch. A panic that escapes
    // the loader still aborts: fuzz_target! turns an unwound panic into a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(model) = OnnxModel::from_bytes(bytes) else { return };
    let inputs: Vec<serde_json::Value> = model
        .inputs
        .iter()
        .map(|i| {
            let shape: Vec<i64> = i.shape.iter().map(|&d| if d < 0 { 2 } else { d.min(8) }).collect();
            let n: i64 = shape.iter().product();
            let data: Vec<f64> = (0..n).map(|k| (k % 7) as f64 - 3.0).collect();
            serde_json::json!({"name": i.name, "shape": shape, "datatype": i.datatype.v2_name(), "data": data})
        })
        .collect();
    let body = serde_json::json!({ "inputs": inputs }).to_string();
    let _ = modelship_server::onnx::v2::infer(&model, body.as_bytes(), &[], 16);
});
