//! The resources (the contract's CoAP paths) and the request-level rules around them: critical
//! options, the device token, content formats, Block1 bodies and Block2 answers.
//!
//! | path | method | what |
//! |---|---|---|
//! | `devices/<id>/telemetry[/<table>]?t=<token>` | POST | telemetry; 2.04 once durable |
//! | `devices/<id>/commands?t=<token>` | GET | the oldest waiting command; with Observe 0, register for them |
//! | `devices/<id>/commands/<command-id>/response?t=<token>` | POST | the device's answer to a command |
//! | `devices/<id>/twin?t=<token>` | GET, FETCH | the whole twin; FETCH with `{"since": N}` the desired changes since version N |
//! | `devices/<id>/twin/desired?t=<token>` | GET | `{"version", "desired"}`; with Observe 0, register for every change ([`crate::twins`]) |
//! | `devices/<id>/twin/reported?t=<token>` | PATCH, iPATCH, POST | an RFC 7386 merge patch of reported; 2.04 once durable |
//! | `devices/<id>/twin/get?t=<token>` | POST, FETCH | `{}` or empty: the whole twin; `{"since": N}`: the desired changes since N |
//! | `devices/<id>/artifacts/<artifact-id>?t=<token>` | GET | a firmware artifact of the device's tenant, block-wise (Block2, [`crate::artifacts`]) |
//! | `.well-known/core` | GET | these resources in CoRE link format (RFC 6690) |

use crate::block::Block;
use crate::blockwise::Upload;
use crate::hooks::{Credential, Speaker};
use crate::message::{Code, Kind, Message, encode_uint, option};
use crate::server::Shared;
use corral_ingest::decode::TelemetryFormat;
use corral_model::{DeviceId, Door, Envelope, ErrorKind, TableName, WireError};
use corral_services::{Caller, CommandResponse};
use std::net::SocketAddr;
use std::sync::Arc;

/// Content-Format numbers this server writes (RFC 7252 §12.3).
const LINK_FORMAT: u32 = 40;
const JSON: u32 = 50;
/// `application/merge-patch+json` (RFC 8132 §6).
const MERGE_PATCH_JSON: u32 = 52;

/// A response before it becomes a message (piggybacked, separate or Non-confirmable).
#[derive(Debug)]
pub struct Response {
    pub code: Code,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// What starts once the response is sent.
    pub then: Option<Then>,
}

/// Work a registration answer lets start, once it is sent (notifications must follow it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// The device's observation of its commands was registered and commands wait for it.
    DeliverCommands(String),
    /// The device's observation of its desired document (this generation) was answered.
    PushDesired(DeviceId, u64),
}

impl Response {
    fn new(code: Code) -> Response {
        Response { code, options: Vec::new(), payload: Vec::new(), then: None }
    }

    /// 2.05 with a JSON body.
    pub fn content(json: Vec<u8>) -> Response {
        let mut response = Response::new(Code::CONTENT);
        response.options.push((option::CONTENT_FORMAT, encode_uint(JSON)));
        response.payload = json;
        response
    }

    /// An error with its reason as the diagnostic payload (RFC 7252 §5.5.2).
    pub(crate) fn error(code: Code, why: impl Into<String>) -> Response {
        Response { payload: why.into().into_bytes(), ..Response::new(code) }
    }

    fn with_uint(mut self, number: u16, value: u32) -> Response {
        self.options.push((number, encode_uint(value)));
        self
    }

    pub fn message(&self, kind: Kind, message_id: u16, token: Vec<u8>) -> Message {
        let mut message = Message::new(kind, self.code, message_id, token);
        for (number, value) in &self.options {
            message.add_option(*number, value.clone());
        }
        message.payload = self.payload.clone();
        message
    }
}

