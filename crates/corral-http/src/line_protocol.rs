//! InfluxDB line protocol at `POST /write` (v1) and `POST /api/v2/write` (v2), so Telegraf,
//! Node-RED and the Influx client libraries write to Corral unchanged.
//!
//! Credentials, as Influx clients send them: `Authorization: Token <t>` (v2), `Bearer <t>`,
//! HTTP basic auth with the token as password, or v1's `?u=&p=<t>`. The token may be:
//! - a **device token**: every line is that device's data (a `device` tag, if present, must name
//!   the same device);
//! - an **API token** of an operator or admin: each line names its device in the device tag
//!   (`device`, or the tag given by `?device_tag=`, e.g. `host` for Telegraf). A tenant-scoped
//!   token may only write for registered devices of its tenant.
//!
//! `db`, `rp`, `bucket` and `org` are accepted and ignored: each measurement is a table. The
//! answer is 204 once the data is durable; a bad line is a 400 naming it, and nothing of the
//! request is stored. `Content-Encoding: gzip` bodies are accepted.

use crate::AppState;
use crate::auth::bearer;
use crate::body::read_body;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::openapi::{Api, Auth, Operation};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use corral_ingest::decode::{Precision, decode_line_protocol};
use corral_model::{DeviceId, Door, Envelope, ErrorKind, TenantId};
use corral_registry::Principal;
use corral_services::{Caller, Credential, DeviceCaller};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::io::Read;

const TAG: &str = "ingest";

const WRITE: &str = "One point per line: `measurement[,tag=value...] field=value[,field=value...] [timestamp]`; each \
    measurement is a table. The credential is a device token (every line is that device's; a `device` tag, if \
    any, must name it), or an operator's or admin's API token (each line names its device in the device tag; a \
    tenant-scoped token only its tenant's registered devices), or on HTTPS a device's client certificate. It \
    may come as `Authorization: Token <t>` or `Bearer <t>`, as the password of HTTP basic auth, or as `p`. \
    All or nothing: a bad line is a 400 naming it, and nothing of the request is stored. The answer comes \
    once the data is durable. `db`, `rp`, `bucket` and `org` are accepted and ignored.";

pub(crate) fn routes(api: Api) -> Api {
    api.post("/write", write, write_operation("Stores InfluxDB line protocol (the InfluxDB v1 write API)")).post(
        "/api/v2/write",
        write,
        write_operation("Stores InfluxDB line protocol (the InfluxDB v2 write API)"),
    )
}

