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
use crate::extract::{Path, Query};
use crate::openapi::{Api, Auth, Operation};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_campaigns::{Artifact, ArtifactManifest, NewArtifact};
use corral_model::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TAG: &str = "artifacts";

const RANGE: &str = "One byte range, `bytes=<first>-[<last>]` or `bytes=-<last n>`, to resume a download: answered \
    with 206 and `Content-Range`. Several ranges, or a header that is not of this form, get the whole image (200).";
const IF_RANGE: &str = "The `ETag` of the content already held (`\"sha256-<hex>\"`): the range is served only when it \
    is still the same content, else the whole image.";
const DOWNLOAD: &str = "Streams the image (`ETag`: its SHA-256, `Accept-Ranges: bytes`). A `Range` resumes a cut \
    download (206 with `Content-Range`); a range that starts past the end is 416 with `Content-Range: bytes */<size>`.";

/// The answers of the three downloads: the whole image, a range of it, or a range past its end.
trait DownloadAnswers {
    fn download_answers(self) -> Self;
}

impl DownloadAnswers for Operation {
    fn download_answers(self) -> Self {
        self.returns_raw(200, "application/octet-stream", "The whole image")
            .answer_header(200, "ETag", "The content's SHA-256: `\"sha256-<hex>\"`")
            .answer_header(200, "Accept-Ranges", "`bytes`")
            .answer_header(200, "Content-Disposition", "`attachment; filename=\"<name>-<version>.bin\"`")
            .returns_raw(206, "application/octet-stream", "The range asked for")
            .answer_header(206, "Content-Range", "Which bytes: `bytes <first>-<last>/<size>`")
            .answer_header(206, "ETag", "The content's SHA-256: `\"sha256-<hex>\"`")
            .answer_header(206, "Accept-Ranges", "`bytes`")
            .answer_header(206, "Content-Disposition", "`attachment; filename=\"<name>-<version>.bin\"`")
            .returns_nothing(416, "The range starts past the end of the image")
            .answer_header(416, "Content-Range", "The image's size: `bytes */<size>`")
            .answer_header(416, "Accept-Ranges", "`bytes`")
    }
}

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/artifacts",
        upload,
        Operation::new(TAG, "Uploads a firmware image")
            .describe(
                "The body is the image, any content type, streamed to disk while it is hashed; at most \
                `[campaigns] max_artifact_mb` (413 above it, nothing kept). Corral signs its manifest with the \
                tenant's Ed25519 key, or checks the operator's own `signature` with `public_key` (both or neither; \
                403 when it does not verify). A tenant already holding this name and version is 409. Operators and \
                admins; audited as `artifact.upload`. `Location` names the new artifact.",
            )
            .query::<UploadParams>()
            .raw_body("application/octet-stream", "The firmware image")
            .returns::<ArtifactShown>(201, "Uploaded and signed")
            .answer_header(201, "Location", "The new artifact: `/api/v1/artifacts/<id>`")
            .errors(&[409]),
    )
    .get(
        "/api/v1/artifacts",
        list,
        Operation::new(TAG, "Lists artifacts, one page at a time")
            .describe("Newest first, of the caller's tenant (every tenant's for an unscoped token).")
            .query::<PageParams>()
            .returns::<ArtifactPage>(200, "One page of artifacts"),
    )
    .get(
        "/api/v1/artifacts/signing-key",
        signing_key,
        Operation::new(TAG, "The tenant's public key that artifact manifests are signed with")
            .describe("Devices verify each manifest's `signature` with it. The key is created on first use.")
            .query::<KeyParams>()
            .returns::<SigningKey>(200, "The tenant's Ed25519 public key"),
    )
    .get(
        "/api/v1/artifacts/{id}",
        show,
        Operation::new(TAG, "One artifact")
            .path::<String>("id", "The artifact (`art_…`)")
            .returns::<ArtifactShown>(200, "The artifact with its manifest"),
    )
    .get(
        "/api/v1/artifacts/{id}/content",
        content,
        Operation::new(TAG, "Downloads an artifact's image")
            .describe(DOWNLOAD)
            .path::<String>("id", "The artifact (`art_…`)")
            .header("Range", RANGE)
            .header("If-Range", IF_RANGE)
            .download_answers(),
    )
    .get(
        "/api/v1/devices/{id}/artifacts/{artifact}",
        for_device,
        Operation::new(TAG, "Downloads an artifact's image, as the device itself")
            .describe(
                "With the device's own token or, over HTTPS, its client certificate; a device downloads only as \
                itself (403 otherwise) and only its own tenant's artifacts (404 otherwise). Streams the image \
                (`ETag`: its SHA-256); a `Range` resumes a cut download (206), a range that starts past the end is \
                416.",
            )
            .auth(Auth::Device)
            .path::<String>("id", "The device downloading: the credential's own")
            .path::<String>("artifact", "The artifact (`art_…`)")
            .header("Range", RANGE)
            .header("If-Range", IF_RANGE)
            .download_answers(),
    )
    .get(
        "/api/v1/downloads/{artifact}/{device}/{expires}/{mac}",
        granted,
        Operation::new(TAG, "Downloads an artifact's image by a signed link")
            .describe(
                "The short-lived, per-device link a firmware campaign hands out (in its `firmware.update` \
                command): no credential, the MAC authorizes it. A forged or expired link is 403. Streams the image \
                (`ETag`: its SHA-256); a `Range` resumes a cut download (206), a range that starts past the end is \
                416.",
            )
            .auth(Auth::Anyone)
            .path::<String>("artifact", "The artifact (`art_…`)")
            .path::<String>("device", "The device the link was made for")
            .path::<i64>("expires", "When the link expires, Unix milliseconds")
            .path::<String>("mac", "HMAC-SHA256 of artifact, device and expiry, hex")
            .header("Range", RANGE)
            .header("If-Range", IF_RANGE)
            .download_answers()
            .errors(&[403]),
    )
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// What an upload says about its image.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// The firmware's name: 1 to 128 of `A-Z a-z 0-9 . _ + -`.
    name: String,
    /// Its version, the same characters; a tenant has one artifact per name and version.
    version: String,
    /// The device profiles it fits, comma-separated (informational; none: any).
    #[serde(default)]
    profiles: Option<String>,
    /// The hardware revisions it fits, comma-separated (informational; none: any).
    #[serde(default)]
    hardware: Option<String>,
    /// The tenant it belongs to: an unscoped token's choice (`default` when absent); a scoped
    /// token's own tenant only.
    #[serde(default)]
    tenant: Option<String>,
    /// The operator's own Ed25519 signature over the manifest message, base64; with `public_key`.
    #[serde(default)]
    signature: Option<String>,
    /// The operator's Ed25519 public key (32 bytes), base64; with `signature`.
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