impl From<WireError> for Response {
    fn from(e: WireError) -> Response {
        let code = match e.kind {
            ErrorKind::BadInput | ErrorKind::Conflict => Code::BAD_REQUEST,
            ErrorKind::Unauthenticated => Code::UNAUTHORIZED,
            ErrorKind::Forbidden => Code::FORBIDDEN,
            ErrorKind::NotFound => Code::NOT_FOUND,
            ErrorKind::TooLarge => Code::REQUEST_ENTITY_TOO_LARGE,
            ErrorKind::Unavailable => Code::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => Code::INTERNAL_SERVER_ERROR,
        };
        let response = Response::error(code, e.message);
        // Tells the device when to retry (RFC 7252 §5.9.3.4).
        if code == Code::SERVICE_UNAVAILABLE { response.with_uint(option::MAX_AGE, 5) } else { response }
    }
}

/// Answers one request (never fails: every problem is a response code).
pub(crate) async fn respond(shared: &Arc<Shared>, peer: SocketAddr, request: Message) -> Response {
    let block2 = request.option(option::BLOCK2).map(Block::parse);
    if let Some(None) = block2 {
        return Response::error(Code::BAD_OPTION, "invalid Block2 option");
    }
    let path = match request.options_of(option::URI_PATH).map(std::str::from_utf8).collect::<Result<Vec<_>, _>>() {
        Ok(path) => path,
        Err(_) => return Response::error(Code::BAD_REQUEST, "Uri-Path is not UTF-8"),
    };
    let key = path.join("/");
    let response = match route(shared, peer, &request, &path, &key).await {
        Ok(response) => response,
        Err(response) => response,
    };
    cut_blocks(shared, peer, &key, block2.flatten(), response)
}

async fn route(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    request: &Message,
    path: &[&str],
    key: &str,
) -> Result<Response, Response> {
    if let Some((number, _)) = request.options.iter().find(|(n, _)| !option::is_understood(*n)) {
        return Err(Response::error(Code::BAD_OPTION, format!("unknown critical option {number}")));
    }
    let method = request.code;
    match path {
        [".well-known", "core"] if method == Code::GET => Ok(discovery()),
        ["devices", device, "telemetry", table @ ..] if table.len() <= 1 => {
            allow(method, &[Code::POST])?;
            let speaker = authorize(shared, peer, request, device).await?;
            let (body, block1) = body(shared, peer, request, key, &speaker)?;
            telemetry(shared, request, &speaker, table.first().copied(), &body).await.map(|r| with_block1(r, block1))
        }
        ["devices", device, "commands"] => {
            allow(method, &[Code::GET])?;
            let speaker = authorize(shared, peer, request, device).await?;
            commands(shared, peer, request, &speaker)
        }
        ["devices", device, "commands", command_id, "response"] => {
            allow(method, &[Code::POST])?;
            let speaker = authorize(shared, peer, request, device).await?;
            let (body, block1) = body(shared, peer, request, key, &speaker)?;
            command_response(shared, &speaker, command_id, body).await.map(|r| with_block1(r, block1))
        }
        ["devices", device, "twin", "desired"] => {
            allow(method, &[Code::GET])?;
            let speaker = authorize(shared, peer, request, device).await?;
            crate::twins::get(shared, peer, request, &speaker).await
        }
        ["devices", device, "twin", "reported"] => {
            allow(method, &[Code::PATCH, Code::IPATCH, Code::POST])?;
            let speaker = authorize(shared, peer, request, device).await?;
            let (body, block1) = body(shared, peer, request, key, &speaker)?;
            twin_reported(shared, request, &speaker, &body).await.map(|r| with_block1(r, block1))
        }
        // The whole twin, or with a `{"since": N}` body the desired changes since N: FETCH on the
        // twin, or POST on `twin/get` for clients without FETCH (as MQTT's `twin/get` topic).
        ["devices", device, "twin"] | ["devices", device, "twin", "get"] => {
            let methods: &[Code] = if path.len() == 3 { &[Code::GET, Code::FETCH] } else { &[Code::POST, Code::FETCH] };
            allow(method, methods)?;
            let speaker = authorize(shared, peer, request, device).await?;
            let (body, block1) = body(shared, peer, request, key, &speaker)?;
            twin_get(shared, request, &speaker, &body).await.map(|r| with_block1(r, block1))
        }
        ["devices", device, "artifacts", artifact] => {
            allow(method, &[Code::GET])?;
            let speaker = authorize(shared, peer, request, device).await?;
            crate::artifacts::get(shared, request, &speaker, artifact).await
        }
        _ => Err(Response::error(Code::NOT_FOUND, "no such resource; see /.well-known/core")),
    }
}