/// Both write APIs take the same request and answer alike.
fn write_operation(summary: &'static str) -> Operation {
    Operation::new(TAG, summary)
        .describe(WRITE)
        .auth(Auth::Influx)
        .query::<WriteParams>()
        .header("Content-Encoding", "`gzip` for a compressed body (the limit applies after decompression too)")
        .raw_body("text/plain", "InfluxDB line protocol, one point per line")
        .returns_nothing(204, "Stored durably (or the body held no point)")
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct WriteParams {
    /// The unit of the lines' timestamps: `ns` (default), `us`, `ms`, `s`, `m` or `h` (v1's `n`
    /// and `u` too).
    #[schemars(extend("enum" = ["", "n", "ns", "u", "us", "µ", "µs", "μ", "μs", "ms", "s", "m", "h"]))]
    precision: Option<String>,
    /// v1: the token may come as the password.
    p: Option<String>,
    /// The tag naming each line's device when an API token writes (default `device`).
    device_tag: Option<String>,
    /// v1: the user name; ignored.
    #[allow(dead_code)]
    u: Option<String>,
    /// v1: the database; ignored (each measurement is a table).
    #[allow(dead_code)]
    db: Option<String>,
    /// v1: the retention policy; ignored.
    #[allow(dead_code)]
    rp: Option<String>,
    /// v2: the bucket; ignored (each measurement is a table).
    #[allow(dead_code)]
    bucket: Option<String>,
    /// v2: the organisation; ignored.
    #[allow(dead_code)]
    org: Option<String>,
}

/// `POST /write` (v1) and `POST /api/v2/write` (v2): the same handler, since the two APIs differ
/// only in parameters Corral ignores (`db`/`rp` against `bucket`/`org`).
pub async fn write(
    State(state): State<AppState>,
    Query(params): Query<WriteParams>,
    certificate: Option<axum::Extension<crate::auth::ClientCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let writer = match (credentials(&params, &headers), certificate) {
        // No token at all, on an HTTPS connection with a client certificate: the device it names.
        (Err(_), Some(certificate)) => Writer::Device(crate::auth::device(&state, &headers, Some(&certificate)).await?),
        (token, _) => identify(&state, &token?).await?,
    };
    store(state, params, writer, headers, body).await
}

/// Who is writing: a device for itself, or an application for devices it may write for.
enum Writer {
    Device(DeviceCaller),
    App(Principal),
}

async fn store(state: AppState, params: WriteParams, writer: Writer, headers: HeaderMap, body: Body) -> ApiResult<StatusCode> {
    let precision = match params.precision.as_deref() {
        None | Some("") => Precision::Nanoseconds,
        Some(p) => Precision::parse(p)
            .ok_or_else(|| ApiError::bad_input(format!("precision {p:?} is not one of ns, us, ms, s, m, h")))?,
    };
    let device_tag = params.device_tag.as_deref().unwrap_or("device");
    let raw = read_body(body, state.limits.max_body_bytes).await?;
    let body = decompress(&headers, raw, state.limits.max_body_bytes)?;
    let received_at_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let own_device = match &writer {
        Writer::Device(d) => Some(d.id.as_str()),
        Writer::App(_) => None,
    };
    let batches = decode_line_protocol(&body, precision, received_at_ns, device_tag, own_device, &state.limits.decode)?;
    let devices: BTreeSet<String> = batches.iter().flat_map(|b| b.rows.iter().map(|r| r.device.clone())).collect();
    let Some(first) = devices.first() else { return Ok(StatusCode::NO_CONTENT) };
    let envelope = match &writer {
        Writer::Device(d) => {
            if let Some(other) = devices.iter().find(|id| id.as_str() != d.id.as_str()) {
                return Err(ApiError::forbidden(format!(
                    "this device token may only write device \"{}\"'s data, not \"{other}\"; nothing was stored",
                    d.id
                )));
            }
            Envelope { device: d.id.clone(), tenant: d.tenant.clone(), door: Door::LineProtocol, received_at_ns }
        }
        Writer::App(principal) => {
            if let Some(scope) = &principal.tenant {
                for id in &devices {
                    if state.registry.get_device(principal, id).await.is_err() {
                        return Err(ApiError::forbidden(format!(
                            "\"{id}\" is not a registered device of tenant \"{scope}\"; nothing was stored"
                        )));
                    }
                }
            }
            let tenant = principal.tenant.clone().unwrap_or_else(TenantId::default_tenant);
            Envelope { device: DeviceId::new(first.as_str())?, tenant, door: Door::LineProtocol, received_at_ns }
        }
    };
    state.sink.submit(&envelope, batches).await?;
    if matches!(writer, Writer::App(_)) {
        for id in devices.iter().skip(1).filter_map(|id| DeviceId::new(id.as_str()).ok()) {
            state.registry.touch(&id, chrono::DateTime::from_timestamp_nanos(received_at_ns));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The token from wherever an Influx client puts it.
fn credentials(params: &WriteParams, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(p) = params.p.as_deref().filter(|p| !p.is_empty()) {
        return Ok(p.to_string());
    }
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))
    {
        let decoded = base64_decode(encoded.trim())
            .ok_or_else(|| ApiError::unauthenticated("basic auth credentials are not valid base64"))?;
        let (_, password) = decoded.split_once(':').unwrap_or(("", decoded.as_str()));
        return Ok(password.to_string());
    }
    Ok(bearer(headers)?.to_string())
}

async fn identify(state: &AppState, token: &str) -> ApiResult<Writer> {
    match state.identity.authenticate(Credential::DeviceToken(token)).await {
        Ok(Caller::Device(device)) => return Ok(Writer::Device(device)),
        Ok(Caller::Application(_)) => {}
        Err(e) if e.kind != ErrorKind::Unauthenticated => return Err(e.into()),
        Err(_) => {}
    }
    let principal = state.registry.authenticate_api(token).await?;
    if !principal.can_write() {
        return Err(ApiError::forbidden("a viewer token cannot write; use a device token or an operator token"));
    }
    Ok(Writer::App(principal))
}

/// gzip bodies, bounded after decompression too (a small bomb must not become gigabytes).
fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> ApiResult<Bytes> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(raw),
        "gzip" => {
            let mut out = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            decoder
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_input(format!("gzip body could not be decompressed: {e}")))?;
            if out.len() > limit {
                return Err(ApiError::new(
                    ErrorKind::TooLarge,
                    format!("decompressed body is larger than the limit of {limit} bytes; nothing was stored"),
                ));
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::new(ErrorKind::BadInput, format!("Content-Encoding {other:?} is not supported (use gzip)"))),
    }
}

fn base64_decode(text: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_decodes() {
        assert_eq!(super::base64_decode("dXNlcjpzZWNyZXQ=").as_deref(), Some("user:secret"));
        assert_eq!(super::base64_decode("!!"), None);
    }
}
