//! JSON Schemas for wire shapes that have no Rust type of their own, for the request and response
//! types' `#[schemars(with = ...)]` (the OpenAPI document is generated from those derives).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// A time on the wire: RFC 3339, UTC (`2026-01-02T03:04:05.678Z`).
pub struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// An optional time on the wire: RFC 3339 or `null`.
pub struct Rfc3339OrNull;

impl JsonSchema for Rfc3339OrNull {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Rfc3339OrNull".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "null"], "format": "date-time" })
    }
}