fn allow(method: Code, allowed: &[Code]) -> Result<(), Response> {
    if allowed.contains(&method) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|c| method_name(*c)).collect();
    let names = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    };
    Err(Response::error(Code::METHOD_NOT_ALLOWED, format!("only {names} here")))
}

fn method_name(code: Code) -> &'static str {
    match code {
        Code::GET => "GET",
        Code::POST => "POST",
        Code::PUT => "PUT",
        Code::DELETE => "DELETE",
        Code::FETCH => "FETCH",
        Code::PATCH => "PATCH",
        Code::IPATCH => "iPATCH",
        _ => "another method",
    }
}

/// Who the request speaks for: the device token in the `t` query parameter, or else the
/// device whose key opened the DTLS session it came on; checked for the device in the path.
async fn authorize(shared: &Shared, peer: SocketAddr, request: &Message, device: &str) -> Result<Speaker, Response> {
    let token =
        request.options_of(option::URI_QUERY).filter_map(|q| std::str::from_utf8(q).ok()).find_map(|q| q.strip_prefix("t="));
    let session = shared.transport.device_of(peer);
    let credential = match (token, &session) {
        (Some(token), _) => Credential::Token(token),
        (None, Some(device)) => Credential::Session(device),
        (None, None) => {
            return Err(Response::error(
                Code::UNAUTHORIZED,
                "add the device token as ?t=<token>, or use coaps with the device's pre-shared key",
            ));
        }
    };
    let speaker = speaker(shared, credential, device).await.map_err(Response::from)?;
    shared.commands.used_by(device);
    Ok(speaker)
}

/// The device `credential` speaks for when it names `device` (its own, or a child of that
/// gateway), counted as heard from.
async fn speaker(shared: &Shared, credential: Credential<'_>, device: &str) -> Result<Speaker, WireError> {
    let (proof, whose) = match credential {
        Credential::Token(token) => (corral_services::Credential::DeviceToken(token), "the token of"),
        // The session proved the key; the device may have left active since.
        Credential::Session(identity) => (corral_services::Credential::PskSession(identity), "the DTLS session of"),
    };
    let Caller::Device(caller) = shared.identity.authenticate(proof).await? else {
        return Err(WireError::new(ErrorKind::Unauthenticated, "not a device credential"));
    };
    let Some(speaker) = shared.identity.speaks_for(&caller, device).await? else {
        return Err(WireError::new(ErrorKind::Forbidden, format!("{whose} {} may not speak for {device}", caller.id)));
    };
    shared.identity.heard_from(&speaker.id, chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    Ok(Speaker { device: speaker.id, tenant: speaker.tenant })
}

/// The request body, whole: at once, or assembled from Block1 blocks (with the last block, to
/// echo). A block that is not the last is answered with 2.31 Continue, as an `Err`.
fn body(
    shared: &Shared,
    peer: SocketAddr,
    request: &Message,
    key: &str,
    speaker: &Speaker,
) -> Result<(Vec<u8>, Option<Block>), Response> {
    let max = shared.config.max_body_bytes;
    let too_large =
        || Response::error(Code::REQUEST_ENTITY_TOO_LARGE, format!("body over {max} bytes")).with_uint(option::SIZE1, max as u32);
    let Some(block1) = request.option(option::BLOCK1) else {
        return if request.payload.len() > max { Err(too_large()) } else { Ok((request.payload.clone(), None)) };
    };
    let block = Block::parse(block1).ok_or_else(|| Response::error(Code::BAD_OPTION, "invalid Block1 option"))?;
    let size1 = request.uint(option::SIZE1).map_err(|_| Response::error(Code::BAD_OPTION, "invalid Size1 option"))?;
    match shared.blockwise.upload(peer, key, speaker, block, &request.payload, size1) {
        Upload::Continue(answer) => {
            let mut response = Response::new(Code::CONTINUE);
            response.options.push((option::BLOCK1, answer.encode()));
            Err(response)
        }
        Upload::Complete(body, last) => Ok((body, Some(last))),
        Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, _) => Err(too_large()),
        Upload::Refused(code, why) => Err(Response::error(code, why)),
    }
}

