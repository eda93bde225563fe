//! The one place a [`WireError`] becomes an HTTP response: status, JSON body `{"error": ...}`,
//! and the headers clients need to react (Retry-After, WWW-Authenticate).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_model::{ErrorKind, WireError};

#[derive(Debug)]
pub struct ApiError(pub WireError);

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError(WireError::new(kind, message))
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError(e)
    }
}

impl From<corral_registry::RegistryError> for ApiError {
    fn from(e: corral_registry::RegistryError) -> Self {
        ApiError(e.to_wire())
    }
}

impl From<corral_rules::RulesError> for ApiError {
    fn from(e: corral_rules::RulesError) -> Self {
        ApiError(e.to_wire())
    }
}

impl From<corral_model::IdError> for ApiError {
    fn from(e: corral_model::IdError) -> Self {
        ApiError::bad_input(e.to_string())
    }
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.kind);
        let body = serde_json::json!({ "error": self.0.message });
        let mut response = (status, axum::Json(body)).into_response();
        match self.0.kind {
            ErrorKind::Unavailable => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorKind::Unauthenticated => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Body extraction failures (too large, client vanished mid-body) as JSON errors.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::TooLarge,
                "request body is larger than the configured limit (--max-body-bytes); nothing was stored",
            )
        } else {
            ApiError::bad_input(format!("could not read the request body: {}", rejection.body_text()))
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
