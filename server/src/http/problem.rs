//! Errors as RFC 9457 problem documents (`application/problem+json`), each
//! naming what was wrong and, for bad input, which field. The mapping from a
//! service error's kind to its HTTP status lives here and nowhere else.

use askee_core::validate::FieldError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::service::error::{ErrorKind, ServiceError as ApiError};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://askee.dev/problems/invalid-field`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable reason, e.g. `expired`, `revoked`, `bad_signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every offending field, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status of each kind of failure.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The problem document of a failure.
pub fn problem(e: &ApiError) -> Problem {
    Problem {
        type_: format!("https://askee.dev/problems/{}", e.slug),
        title: e.title.to_owned(),
        status: status(e.kind).as_u16(),
        detail: e.detail.clone(),
        reason: e.reason.clone(),
        errors: e.errors.clone(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        if status.is_server_error() {
            tracing::error!(%status, detail = %self.detail, "request failed");
        } else {
            tracing::info!(%status, detail = %self.detail, "request refused");
        }
        let body = serde_json::to_vec(&problem(&self)).expect("problem serialises");
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