/// An artifact as the API shows it: its record and the manifest a device is given.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ArtifactShown {
    #[serde(flatten)]
    artifact: Artifact,
    /// What a device is given and verifies before installing.
    manifest: ArtifactManifest,
}

impl From<Artifact> for ArtifactShown {
    fn from(artifact: Artifact) -> Self {
        ArtifactShown { manifest: artifact.manifest(), artifact }
    }
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ArtifactPage {
    artifacts: Vec<ArtifactShown>,
    /// Pass as `after` for the next page; null on the last.
    next: Option<String>,
}

/// A tenant's public signing key.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SigningKey {
    tenant: TenantId,
    /// Always `ed25519`.
    algorithm: &'static str,
    /// The Ed25519 public key (32 bytes), base64.
    public_key: String,
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
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(ArtifactShown::from(artifact))).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PageParams {
    /// The last artifact id of the previous page (its `next`).
    after: Option<String>,
    /// Artifacts per page: 100 by default, at most 1000 (larger values are lowered to it).
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<ArtifactPage>> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let artifacts =
        state.rollouts.artifacts().list(scope(&caller), page.after.as_deref(), limit).await.map_err(|e| ApiError(e.into()))?;
    let next = (artifacts.len() == limit).then(|| artifacts.last().map(|a| a.id.clone())).flatten();
    Ok(Json(ArtifactPage { artifacts: artifacts.into_iter().map(ArtifactShown::from).collect(), next }))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ArtifactShown>> {
    let artifact = state.rollouts.artifacts().get(&id, scope(&caller)).await.map_err(|e| ApiError(e.into()))?;
    Ok(Json(artifact.into()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct KeyParams {
    /// The tenant whose key: an unscoped token's choice (`default` when absent); a scoped
    /// token's own tenant only.
    tenant: Option<String>,
}

pub async fn signing_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<KeyParams>,
) -> ApiResult<Json<SigningKey>> {
    let tenant = acting_tenant(&caller, params.tenant.as_deref())?;
    let key = state.rollouts.artifacts().public_key(tenant.as_str()).map_err(|e| ApiError(e.into()))?;
    Ok(Json(SigningKey { tenant, algorithm: "ed25519", public_key: key }))
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
