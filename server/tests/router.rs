//! Router tests over `app(state)` with `oneshot`: every endpoint and every kind of bad input.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use modelship_server::artifact::Artifact;
use modelship_server::http::{AppState, Limits};
use modelship_server::model::{Model, Predictions};
use modelship_server::router::app;
use modelship_server::train;
use serde_json::{Value, json};
use tower::ServiceExt;

fn iris_artifact() -> &'static Artifact {
    static A: OnceLock<Artifact> = OnceLock::new();
    A.get_or_init(|| train::train(&train::iris(), train::Algorithm::Logistic, 42).expect("iris trains"))
}

fn state_with(limits: Limits) -> Arc<AppState> {
    AppState::with_model(Model::new(iris_artifact().clone(), None, Some("v7".into())), limits)
}

fn state() -> Arc<AppState> {
    state_with(Limits::default())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.json())).to_string()
    }
}

async fn call(state: &Arc<AppState>, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

async fn post(state: &Arc<AppState>, uri: &str, body: Value) -> Reply {
    call(state, Method::POST, uri, body.to_string()).await
}

async fn get(state: &Arc<AppState>, uri: &str) -> Reply {
    call(state, Method::GET, uri, Body::empty()).await
}

#[tokio::test]
async fn predict_classic_contract() {
    let s = state();
    let r = post(&s, "/predict", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, br#"{"prediction":[0]}"#, "exact classic response shape");
    assert_eq!(r.headers["x-model-version"], "v7");
    assert_eq!(r.headers["x-model-name"], "iris");

    let r = post(&s, "/predict", json!({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})).await;
    assert_eq!(r.json(), json!({"prediction": [0, 2]}));
}

#[tokio::test]
async fn named_features_in_any_order_predict_like_arrays() {
    let s = state();
    let names = &iris_artifact().feature_names;
    assert_eq!(names.len(), 4);
    let named = |row: [f64; 4]| -> Value {
        // Reversed: the names, not the order, place the values.
        Value::Object(names.iter().zip(row).rev().map(|(n, v)| (n.clone(), json!(v))).collect())
    };
    let (a, b) = ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]);
    let r = post(&s, "/predict", json!({"features": named(a)})).await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &br#"{"prediction":[0]}"#[..]));
    let r = post(&s, "/predict", json!({"features": [named(a), named(b)]})).await;
    assert_eq!(r.json(), json!({"prediction": [0, 2]}));
    let r = post(&s, "/v1/models/iris:predict", json!({"instances": [named(b)]})).await;
    assert_eq!(r.json(), json!({"predictions": [2]}));
    // A wrong name is a 400 naming it and listing the model's features.
    let mut wrong = named(a);
    wrong.as_object_mut().unwrap().insert("petal_colour".into(), json!(1));
    let r = post(&s, "/predict", json!({"features": wrong})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains(r#"unknown feature "petal_colour""#) && r.error().contains(&names[0]), "{}", r.error());
}

#[tokio::test]
async fn predict_probabilities_and_labels() {
    let s = state();
    let r =
        post(&s, "/predict?proba=true&labels=true", json!({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
            .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["labels"], json!(["setosa", "virginica"]));
    assert_eq!(v["classes"], json!(["setosa", "versicolor", "virginica"]));
    for (row, predicted) in v["probabilities"].as_array().unwrap().iter().zip([0usize, 2]) {
        let p: Vec<f64> = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "probabilities sum to 1: {p:?}");
        let argmax = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(argmax, predicted, "the most probable class is the predicted one");
    }
}

#[tokio::test]
async fn all_150_iris_rows_agree_with_in_process_predictions() {
    let s = state();
    let table = train::iris();
    let rows: Vec<Vec<f64>> = table.records.outer_iter().map(|r| r.to_vec()).collect();
    // The model's own in-process predictions, by linfa itself.
    let modelship_server::artifact::Estimator::LogisticRegression(linfa_model) = &iris_artifact().estimator else {
        panic!("a logistic regression")
    };
    let expected: Vec<usize> = linfa::prelude::Predict::predict(linfa_model, &table.records).to_vec();
    let model = Model::new(iris_artifact().clone(), None, None);
    assert_eq!(model.predict(table.records.view()), Ok(Predictions::Classes(expected.clone())), "fast path == linfa");
    let r = post(&s, "/predict", json!({"features": rows})).await;
    assert_eq!(r.json()["prediction"], json!(expected));
    // One row at a time too, through V2.
    for (row, want) in rows.iter().zip(&expected) {
        let r = post(
            &s,
            "/v2/models/iris/infer",
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": row}]}),
        )
        .await;
        assert_eq!(r.json()["outputs"][0]["data"], json!([want]));
    }
    // A body large enough to be parsed and predicted on the blocking pool answers the same.
    let many: Vec<&Vec<f64>> = rows.iter().cycle().take(rows.len() * 40).collect();
    let body = json!({"inputs": [{"name": "x", "shape": [many.len(), 4], "datatype": "FP64", "data": many}]});
    assert!(body.to_string().len() > 64 * 1024);
    let r = post(&s, "/v2/models/iris/infer", body).await;
    let want: Vec<usize> = expected.iter().copied().cycle().take(many.len()).collect();
    assert_eq!(r.json()["outputs"][0]["data"], json!(want));
    // And the model is a real classifier: most of the training data is classified right.
    let names = &iris_artifact().class_names;
    let correct = expected.iter().zip(&table.targets).filter(|(p, t)| &names[**p] == *t).count();
    assert!(correct >= 135, "only {correct}/150 right");
}

#[tokio::test]
async fn kserve_v1() {
    let s = state();
    let r =
        post(&s, "/v1/models/iris:predict", json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"predictions": [0, 2]}));
    assert_eq!(get(&s, "/v1/models/iris").await.json(), json!({"name": "iris", "ready": true}));
    let r = post(&s, "/v1/models/nope:predict", json!({"instances": [[1, 2, 3, 4]]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("nope"));
    let r = post(&s, "/v1/models/iris:explain", json!({"instances": [[1, 2, 3, 4]]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v2_server_and_model_metadata() {
    let s = state();
    let v = get(&s, "/v2").await.json();
    assert_eq!(v["name"], "modelship-server");
    assert!(v["version"].is_string() && v["extensions"].is_array());
    assert_eq!(get(&s, "/v2/health/live").await.status, StatusCode::OK);
    assert_eq!(get(&s, "/v2/health/ready").await.status, StatusCode::OK);
    assert_eq!(get(&s, "/v2/models/iris/ready").await.json(), json!({"name": "iris", "ready": true}));
    assert_eq!(get(&s, "/v2/models/iris/versions/v7/ready").await.status, StatusCode::OK);
    assert_eq!(get(&s, "/v2/models/iris/versions/v8/ready").await.status, StatusCode::NOT_FOUND);

    let m = get(&s, "/v2/models/iris").await.json();
    assert_eq!(m["name"], "iris");
    assert_eq!(m["versions"], json!(["v7"]));
    assert!(m["platform"].is_string());
    let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    assert_eq!(
        m["inputs"],
        json!([{"name": "input-0", "datatype": "FP64", "shape": [-1, 4], "parameters": {"feature_names": names}}])
    );
    assert_eq!(m["outputs"][0], json!({"name": "predict", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(m["outputs"][1], json!({"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}));
    assert_eq!(get(&s, "/v2/models/other").await.status, StatusCode::NOT_FOUND);
}

/// Checks a V2 inference response against the protocol's `$inference_response` shape.
fn assert_v2_response_shape(v: &Value) {
    assert!(v["model_name"].is_string(), "model_name: {v}");
    assert!(v["model_version"].is_string(), "model_version: {v}");
    for out in v["outputs"].as_array().expect("outputs array") {
        assert!(out["name"].is_string() && out["datatype"].is_string(), "{out}");
        let shape: Vec<u64> = out["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let n: u64 = shape.iter().product();
        assert_eq!(out["data"].as_array().unwrap().len() as u64, n, "data length matches shape: {out}");
    }
}

#[tokio::test]
async fn v2_infer_flat_nested_datatypes_and_outputs() {
    let s = state();
    let flat = json!({"id": "req-1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]});
    let r = post(&s, "/v2/models/iris/infer", flat).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_v2_response_shape(&v);
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["model_version"], "v7");
    assert_eq!(v["outputs"], json!([{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}]));

    let nested = json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}]});
    let v = post(&s, "/v2/models/iris/versions/v7/infer", nested).await.json();
    assert_v2_response_shape(&v);
    assert_eq!(v["outputs"][0]["data"], json!([0, 2]));
    assert_eq!(v["outputs"][1]["shape"], json!([2, 3]));

    let ints = json!({"inputs": [{"name": "x", "shape": [4], "datatype": "INT32", "data": [5, 3, 1, 0]}]});
    let v = post(&s, "/v2/models/iris/infer", ints).await.json();
    assert_eq!(v["outputs"][0]["shape"], json!([1]));
}

#[tokio::test]
async fn v2_errors_are_400_with_error_field() {
    let s = state();
    let cases = [
        (json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}), "needs 8 values"),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            "expected 4 features",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}),
            "not supported",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1.5, 2, 3, 4]}]}),
            "non-integer",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, "a", 3, 4]}]}),
            "found a string",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            "must be [features]",
        ),
        (json!({"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}), "negative"),
        (json!({"inputs": []}), "exactly one input"),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "shap"}]}),
            "unknown output",
        ),
        (json!({"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP32", "data": []}]}), "no rows"),
        (json!({"nope": 1}), "invalid inference request"),
    ];
    for (body, want) in cases {
        let r = post(&s, "/v2/models/iris/infer", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(want), "{body}: {:?} lacks {want:?}", r.error());
    }
}

