//! The services' one error: what failed, in words a client can act on, and
//! its [`ErrorKind`]. `http::problem` maps the kind to a status code and the
//! error to an RFC 9457 problem document; nothing here knows HTTP.

use askee_core::validate::FieldError;

use crate::store::StoreError;

/// What kind of failure an error is; `http::problem` gives each its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed.
    BadRequest,
    /// Authentication failed or is missing.
    Unauthorized,
    /// Authenticated, but not allowed.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The request took longer than the server allows.
    Timeout,
    /// The request conflicts with the current state.
    Conflict,
    /// The body is larger than allowed.
    TooLarge,
    /// The body is not of the required media type.
    UnsupportedMediaType,
    /// A field is invalid.
    Invalid,
    /// The client sends too many requests.
    RateLimited,
    Internal,
    /// The store or the server is overloaded or failing.
    Unavailable,
}

/// A failed operation; boxed so that `Result<_, ServiceError>` stays small.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.detail)]
pub struct ServiceError(Box<ErrorBody>);

#[derive(Debug)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// Names the kind of problem in its URI (`https://askee.dev/problems/{slug}`).
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Machine-readable reason, e.g. `expired`, `revoked`, `bad_signature`.
    pub reason: Option<String>,
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl std::ops::Deref for ServiceError {
    type Target = ErrorBody;

    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ServiceError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

impl ServiceError {
    pub fn new(
        kind: ErrorKind,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(ErrorBody {
            kind,
            slug,
            title,
            detail: detail.into(),
            reason: None,
            errors: Vec::new(),
            retry_after: None,
        }))
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Invalid input, naming every offending field.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(
            ErrorKind::Invalid,
            "invalid-field",
            "a field is invalid",
            detail,
        );
        e.errors = errors;
        e
    }

    pub fn field(field: &str, problem: impl Into<String>) -> Self {
        Self::fields(vec![FieldError {
            field: field.to_owned(),
            problem: problem.into(),
        }])
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::BadRequest,
            "bad-request",
            "the request is malformed",
            detail,
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not-found",
            "not found",
            format!("{} not found", what.into()),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Conflict,
            "conflict",
            "the request conflicts with the current state",
            detail,
        )
    }

    pub fn unauthorized(reason: &str, detail: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unauthorized,
            "unauthorized",
            "authentication failed",
            detail,
        )
        .with_reason(reason)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", "not allowed", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", "internal error", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unavailable,
            "unavailable",
            "the service is unavailable",
            detail,
        )
    }

    /// A body over `limit` bytes.
    pub fn too_large(title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, "body-too-large", title, detail)
    }

    /// A body that is not JSON.
    pub fn not_json() -> Self {
        Self::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported-media-type",
            "the body must be json",
            "content-type must be application/json",
        )
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Conflict { .. } | StoreError::Duplicate { .. } => {
                Self::conflict(e.to_string())
            }
            StoreError::NotFound { what } => Self::not_found(what.clone()),
            StoreError::ReplayedNonce { .. } => {
                Self::unauthorized("replayed_request", "this signed request was already used")
            }
            StoreError::ForeignAssignment { .. } | StoreError::ImpossibleClaim { .. } => {
                Self::forbidden(e.to_string())
            }
            // Details of database failures stay in the server log.
            _ => {
                tracing::error!(error = %e, "store failure");
                Self::unavailable("the store could not complete the request")
            }
        }
    }
}
