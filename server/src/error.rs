//! The HTTP error type: every failure is a JSON body `{"error": "..."}` with a 4xx/5xx status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::InputError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("model {0:?} not found")]
    ModelNotFound(String),
    #[error("model is not loaded yet")]
    NotReady,
    #[error("server is shutting down")]
    Draining,
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Input(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::NotReady | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}
