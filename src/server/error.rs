//! `AppError`: every failure of an HTTP handler, turned into a status and a JSON body that
//! tells the client only what it may know. Store failures are logged here, in detail, and
//! reach the client as a bare 503.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::store::StoreError;
use crate::protocol::http::ErrorBody;

/// An HTTP error answer.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store failure while answering a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the server cannot reach its database right now; try again shortly",
        )
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let (code, message) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => (
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json".to_owned(),
            ),
            JsonRejection::JsonSyntaxError(_) => ("malformed_json", rejection.body_text()),
            JsonRejection::JsonDataError(_) => ("invalid_body", rejection.body_text()),
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ("body_too_large", "the request body is too large".to_owned())
            }
            _ => ("bad_request", rejection.body_text()),
        };
        Self::new(rejection.status(), code, message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            error: self.message,
            retry_after: self.retry_after_secs,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
