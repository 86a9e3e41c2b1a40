//! The benchmark's ceiling: a bare axum handler that parses the same `/predict` JSON body and
//! answers a constant. No model, no metrics: the cost of the HTTP stack alone on this machine.

use axum::Json;
use axum::routing::post;
use serde::Deserialize;

#[derive(Deserialize)]
struct Body {
    #[allow(dead_code)]
    features: Vec<f64>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8090".into());
    let app = axum::Router::new()
        .route("/predict", post(|Json(_b): Json<Body>| async { Json(serde_json::json!({"prediction": [0]})) }));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, app).await
}
