//! The V2 binary tensor data path: the first two bytes (little-endian) are the length of the JSON
//! part (the `Inference-Header-Content-Length` header), the rest of the body is binary tensor
//! data. The JSON part is parsed, then its tensor is decoded from the binary part; the raw
//! decoder also gets the binary part under a datatype picked by the first byte. Nothing may
//! panic, and rows that come out stay within the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::features::Budget;
use modelship_server::infer_request;
use modelship_server::v2::{decode_binary, input_rows};

const BUDGET: Budget = Budget { n_features: 4, max_rows: 8 };
const OUTPUTS: &[&str] = &["predict", "predict_proba"];
const DATATYPES: &[&str] =
    &["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"];

fuzz_target!(|input: &[u8]| {
    let Some((len, body)) = input.split_first_chunk::<2>() else { return };
    let (json, binary) = body.split_at(usize::from(u16::from_le_bytes(*len)).min(body.len()));
    let datatype = DATATYPES[usize::from(len[0]) % DATATYPES.len()];
    if let Ok(values) = decode_binary(datatype, binary) {
        assert!(values.len() <= binary.len(), "{} values from {} bytes", values.len(), binary.len());
    }
    let Ok(req) = infer_request::parse(json, BUDGET, OUTPUTS) else { return };
    if let Ok(rows) = input_rows(BUDGET, req.input, binary) {
        assert!(rows.matrix.len() <= BUDGET.max_values(), "{} values over budget", rows.matrix.len());
    }
});
