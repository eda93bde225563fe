//! The inventory as CSV: `GET /api/v1/devices` with `Accept: text/csv` exports every device
//! matching the filter (all pages), and `POST /api/v1/devices/import` registers devices from a
//! CSV file, with `?dry_run=true` for a preview. Each rejected line is reported with its reason;
//! the accepted ones are registered even when others are not.
//!
//! Columns: `id,profile,site,tenant,tags,attributes`. Tags are separated by `;`, attributes are
//! a JSON object. The header line names the columns (any order; only `id` is required).

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::openapi::{Api, Operation};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use corral_model::{DeviceId, TenantId};
use corral_registry::{Device, DeviceFilter, NewDevice};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const TAG: &str = "devices";

pub(crate) fn routes(api: Api) -> Api {
    api.post(
        "/api/v1/devices/import",
        import,
        Operation::new(TAG, "Registers devices from a CSV file")
            .describe(
                "The first line names the columns (any order, any case): `id` (required), `profile`, `site`, \
                 `tenant`, `tags` (separated by `;`), `attributes` (a JSON object); `status` and `last_seen`, \
                 as an export writes them, are accepted and ignored. At most 10000 devices per file. Each \
                 line is registered on its own: the answer lists the lines accepted (with each new device's \
                 token, shown only this once) and those rejected with the reason, and the accepted ones are \
                 registered even when others are not. With `dry_run=true` nothing is registered: the answer \
                 previews what would be. Operators and admins only, even for a preview.",
            )
            .query::<ImportParams>()
            .raw_body("text/csv", "The devices, one per line after the header line (RFC 4180 quoting)")
            .returns::<DeviceImport>(200, "What was registered (or would be) and what was not"),
    )
}

/// The outcome of an import: every line after the header is accepted or rejected.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceImport {
    /// True for a preview: nothing was registered.
    dry_run: bool,
    accepted: Vec<DeviceImportAccepted>,
    rejected: Vec<DeviceImportRejected>,
}

/// A line whose device was registered, or in a preview would be.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DeviceImportAccepted {
    /// Registered (not a preview).
    Registered {
        /// The line of the file it starts on (counting from 1).
        line: usize,
        id: DeviceId,
        /// The new device's token: shown only this once.
        token: String,
    },
    /// Would be registered (a preview).
    Previewed {
        /// The line of the file it starts on (counting from 1).
        line: usize,
        id: DeviceId,
        profile: Option<String>,
        site: Option<String>,
        /// The tenant given on the line; null: the caller's scope, or `default`.
        tenant: Option<TenantId>,
    },
}

/// A line that was not registered (or in a preview would not be), and why.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DeviceImportRejected {
    /// The line of the file it starts on (counting from 1).
    line: usize,
    /// The line's first field (its id when `id` is the first column).
    id: Option<String>,
    /// Why it was not registered.
    error: String,
}

pub const COLUMNS: [&str; 8] = ["id", "profile", "site", "tenant", "tags", "attributes", "status", "last_seen"];
/// Lines one import may hold: enough for a fleet's spreadsheet, bounded for the request.
const MAX_IMPORT_LINES: usize = 10_000;

/// Every matching device as CSV (the filter's pages walked to the end).
pub async fn export(state: &AppState, caller: &corral_registry::Principal, filter: DeviceFilter) -> ApiResult<Response> {
    let mut out = String::new();
    push_line(&mut out, COLUMNS.iter().map(|c| c.to_string()));
    // Offset pages whatever the order (with an offset the registry always pages by offset).
    let mut page_filter = DeviceFilter { limit: Some(1000), after: None, offset: Some(0), ..filter };
    loop {
        let page = state.registry.list_devices(caller, &page_filter).await?;
        for d in &page.devices {
            push_line(&mut out, row(d));
        }
        match page.next.and_then(|next| next.parse::<u32>().ok()) {
            Some(offset) if page_filter.offset.is_some_and(|o| offset > o) => page_filter.offset = Some(offset),
            _ => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"devices.csv\""),
        ],
        out,
    )
        .into_response())
}