fn with_block1(mut response: Response, block1: Option<Block>) -> Response {
    if let Some(block) = block1 {
        response.options.push((option::BLOCK1, block.encode()));
    }
    response
}

async fn telemetry(
    shared: &Shared,
    request: &Message,
    speaker: &Speaker,
    table: Option<&str>,
    body: &[u8],
) -> Result<Response, Response> {
    let format = match request.uint(option::CONTENT_FORMAT) {
        Ok(None) => TelemetryFormat::Json,
        Ok(Some(n)) => u16::try_from(n).ok().and_then(TelemetryFormat::from_coap_content_format).ok_or_else(|| {
            Response::error(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                format!("content format {n} is not telemetry; send JSON (50), CBOR (60), SenML JSON (110) or SenML CBOR (112)"),
            )
        })?,
        Err(_) => return Err(Response::error(Code::BAD_OPTION, "invalid Content-Format option")),
    };
    let table = match table {
        Some(t) => TableName::new(t).map_err(|e| Response::error(Code::BAD_REQUEST, format!("table in path: {e}")))?,
        None => TableName::telemetry(),
    };
    let received_at_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let batch = format.decode(body, speaker.device.as_str(), &table, received_at_ns, &shared.limits)?;
    let envelope = Envelope { device: speaker.device.clone(), tenant: speaker.tenant.clone(), door: Door::Coap, received_at_ns };
    shared.sink.submit(&envelope, vec![batch]).await?;
    Ok(Response::new(Code::CHANGED))
}

fn commands(shared: &Shared, peer: SocketAddr, request: &Message, speaker: &Speaker) -> Result<Response, Response> {
    let device = speaker.device.as_str();
    let observe = request.uint(option::OBSERVE).map_err(|_| Response::error(Code::BAD_OPTION, "invalid Observe option"))?;
    match observe {
        // Registration: the answer is empty; each waiting command follows as its own
        // Confirmable notification, so its delivery is known.
        Some(0) => {
            if let Some(start) = shared.commands.observe(device, speaker.tenant.as_str(), peer, request.token.clone()) {
                // Whoever keeps commands for it (the tracker) hands over those still waiting.
                shared.command_service.ready(speaker.device.clone(), Door::Coap);
                let mut response = Response::new(Code::CONTENT).with_uint(option::OBSERVE, 1);
                response.then = start.then(|| Then::DeliverCommands(device.to_string()));
                return Ok(response);
            }
            // Too many observers: answered like a plain GET, without Observe (not registered).
        }
        Some(1) => shared.commands.cancel(device, peer, &request.token),
        _ => {}
    }
    Ok(match shared.commands.oldest(device) {
        Some(command) => Response::content(command.representation.to_vec()),
        None => Response::new(Code::CONTENT),
    })
}

async fn command_response(shared: &Shared, speaker: &Speaker, command_id: &str, body: Vec<u8>) -> Result<Response, Response> {
    if command_id.is_empty() || command_id.contains(['+', '#']) {
        return Err(Response::error(Code::BAD_REQUEST, "command id must be non-empty without + or #"));
    }
    let response = CommandResponse {
        device: speaker.device.clone(),
        tenant: Some(speaker.tenant.clone()),
        id: command_id.to_string(),
        payload: body.into(),
        from: Some(Door::Coap),
    };
    shared.command_service.respond(response).await?;
    shared.commands.done(speaker.device.as_str(), command_id);
    Ok(Response::new(Code::CHANGED))
}

