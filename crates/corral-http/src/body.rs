//! Request bodies: JSON with errors that say what and where, and size-limited raw reads.

use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use corral_model::ErrorKind;
use serde::de::DeserializeOwned;

/// Parses a JSON body with an error that says what and where (serde_json names the field/line).
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_input(format!("invalid request body: {e}")))
}

/// Like [`parse_json`], but an empty body means the defaults (`curl -X PUT` with no `-d`).
pub fn parse_json_or_default<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body?;
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_json(Ok(body)) }
}

/// Reads at most `limit` bytes; more is a 413 (checked while streaming, so a chunked body that
/// never declared its length still cannot make us hold more than the limit).
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    ErrorKind::TooLarge,
                    format!("request body is larger than the limit of {limit} bytes (max_body_bytes); nothing was stored"),
                );
            }
            source = err.source();
        }
        ApiError::bad_input(format!("could not read the request body: {e}"))
    })
}