fn row(d: &Device) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.profile.clone().unwrap_or_default(),
        d.site.clone().unwrap_or_default(),
        d.tenant.to_string(),
        d.tags.join(";"),
        if d.attributes.is_empty() { String::new() } else { Value::Object(d.attributes.clone()).to_string() },
        d.status.to_string(),
        d.last_seen.map(|t| t.to_rfc3339()).unwrap_or_default(),
    ]
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`,
/// which spreadsheets show as text; [`unescape`] takes it off again on import.
fn escape_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@']) { format!("'{cell}") } else { cell }
}

fn unescape(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest,
        _ => cell,
    }
}

fn push_line(out: &mut String, cells: impl IntoIterator<Item = String>) {
    for (i, cell) in cells.into_iter().map(escape_formula).enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
}

/// Splits CSV text into records of fields (RFC 4180: quoted fields, doubled quotes, CRLF or LF).
/// Returns each record with the line it starts on.
pub fn parse(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut start) = (false, 1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((start, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field is not closed"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((start, record));
    }
    Ok(records)
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ImportParams {
    /// Preview only: check every line and answer what would be registered, registering nothing.
    #[serde(default)]
    dry_run: bool,
}

/// One CSV record as a device to register, or why it cannot be one.
fn new_device(header: &[String], fields: &[String]) -> Result<NewDevice, String> {
    if fields.len() != header.len() {
        return Err(format!("{} fields, the header has {}", fields.len(), header.len()));
    }
    let get = |name: &str| header.iter().position(|h| h == name).map(|i| unescape(fields[i].trim())).filter(|v| !v.is_empty());
    let id = DeviceId::new(get("id").ok_or("id is empty")?).map_err(|e| format!("id: {e}"))?;
    let mut new = NewDevice::new(id);
    new.profile = get("profile").map(str::to_string);
    new.site = get("site").map(str::to_string);
    new.tenant = get("tenant").map(TenantId::new).transpose().map_err(|e| format!("tenant: {e}"))?;
    new.tags = get("tags").map(|t| t.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    new.attributes = match get("attributes") {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => return Err("attributes: not a JSON object".into()),
        },
    };
    Ok(new)
}

pub async fn import(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ImportParams>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<DeviceImport>> {
    // A preview promises what the import would do: only for those who may import.
    if !caller.can_write() {
        return Err(ApiError::forbidden(format!("role {} may only read; importing registers devices", caller.role)));
    }
    let body = body?;
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::bad_input(format!("the file is not UTF-8 text: {e}")))?;
    let records = parse(text).map_err(ApiError::bad_input)?;
    let Some(((_, header), lines)) = records.split_first() else {
        return Err(ApiError::bad_input(
            "the file is empty; the first line names the columns (id,profile,site,tenant,tags,attributes)",
        ));
    };
    if lines.len() > MAX_IMPORT_LINES {
        return Err(ApiError::bad_input(format!("{} devices in one file; at most {MAX_IMPORT_LINES}", lines.len())));
    }
    let header: Vec<String> = header.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    if let Some(unknown) = header.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        return Err(ApiError::bad_input(format!(
            "unknown column {unknown:?}; columns are id,profile,site,tenant,tags,attributes"
        )));
    }
    if !header.iter().any(|h| h == "id") {
        return Err(ApiError::bad_input("no id column"));
    }
    let (mut accepted, mut rejected, mut seen) = (Vec::new(), Vec::new(), std::collections::HashSet::new());
    let reject = |line: usize, id: Option<String>, error: String| DeviceImportRejected { line, id, error };
    for (line, fields) in lines {
        let line = *line;
        let new = match new_device(&header, fields) {
            Ok(new) => new,
            Err(why) => {
                rejected.push(reject(line, fields.first().cloned(), why));
                continue;
            }
        };
        let id = new.id.to_string();
        if !seen.insert(id.clone()) {
            rejected.push(reject(line, Some(id), "the same id is on an earlier line".into()));
            continue;
        }
        if params.dry_run {
            // A preview checks what it can without writing: the id must be free and visible.
            match state.registry.get_device(&corral_registry::Principal::system(), &id).await {
                Ok(_) => rejected.push(reject(line, Some(id.clone()), format!("device {id} already exists"))),
                Err(_) => accepted.push(DeviceImportAccepted::Previewed {
                    line,
                    id: new.id,
                    profile: new.profile,
                    site: new.site,
                    tenant: new.tenant,
                }),
            }
            continue;
        }
        match state.registry.create_device(&caller, new).await {
            Ok((device, token)) => accepted.push(DeviceImportAccepted::Registered { line, id: device.id, token }),
            Err(e) => rejected.push(reject(line, Some(id), e.to_wire().message)),
        }
    }
    Ok(Json(DeviceImport { dry_run: params.dry_run, accepted, rejected }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_doubled_quotes_and_line_breaks_inside_fields() {
        let text = "id,attributes\r\nmeter-1,\"{\"\"model\"\": \"\"X, 2\"\"}\"\nmeter-2,\"two\nlines\"\n\nmeter-3,";
        let records = parse(text).unwrap();
        assert_eq!(records[1], (2, vec!["meter-1".to_string(), r#"{"model": "X, 2"}"#.to_string()]));
        assert_eq!(records[2], (3, vec!["meter-2".to_string(), "two\nlines".to_string()]));
        assert_eq!(records[3], (6, vec!["meter-3".to_string(), String::new()]));
        assert!(parse("id\n\"open").unwrap_err().contains("line 2"));
    }

    #[test]
    fn export_quotes_what_needs_it_and_import_reads_it_back() {
        let mut out = String::new();
        push_line(&mut out, ["a,b".to_string(), "say \"hi\"".to_string(), "plain".to_string(), "=cmd()".to_string()]);
        assert_eq!(out, "\"a,b\",\"say \"\"hi\"\"\",plain,'=cmd()\r\n");
        assert_eq!(parse(&out).unwrap()[0].1, ["a,b", "say \"hi\"", "plain", "'=cmd()"]);
        let header: Vec<String> = ["id", "site"].map(String::from).to_vec();
        let back = new_device(&header, &["-pump".into(), "'=cmd()".into()]).unwrap();
        assert_eq!(back.site.as_deref(), Some("=cmd()"), "a spreadsheet-safe export imports back as it was");
    }

    #[test]
    fn rows_become_devices_or_say_why_not() {
        let header: Vec<String> = ["id", "tags", "attributes"].map(String::from).to_vec();
        let ok = new_device(&header, &["m-1".into(), "a; b".into(), r#"{"k": 1}"#.into()]).unwrap();
        assert_eq!(ok.tags, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(new_device(&header, &["m 1".into(), "".into(), "".into()]).unwrap_err().split(':').next(), Some("id"));
        assert_eq!(new_device(&header, &["m-2".into(), "".into(), "[1]".into()]).unwrap_err(), "attributes: not a JSON object");
        assert_eq!(new_device(&header, &["m-3".into()]).unwrap_err(), "1 fields, the header has 3");
    }
}
