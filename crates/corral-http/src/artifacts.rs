//! Firmware artifacts: upload, list, download with `Range`.
//!
//! - `POST /api/v1/artifacts?name=&version=&profiles=a,b&hardware=rev-b[&tenant=][&signature=&public_key=]`
//!   with the image as the body (any content type): streamed to disk while it is hashed, never
//!   held in memory, at most `[campaigns] max_artifact_mb`. Corral signs its manifest with the
//!   tenant's Ed25519 key, or checks the operator's own `signature` (base64) with `public_key`.
//!   Operators and admins; audited as `artifact.upload`; `201` with the artifact.
//! - `GET /api/v1/artifacts` (`after`, `limit`), `GET /api/v1/artifacts/{id}`: every role reads.
//! - `GET /api/v1/artifacts/signing-key[?tenant=]`: the tenant's public key devices trust.
//! - `GET /api/v1/artifacts/{id}/content`: the image, for API callers.
//! - `GET /api/v1/devices/{id}/artifacts/{artifact}`: the image, for the device itself (its token
//!   or certificate), of its own tenant only.
//! - `GET /api/v1/downloads/{artifact}/{device}/{expires}/{mac}`: the short-lived per-device URL a
//!   campaign hands out, without credentials.
//!
//! Every download honours `Range` (one range; `206` with `Content-Range`, `416` past the end) and
//! `If-Range` with the `ETag` (the SHA-256), so a download cut half-way resumes (`curl -C -`)
//! instead of starting over.

use crate::AppState;
use crate::auth::Caller;
use crate::commands::{require_write, scope};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use crate::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_campaigns::{Artifact, NewArtifact};
use corral_model::TenantId;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use crate::openapi::{Api, Operation};

const TAG: &str = "artifacts";

pub(crate) fn routes(api: Api) -> Api {
    api
        .post("/api/v1/artifacts", upload, Operation::new(TAG, "TODO"))
        .get("/api/v1/artifacts", list, Operation::new(TAG, "TODO"))
        .get("/api/v1/artifacts/signing-key", signing_key, Operation::new(TAG, "TODO"))
        .get("/api/v1/artifacts/{id}", show, Operation::new(TAG, "TODO"))
        .get("/api/v1/artifacts/{id}/content", content, Operation::new(TAG, "TODO"))
        .get("/api/v1/devices/{id}/artifacts/{artifact}", for_device, Operation::new(TAG, "TODO"))
        .get("/api/v1/downloads/{artifact}/{device}/{expires}/{mac}", granted, Operation::new(TAG, "TODO"))
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    name: String,
    version: String,
    #[serde(default)]
    profiles: Option<String>,
    #[serde(default)]
    hardware: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
}

fn labels(list: Option<&str>) -> Vec<String> {
    list.map(|l| l.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()).unwrap_or_default()
}

/// The tenant a caller acts in: its own when it is scoped (naming another is refused), else the
/// one it names, else `default`.
pub(crate) fn acting_tenant(caller: &corral_registry::Principal, named: Option<&str>) -> ApiResult<TenantId> {
    match (&caller.tenant, named) {
        (Some(own), Some(named)) if own.as_str() != named => {
            Err(ApiError::forbidden(format!("a token of tenant {own} cannot act for tenant {named:?}")))
        }
        (Some(own), _) => Ok(own.clone()),
        (None, Some(named)) => Ok(TenantId::new(named)?),
        (None, None) => Ok(TenantId::default_tenant()),
    }
}

pub fn artifact_json(artifact: &Artifact) -> Value {
    let mut value = serde_json::to_value(artifact).unwrap_or_default();
    value["manifest"] = artifact.manifest();
    value
}

pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<UploadParams>,
    body: Body,
) -> ApiResult<Response> {
    require_write(&caller, "upload artifacts")?;
    let tenant = acting_tenant(&caller, params.tenant.as_deref())?;
    let new = NewArtifact {
        tenant: Some(tenant.clone()),
        name: params.name,
        version: params.version,
        profiles: labels(params.profiles.as_deref()),
        hardware: labels(params.hardware.as_deref()),
        created_by: caller.name.clone(),
        signature: params.signature,
        public_key: params.public_key,
    };
    let artifact = state.rollouts.artifacts().upload(new, body.into_data_stream()).await.map_err(|e| ApiError(e.into()))?;
    let detail = json!({ "name": artifact.name, "version": artifact.version, "size": artifact.size, "sha256": artifact.sha256 });
    if let Err(e) = state.registry.record_audit(&caller, "artifact.upload", &artifact.id, Some(&tenant), detail).await {
        tracing::error!(artifact = %artifact.id, error = %e, "audit entry not written");
    }
    let location = format!("/api/v1/artifacts/{}", artifact.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(artifact_json(&artifact))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Value>> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let artifacts =
        state.rollouts.artifacts().list(scope(&caller), page.after.as_deref(), limit).await.map_err(|e| ApiError(e.into()))?;
    let next = (artifacts.len() == limit).then(|| artifacts.last().map(|a| a.id.clone())).flatten();
    Ok(Json(json!({ "artifacts": artifacts.iter().map(artifact_json).collect::<Vec<_>>(), "next": next })))
}

pub async fn show(State(state): State<AppState>, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let artifact = state.rollouts.artifacts().get(&id, scope(&caller)).await.map_err(|e| ApiError(e.into()))?;
    Ok(Json(artifact_json(&artifact)))
}

#[derive(Debug, Deserialize)]
pub struct KeyParams {
    tenant: Option<String>,
}

pub async fn signing_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<KeyParams>,
) -> ApiResult<Json<Value>> {
    let tenant = acting_tenant(&caller, params.tenant.as_deref())?;
    let key = state.rollouts.artifacts().public_key(tenant.as_str()).map_err(|e| ApiError(e.into()))?;
    Ok(Json(json!({ "tenant": tenant, "algorithm": "ed25519", "public_key": key })))
}

