//! The classic `/predict` and KServe V1 body parser (rows as arrays or named objects): any bytes parse or fail with an error, and
//! whatever parses stays within the request's budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelship_server::features::{Budget, rows_from_object};

const BUDGET: Budget = Budget { n_features: 4, max_rows: 8 };

fuzz_target!(|body: &[u8]| {
    // Named rows too: `{"a": 1, ...}` objects are put in this order.
    let names = ["a", "b", "c", "d"].map(String::from);
    for key in ["features", "instances"] {
        if let Ok(rows) = rows_from_object(body, key, BUDGET, &names) {
            assert!(rows.matrix.len() <= BUDGET.max_values(), "{} values over budget", rows.matrix.len());
        }
    }
});