#[tokio::test]
async fn predict_bad_inputs_are_json_4xx_and_the_server_keeps_serving() {
    let s = state_with(Limits { max_body_bytes: 4096, max_rows: 5, ..Limits::default() });
    let raw = |b: &'static str| b.to_string();
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (raw("{not json"), StatusCode::BAD_REQUEST, "invalid request body"),
        (raw(r#"{"features":[1,2]}"#), StatusCode::BAD_REQUEST, "expected 4 features per row, got 2"),
        (raw(r#"{"features":["a","b","c","d"]}"#), StatusCode::BAD_REQUEST, "a number"),
        (raw(r#"{"features":[NaN,1,2,3]}"#), StatusCode::BAD_REQUEST, "invalid request body"),
        (raw(r#"{"features":[1e400,1,2,3]}"#), StatusCode::BAD_REQUEST, "invalid request body"),
        (raw(r#"{"features":[]}"#), StatusCode::BAD_REQUEST, "no rows"),
        (raw(r#"{"features":[[1,2,3,4],[1,2,3]]}"#), StatusCode::BAD_REQUEST, "row 1 has 3 values"),
        (raw(r#"{"rows":[1,2,3,4]}"#), StatusCode::BAD_REQUEST, "missing field \"features\""),
        (json!({"features": vec![[1, 2, 3, 4]; 6]}).to_string(), StatusCode::BAD_REQUEST, "exceed the limit of 5 rows"),
        (format!(r#"{{"features":[{}1]}}"#, "1,".repeat(3000)), StatusCode::PAYLOAD_TOO_LARGE, "larger than the limit"),
    ];
    for (body, status, want) in cases {
        let r = call(&s, Method::POST, "/predict", body.clone()).await;
        assert_eq!(r.status, status, "{body:.80}");
        assert!(r.error().contains(want), "{body:.80}: {:?} lacks {want:?}", r.error());
        assert_eq!(post(&s, "/predict", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await.status, StatusCode::OK);
    }
    let r = post(&s, "/predict?proba=maybe", json!({"features": [1, 2, 3, 4]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("proba"));
}

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let s = state();
    let r = get(&s, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("/nope"));
    let r = get(&s, "/predict").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.error().contains("method"));
    let r = call(&s, Method::DELETE, "/v2/models/iris/infer", Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn readiness_follows_the_model_and_draining() {
    let s = AppState::new(Limits::default());
    assert_eq!(get(&s, "/healthz").await.status, StatusCode::OK, "live before the model loads");
    assert_eq!(get(&s, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&s, "/v2/health/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = post(&s, "/predict", json!({"features": [1, 2, 3, 4]})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("not loaded"));
    s.set_model(Model::new(iris_artifact().clone(), None, None), 0.01);
    assert_eq!(get(&s, "/readyz").await.status, StatusCode::OK);
    s.start_draining();
    assert_eq!(get(&s, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        post(&s, "/predict", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await.status,
        StatusCode::OK,
        "still serves while draining"
    );
}

/// Parses the Prometheus text exposition into (series with labels, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_predictions_and_versions() {
    let s = state();
    post(&s, "/predict", json!({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.0, 3.4, 1.5, 0.2]]})).await;
    post(&s, "/predict", json!({"features": [1, 2]})).await;
    let r = get(&s, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let all = samples(&text);
    let value = |series: &str| {
        all.iter().find(|(s, _)| s == series).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value(r#"modelship_predictions_total{model="iris",version="v7",class="setosa"}"#), 2.0);
    assert_eq!(value(r#"modelship_predictions_total{model="iris",version="v7",class="virginica"}"#), 1.0);
    assert_eq!(value(r#"modelship_http_requests_total{endpoint="/predict",method="POST",status="200"}"#), 1.0);
    assert_eq!(value(r#"modelship_http_requests_total{endpoint="/predict",method="POST",status="400"}"#), 1.0);
    assert_eq!(
        value(r#"modelship_http_request_duration_seconds_count{endpoint="/predict",method="POST",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"modelship_model_info{model="iris",version="v7",algorithm="logistic_regression",features="4"}"#),
        1.0
    );
    assert_eq!(value("modelship_prediction_batch_rows_count"), 1.0);
    assert_eq!(value("modelship_prediction_batch_rows_sum"), 3.0);
    assert_eq!(value("modelship_http_requests_in_flight"), 1.0, "the /metrics request itself is in flight");
    assert!(all.iter().any(|(s, _)| s == "modelship_model_load_seconds"));
}

#[test]
fn artifact_round_trips_and_refuses_unknown_versions() {
    let a = iris_artifact();
    let bytes = a.to_vec();
    let b = Artifact::from_slice(&bytes).expect("reads back");
    assert!(b.to_vec() == bytes, "not byte-identical after a round trip (weights must reload exactly)");
    assert_eq!(b.feature_names, a.feature_names);
    assert_eq!(b.training, a.training);
    assert_eq!(b.feature_stats.len(), 4);
    assert_eq!(b.feature_stats[0].histogram_counts.iter().sum::<u64>(), 150);

    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v["format_version"] = json!(99);
    let err = Artifact::from_slice(v.to_string().as_bytes()).unwrap_err().to_string();
    assert!(err.contains("99") && err.contains("newer"), "{err}");
    let err = Artifact::from_slice(br#"{"hello": 1}"#).unwrap_err().to_string();
    assert!(err.contains("not a Modelship artifact"), "{err}");
    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v["feature_names"] = json!(["a", "b"]);
    let err = Artifact::from_slice(v.to_string().as_bytes()).unwrap_err().to_string();
    assert!(err.contains("inconsistent"), "{err}");
}

#[tokio::test]
async fn tree_and_linear_models_serve() {
    let tree = train::train(&train::iris(), train::Algorithm::Tree, 1).unwrap();
    assert!(tree.training.holdout_score > 0.85, "tree accuracy {}", tree.training.holdout_score);
    let s =
        AppState::with_model(Model::new(Artifact::from_slice(&tree.to_vec()).unwrap(), None, None), Limits::default());
    assert_eq!(
        post(&s, "/predict", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await.json(),
        json!({"prediction": [0]})
    );
    let r = post(&s, "/predict?proba=true", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("decision_tree"));

    // y = 2a + 3b + 1, exactly.
    let mut table = train::iris();
    table.targets = table.records.outer_iter().map(|r| (2.0 * r[0] + 3.0 * r[1] + 1.0).to_string()).collect();
    let lin = train::train(&table, train::Algorithm::Linear, 3).unwrap();
    assert!(lin.training.holdout_score > 0.999, "r2 {}", lin.training.holdout_score);
    let s = AppState::with_model(Model::new(lin, None, None), Limits::default());
    let v = post(&s, "/predict", json!({"features": [1.0, 1.0, 0.0, 0.0]})).await.json();
    let y = v["prediction"][0].as_f64().unwrap();
    assert!((y - 6.0).abs() < 1e-6, "{v}");
    let m = get(&s, "/v2/models/iris").await.json();
    assert_eq!(m["outputs"].as_array().unwrap().len(), 1, "regression has no predict_proba");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![Just("features".to_string()), Just("inputs".to_string()), "[a-z]{1,5}".prop_map(|s| s)],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn random_bodies_never_break_the_router(body in prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
        ], route in prop::sample::select(vec!["/predict", "/predict?proba=true", "/v1/models/iris:predict", "/v2/models/iris/infer"])) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let s = state();
                let r = call(&s, Method::POST, route, body.clone()).await;
                prop_assert!(r.status == StatusCode::OK || r.status.is_client_error(), "{} for {:?}", r.status, String::from_utf8_lossy(&body));
                if r.status != StatusCode::OK {
                    prop_assert!(!r.error().is_empty());
                }
                let ok = post(&s, "/predict", json!({"features": [5.1, 3.5, 1.4, 0.2]})).await;
                prop_assert_eq!(ok.status, StatusCode::OK);
                Ok(())
            })?;
        }
    }
}

#[tokio::test]
async fn v2_binary_tensor_data_extension_in_and_out() {
    let s = state();
    let rows: [[f32; 4]; 2] = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];
    let blob: Vec<u8> = rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": blob.len()}}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": true}}, {"name": "predict_proba"}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&blob);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v2/models/iris/infer")
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let json_len: usize = resp.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let (head, tail) = bytes.split_at(json_len);
    let v: Value = serde_json::from_slice(head).unwrap();
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(v["outputs"][0].get("data").is_none(), "binary outputs carry no JSON data");
    let predicted: Vec<i64> = tail.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(predicted, [0, 2]);
    assert_eq!(v["outputs"][1]["shape"], json!([2, 3]), "a JSON output next to a binary one");

    // A size that overruns the body, and a header longer than the body, are 400s.
    let bad = |hdr_len: usize, size: usize| {
        let header = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}).to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&[0u8; 16]);
        Request::builder()
            .method(Method::POST)
            .uri("/v2/models/iris/infer")
            .header("inference-header-content-length", if hdr_len == 0 { header.len() } else { hdr_len })
            .body(Body::from(body))
            .unwrap()
    };
    for req in [bad(0, 64), bad(100_000, 16)] {
        let resp = app(s.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
