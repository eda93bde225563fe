//! Credentials from requests: `Authorization: Bearer <token>` (also `Token <token>`, as InfluxDB
//! clients send it), and on HTTPS the client certificate of the connection (mTLS).

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use corral_registry::{DeviceIdentity, Principal};
use std::sync::Arc;

/// The client certificate (DER) a TLS connection presented, verified against the registered
/// CAs during the handshake. The HTTPS listener puts it on each request of that connection.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

/// The device a telemetry request speaks for: its token when there is an `Authorization`
/// header, else the device the connection's client certificate names. Checked on every request,
/// so a revoked certificate stops working on a kept-alive connection too.
pub async fn device(state: &AppState, headers: &HeaderMap, certificate: Option<&ClientCertificate>) -> ApiResult<DeviceIdentity> {
    if let (None, Some(certificate)) = (headers.get(axum::http::header::AUTHORIZATION), certificate) {
        return state.authorities.identify(&certificate.0).await.map_err(|why| ApiError::unauthenticated(format!("client certificate: {why}")));
    }
    Ok(state.registry.authenticate_device(bearer(headers)?).await?)
}

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
