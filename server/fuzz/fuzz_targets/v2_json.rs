//! The Open Inference Protocol V2 JSON request parser: any bytes parse or fail with an error, and
//! a parsed request has one tensor of at most two dimensions, known distinct outputs, and data
//! within the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::features::Budget;
use modelship_server::infer_request;

const BUDGET: Budget = Budget { n_features: 4, max_rows: 8 };
const OUTPUTS: &[&str] = &["predict", "predict_proba"];

fuzz_target!(|body: &[u8]| {
    let Ok(req) = infer_request::parse(body, BUDGET, OUTPUTS) else { return };
    assert!(req.input.shape.len() <= 2, "shape {:?}", req.input.shape);
    assert!(req.outputs.len() <= OUTPUTS.len(), "{} outputs", req.outputs.len());
    if let Some(data) = &req.input.data {
        assert!(data.values.len() <= BUDGET.max_values(), "{} values over budget", data.values.len());
    }
    let _ = infer_request::rows_cols(&req.input.shape, BUDGET);
});
