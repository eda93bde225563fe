//! Credentials from requests: `Authorization: Bearer <token>` (also `Token <token>`, as InfluxDB
//! clients send it).

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use corral_registry::Principal;

pub fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization header; send \"Authorization: Bearer <token>\""))?
        .to_str()
        .map_err(|_| ApiError::unauthenticated("Authorization header is not valid text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthenticated("Authorization header must be \"Bearer <token>\""))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
        return Err(ApiError::unauthenticated("Authorization scheme must be Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthenticated("empty token"));
    }
    Ok(token)
}

/// An authenticated person or program (API token). Handlers taking this are closed to anonymous
/// callers and to device tokens.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        Ok(Caller(state.registry.authenticate_api(token).await?))
    }
}
