//! Credentials from requests: `Authorization: Bearer <token>` (also `Token <token>`, as InfluxDB
//! clients send it), the console's session cookie (with its CSRF token on every change), and on
//! HTTPS the client certificate of the connection (mTLS).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use corral_registry::Principal;
use corral_services::{Caller as Who, Credential, DeviceCaller};
use std::sync::Arc;

/// The client certificate (DER) a TLS connection presented, verified against the registered
/// CAs during the handshake. The HTTPS listener puts it on each request of that connection.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

/// The device a telemetry request speaks for: its token when there is an `Authorization`
/// header, else the device the connection's client certificate names. Checked on every request,
/// so a revoked certificate stops working on a kept-alive connection too.
pub async fn device(state: &AppState, headers: &HeaderMap, certificate: Option<&ClientCertificate>) -> ApiResult<DeviceCaller> {
    let credential = match (headers.get(axum::http::header::AUTHORIZATION), certificate) {
        (None, Some(certificate)) => Credential::Certificate(&certificate.0),
        _ => Credential::DeviceToken(bearer(headers)?),
    };
    match state.identity.authenticate(credential).await? {
        Who::Device(device) => Ok(device),
        Who::Application(_) => Err(ApiError::unauthenticated("not a device credential")),
    }
}

pub fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization header; send \"Authorization: Bearer <token>\""))?
        .to_str()
        .map_err(|_| ApiError::unauthenticated("Authorization header is not valid text"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| ApiError::unauthenticated("Authorization header must be \"Bearer <token>\""))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
        return Err(ApiError::unauthenticated("Authorization scheme must be Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthenticated("empty token"));
    }
    Ok(token)
}

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "corral_session";
/// The header (or form field `csrf`) in which a signed-in browser echoes its session's CSRF
/// token on every request that changes something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Marks a request that came over TLS (the HTTPS listener): cookies then get `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// An authenticated person or program: an API token, or a console session. Handlers taking this
/// are closed to anonymous callers and to device tokens.
pub struct Caller(pub Principal);

/// Who sent the request: an API token (`Authorization`), or else a console session (its
/// cookie), then with the session's CSRF token for the caller to check.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<(Principal, Option<String>)> {
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Ok((state.registry.authenticate_api(bearer(headers)?).await?, None));
    }
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Err(ApiError::unauthenticated("missing Authorization header; send \"Authorization: Bearer <token>\" or sign in"));
    };
    let (principal, csrf) = state.registry.session(secret).await?;
    Ok((principal, Some(csrf)))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (principal, csrf) = authenticate(state, &parts.headers).await?;
        // A browser sends the cookie with requests other sites make it send: a change counts
        // only with the session's CSRF token, which only our own pages know.
        if let Some(csrf) = csrf
            && !parts.method.is_safe()
        {
            let echoed = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !echoed.is_some_and(|e| constant_time_eq(e.as_bytes(), csrf.as_bytes())) {
                return Err(ApiError::forbidden("missing or wrong CSRF token (x-csrf-token); reload the page"));
            }
        }
        Ok(Caller(principal))
    }
}

/// Compares without stopping at the first difference, so timing tells nothing about a secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
