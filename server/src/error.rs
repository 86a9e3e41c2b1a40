//! The HTTP error type: every failure is a JSON body `{"error": "..."}` with a 4xx/5xx status.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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
    #[error("the server is at its limit of {0} concurrent prediction requests; retry shortly")]
    Busy(usize),
    #[error("the request body did not arrive within {}s", .0.as_secs_f64())]
    BodyTimeout(Duration),
    #[error("the prediction did not finish within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            // Finite inputs the model overflows on: well-formed, but outside what it can answer.
            Self::Input(InputError::NotFiniteOutput { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) | Self::Input(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::NotReady | Self::Draining | Self::Busy(_) | Self::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if matches!(self, Self::Busy(_)) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