/// A twin body is JSON: `accepted` content formats, or none said.
fn json_body(request: &Message, accepted: &[u32]) -> Result<(), Response> {
    match request.uint(option::CONTENT_FORMAT) {
        Ok(None) => Ok(()),
        Ok(Some(n)) if accepted.contains(&n) => Ok(()),
        Ok(Some(n)) => {
            let names = if accepted.contains(&MERGE_PATCH_JSON) { "JSON (50) or merge-patch+json (52)" } else { "JSON (50)" };
            Err(Response::error(Code::UNSUPPORTED_CONTENT_FORMAT, format!("content format {n}: send {names}")))
        }
        Err(_) => Err(Response::error(Code::BAD_OPTION, "invalid Content-Format option")),
    }
}

/// A reported merge patch: 2.04 only once the twin store made it durable.
async fn twin_reported(shared: &Shared, request: &Message, speaker: &Speaker, body: &[u8]) -> Result<Response, Response> {
    json_body(request, &[JSON, MERGE_PATCH_JSON])?;
    shared.twin_service.report(&speaker.device, body).await?;
    Ok(Response::new(Code::CHANGED))
}

/// The whole twin (empty body or `{}`), or the desired changes since `{"since": N}`.
async fn twin_get(shared: &Shared, request: &Message, speaker: &Speaker, body: &[u8]) -> Result<Response, Response> {
    json_body(request, &[JSON])?;
    let answer = shared.twin_service.get(&speaker.device, body).await?;
    Ok(Response::content(answer.to_vec()))
}

fn discovery() -> Response {
    let links = concat!(
        "</devices/{id}/telemetry>;rt=\"corral.telemetry\";ct=\"50 60 110 112\";title=\"POST ?t=<device token>; /telemetry/<table> names a table\",",
        "</devices/{id}/commands>;rt=\"corral.commands\";obs;ct=50;title=\"GET with Observe ?t=<device token>\",",
        "</devices/{id}/twin>;rt=\"corral.twin\";ct=50;title=\"GET the whole twin; FETCH {since: N} for desired changes\",",
        "</devices/{id}/twin/desired>;rt=\"corral.twin.desired\";obs;ct=50;title=\"GET with Observe: the desired document on every change\",",
        "</devices/{id}/twin/reported>;rt=\"corral.twin.reported\";ct=\"50 52\";title=\"PATCH, iPATCH or POST a merge patch\",",
        "</devices/{id}/twin/get>;rt=\"corral.twin.get\";ct=50;title=\"POST or FETCH {} or {since: N}\",",
        "</devices/{id}/artifacts/{artifact-id}>;rt=\"corral.artifact\";ct=42;title=\"GET a firmware artifact block-wise (Block2)\""
    );
    let mut response = Response::new(Code::CONTENT).with_uint(option::CONTENT_FORMAT, LINK_FORMAT);
    response.payload = links.as_bytes().to_vec();
    response
}

/// Cuts a response into Block2 blocks when the client asked for a block, or when it is larger
/// than one block (RFC 7959 §2.4); later blocks come from the same representation.
pub(crate) fn cut_blocks(shared: &Shared, peer: SocketAddr, key: &str, asked: Option<Block>, mut response: Response) -> Response {
    if response.options.iter().any(|(number, _)| *number == option::BLOCK2) {
        return response; // the resource cut its own block (firmware artifacts)
    }
    let block_bytes = shared.blockwise.block_bytes();
    let (num, szx) = match asked {
        Some(block) => (block.num, block.szx),
        None if response.payload.len() > block_bytes => (0, shared.blockwise.szx()),
        None => return response,
    };
    if !(response.code == Code::CONTENT || response.code == Code::CHANGED) {
        return response; // errors stay whole: their diagnostic payloads are short
    }
    let total = response.payload.len();
    let body = std::mem::take(&mut response.payload);
    let Some((block, bytes, etag)) = shared.blockwise.download(peer, key, body, num, szx) else {
        return Response::error(Code::BAD_OPTION, format!("block {num} is past the end of the representation"));
    };
    response.payload = bytes;
    response.options.push((option::BLOCK2, block.encode()));
    response.options.push((option::ETAG, etag.to_vec()));
    if num == 0 {
        response.options.push((option::SIZE2, encode_uint(total as u32)));
    }
    response
}
