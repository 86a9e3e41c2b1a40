//! Fuzz-style property tests on stable, beside the cargo-fuzz targets in server/fuzz (nightly,
//! `server/fuzz/run`): the request parsers (classic, KServe V1, V2), the binary tensor
//! decoder and the artifact loader get random and mutated inputs and must never panic, must stay
//! within their budget, and a loaded artifact must predict without panicking. Case counts keep
//! each target to a few seconds in a debug build.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use modelship_server::features::{Budget, rows_from_object};
use modelship_server::infer_request;
use modelship_server::model::Model;
use modelship_server::train::{self, Algorithm};
use modelship_server::v2::decode_binary;
use modelship_server::{Artifact, artifact};
use proptest::prelude::*;
use serde_json::{Value, json};

const BUDGET: Budget = Budget { n_features: 4, max_rows: 8 };
const OUTPUTS: &[&str] = &["predict", "predict_proba"];

/// Inputs that once broke something, or come from the issue: checked on every run.
const SEEDS: &[&str] = &[
    r#"{"inputs":[{"name":"x","shape":[1,4],"data":[[0],[0],[0],[0],[0],[0]]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[9223372036854775807,9223372036854775807],"datatype":"FP32","data":[]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"predict_proba"},{"name":"predict_proba"}]}"#,
    r#"{"inputs":[{"name":"x","shape":[-9223372036854775808,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
    r#"{"features":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
    r#"{"instances":[1e308,1e308,-1e308,1e308]}"#,
];

/// Valid bodies of every protocol, the starting points of mutations.
fn valid_bodies() -> Vec<Vec<u8>> {
    let row = json!([5.1, 3.5, 1.4, 0.2]);
    [
        json!({"features": row}),
        json!({"features": [row, row]}),
        json!({"instances": [row]}),
        json!({"features": {"a": 5.1, "b": 3.5, "c": null, "d": 0.2}}),
        json!({"instances": [{"d": 1, "c": 2, "b": 3, "a": 4}, {"a": 1, "b": 2, "c": 3, "d": 4}]}),
        json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [row, row]}],
               "outputs": [{"name": "predict"}, {"name": "predict_proba", "parameters": {"binary_data": true}}]}),
        json!({"id": "a", "parameters": {"binary_data_output": true},
               "inputs": [{"name": "x", "shape": [4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .chain(SEEDS.iter().map(|s| s.as_bytes().to_vec()))
    .collect()
}

/// A byte-level mutation: overwrite, insert or delete at a position, or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(b"[]{},:\"-0123456789eE.nul ".to_vec());
    prop_oneof![
        (any::<prop::sample::Index>(), interesting.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), prop::collection::vec(interesting, 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Set(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        }
    }
    bytes
}

/// Random bytes, or a valid body with a few mutations.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (prop::sample::select(valid_bodies()), prop::collection::vec(mutation(), 1..6))
            .prop_map(|(b, m)| mutate(b, &m)),
    ]
}

/// Every parser on one body: no panic, and anything parsed is within the budget.
fn parse_all(body: &[u8]) -> Result<(), TestCaseError> {
    let names = ["a", "b", "c", "d"].map(String::from);
    for key in ["features", "instances"] {
        if let Ok(rows) = rows_from_object(body, key, BUDGET, &names) {
            prop_assert!(rows.matrix.len() <= BUDGET.max_values());
        }
    }
    if let Ok(req) = infer_request::parse(body, BUDGET, OUTPUTS) {
        prop_assert!(req.input.shape.len() <= 2);
        prop_assert!(req.outputs.len() <= OUTPUTS.len());
        if let Some(data) = req.input.data {
            prop_assert!(data.values.len() <= BUDGET.max_values());
        }
    }
    Ok(())
}

#[test]
fn seeds_parse_without_panicking() {
    for body in valid_bodies() {
        parse_all(&body).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn request_parsers_never_panic_and_stay_within_budget(body in body()) {
        parse_all(&body)?;
    }

    #[test]
    fn binary_decoder_never_panics(
        datatype in prop::sample::select(vec!["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL", ""]),
        bytes in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        if let Ok(values) = decode_binary(datatype, &bytes) {
            prop_assert!(values.len() <= bytes.len());
        }
    }
}

/// Valid artifacts of every algorithm, as JSON.
fn artifacts() -> &'static [Value] {
    static A: OnceLock<Vec<Value>> = OnceLock::new();
    A.get_or_init(|| {
        let mut linear = train::iris();
        linear.targets = (0..linear.records.nrows()).map(|i| (i % 7).to_string()).collect();
        let mut out: Vec<Value> = [Algorithm::Logistic, Algorithm::Tree]
            .into_iter()
            .map(|a| serde_json::from_slice(&train::train(&train::iris(), a, 1).unwrap().to_vec()).unwrap())
            .collect();
        out.push(serde_json::from_slice(&train::train(&linear, Algorithm::Linear, 1).unwrap().to_vec()).unwrap());
        out
    })
}

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// The fields prediction indexes with.
const STRUCTURAL: &[&str] =
    &["left_child", "right_child", "leaf_node", "feature_idx", "prediction", "classes", "intercept", "params", "/dim"];

/// Values that stress an artifact's indices and shapes.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(3)),
        Just(json!(4)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!("x")),
        Just(json!({"v": 1, "dim": [4, 0], "data": []})),
        Just(json!({"v": 1, "dim": [0], "data": []})),
    ]
}

/// Loads `bytes`; anything that loads must predict any finite row of its width without panicking.
fn load_and_predict(bytes: &[u8], row: &[f64; 4]) -> Result<(), TestCaseError> {
    let Ok(artifact) = Artifact::from_slice(bytes) else { return Ok(()) };
    let n = artifact.n_features();
    let model = Model::new(artifact, None, None);
    let rows = ndarray::Array2::from_shape_fn((3, n), |(i, j)| row[(i + j) % 4] * (i as f64 + 1.0));
    let view = rows.view();
    if model.check(view, 10).is_ok() {
        let _ = model.predict(view);
        let _ = model.predict_proba(view);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_artifacts_load_or_fail_cleanly_and_never_panic_at_predict(
        which in 0..3usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), odd_value()), 1..4),
        row in prop::array::uniform4(-1e6f64..1e6),
    ) {
        let mut v = artifacts()[which].clone();
        for (i, structural, value) in edits {
            let mut all = Vec::new();
            pointers(&v, String::new(), &mut all);
            // Half the edits hit what prediction indexes with: children, splits, classes, shapes.
            let key = |p: &String| STRUCTURAL.iter().any(|k| p.ends_with(k));
            let picked: Vec<&String> = all.iter().filter(|p| !structural || key(p)).collect();
            let picked = if picked.is_empty() { all.iter().collect() } else { picked };
            let at = picked[i.index(picked.len())];
            if at.is_empty() {
                v = value;
            } else if let Some(slot) = v.pointer_mut(at) {
                *slot = value;
            }
        }
        load_and_predict(v.to_string().as_bytes(), &row)?;
    }

    #[test]
    fn random_and_byte_mutated_artifacts_never_panic(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 0..4),
        random in prop::collection::vec(any::<u8>(), 0..64),
        use_random in any::<bool>(),
    ) {
        let bytes = if use_random { random } else { mutate(artifacts()[which].to_string().into_bytes(), &mutations) };
        load_and_predict(&bytes, &[5.1, 3.5, 1.4, 0.2])?;
        prop_assert!(artifact::FORMAT_VERSION >= 1);
    }
}