pub async fn content(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let artifact = state.rollouts.artifacts().get(&id, scope(&caller)).await.map_err(|e| ApiError(e.into()))?;
    serve(&state, &artifact, &headers).await
}

pub async fn for_device(
    State(state): State<AppState>,
    Path((device, id)): Path<(String, String)>,
    certificate: Option<Extension<crate::ClientCertificate>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = crate::auth::device(&state, &headers, certificate.as_deref()).await?;
    if caller.id.as_str() != device {
        return Err(ApiError::forbidden(format!("device {} may not download as device {device:?}", caller.id)));
    }
    let artifact = state.rollouts.artifacts().get(&id, Some(caller.tenant.as_str())).await.map_err(|e| ApiError(e.into()))?;
    serve(&state, &artifact, &headers).await
}

pub async fn granted(
    State(state): State<AppState>,
    Path((artifact, device, expires, mac)): Path<(String, String, i64, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let artifact = state.rollouts.artifacts().redeem(&artifact, &device, expires, &mac).await.map_err(|e| ApiError(e.into()))?;
    serve(&state, &artifact, &headers).await
}

/// The byte range a request asks for, of `size` bytes: `Ok(None)` for the whole (no `Range`, one
/// we do not serve as a range, or an `If-Range` for another version), `Err(())` when it starts
/// past the end.
fn wanted(headers: &HeaderMap, size: u64, etag: &str) -> Result<Option<(u64, u64)>, ()> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Ok(None);
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else { return Ok(None) };
    // Several ranges would need a multipart answer; the whole body is an allowed answer instead.
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
        (Ok(start), Err(_)) if last.is_empty() => (start, size.saturating_sub(1)),
        // The last `n` bytes.
        (Err(_), Ok(n)) if first.is_empty() && n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return Ok(None),
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The artifact's content, whole or the range asked for, streamed from disk.
async fn serve(state: &AppState, artifact: &Artifact, headers: &HeaderMap) -> ApiResult<Response> {
    let etag = artifact.etag();
    let size = artifact.size;
    let range = match wanted(headers, size, &etag) {
        Ok(range) => range,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}")), (header::ACCEPT_RANGES, "bytes".to_string())],
            )
                .into_response());
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = end + 1 - start;
    let open = async {
        let mut file = tokio::fs::File::open(state.rollouts.artifacts().content(artifact)).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok::<_, std::io::Error>(file.take(length))
    };
    let file = open.await.map_err(|e| {
        tracing::error!(artifact = %artifact.id, error = %e, "artifact content not readable");
        ApiError(corral_model::WireError::internal("the artifact's content is not readable"))
    })?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 << 10));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    let filename = format!("attachment; filename=\"{}-{}.bin\"", artifact.name, artifact.version);
    if let Ok(disposition) = HeaderValue::from_str(&filename) {
        h.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(content_range) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, content_range);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, if_range: Option<&str>) -> Result<Option<(u64, u64)>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value.parse().unwrap());
        if let Some(tag) = if_range {
            headers.insert(header::IF_RANGE, tag.parse().unwrap());
        }
        wanted(&headers, 1000, "\"sha256-ab\"")
    }

    #[test]
    fn ranges_resume_and_never_restart_from_zero() {
        assert_eq!(range("bytes=500-", None), Ok(Some((500, 999))));
        assert_eq!(range("bytes=0-99", None), Ok(Some((0, 99))));
        assert_eq!(range("bytes=900-5000", None), Ok(Some((900, 999))));
        assert_eq!(range("bytes=-100", None), Ok(Some((900, 999))));
        assert_eq!(range("bytes=1000-", None), Err(()));
        assert_eq!(range("bytes=5-1", None), Ok(None));
        assert_eq!(range("bytes=0-1,5-9", None), Ok(None));
        assert_eq!(range("items=0-1", None), Ok(None));
        assert_eq!(range("bytes=500-", Some("\"sha256-ab\"")), Ok(Some((500, 999))));
        assert_eq!(range("bytes=500-", Some("\"sha256-other\"")), Ok(None), "another version: the whole file");
    }
}
