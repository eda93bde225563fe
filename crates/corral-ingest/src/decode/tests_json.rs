//! Golden cases for [`decode_json`], one per rule in the module docs.

use super::{Limits, decode_json};
use corral_model::{Batch, ErrorKind, FieldValue, Row, TableName};

const NOW: i64 = 1_795_255_200_000_000_000; // 2026-11-21T10:00:00Z

fn decode(body: &str) -> Batch {
    decode_json(body.as_bytes(), "truck-7", &TableName::telemetry(), NOW, &Limits::default())
        .unwrap_or_else(|e| panic!("{body} should decode: {e}"))
}

fn error_with(body: &str, limits: &Limits) -> String {
    let err = decode_json(body.as_bytes(), "truck-7", &TableName::telemetry(), NOW, limits).expect_err(body);
    assert_eq!(err.kind, ErrorKind::BadInput, "{body}");
    err.message
}

fn error(body: &str) -> String {
    error_with(body, &Limits::default())
}

fn f(x: f64) -> FieldValue {
    FieldValue::Float(x)
}

fn s(x: &str) -> FieldValue {
    FieldValue::Str(x.into())
}

#[test]
fn contract_example_object() {
    let batch = decode(r#"{"ts": "2026-11-21T10:00:00Z", "temperature": 21.5, "door_open": false, "mode": "eco"}"#);
    assert_eq!(batch.table, TableName::telemetry());
    let expected = Row::new(NOW, "truck-7")
        .field("temperature", f(21.5))
        .field("door_open", FieldValue::Bool(false))
        .field("mode", s("eco"));
    assert_eq!(batch.rows, vec![expected]);
}

#[test]
fn array_of_objects_gives_one_row_each_in_order() {
    let table = TableName::new("engine").unwrap();
    let batch = decode_json(br#"[{"ts": 1000, "rpm": 3}, {"ts": 2000, "rpm": 3.5}]"#, "truck-7", &table, NOW, &Limits::default())
        .unwrap();
    assert_eq!(batch.table, table);
    assert_eq!(
        batch.rows,
        vec![Row::new(1_000_000_000, "truck-7").field("rpm", f(3.0)), Row::new(2_000_000_000, "truck-7").field("rpm", f(3.5)),]
    );
}

#[test]
fn numbers_are_always_float_and_fields_keep_document_order() {
    let batch = decode(r#"{"z": 3, "a": -7, "m": 18446744073709551615, "b": 1e3}"#);
    let names: Vec<_> = batch.rows[0].fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["z", "a", "m", "b"]);
    assert_eq!(batch.rows[0].fields[0].1, f(3.0));
    assert_eq!(batch.rows[0].fields[1].1, f(-7.0));
    assert_eq!(batch.rows[0].fields[3].1, f(1000.0));
}

#[test]
fn nested_objects_flatten_with_dots() {
    let batch = decode(r#"{"gps": {"lat": 1, "lon": 2.5, "fix": {"ok": true}}, "gps2": {}, "x": 0}"#);
    let expected = Row::new(NOW, "truck-7")
        .field("gps.lat", f(1.0))
        .field("gps.lon", f(2.5))
        .field("gps.fix.ok", FieldValue::Bool(true))
        .field("x", f(0.0));
    assert_eq!(batch.rows, vec![expected]);
}

#[test]
fn array_values_are_their_compact_json_text() {
    let batch = decode(r#"{"xs": [1, 2.5, "a", null, {"z": 1, "a": [true]}], "empty": [ ]}"#);
    assert_eq!(
        batch.rows[0].fields,
        vec![("xs".to_string(), s(r#"[1,2.5,"a",null,{"z":1,"a":[true]}]"#)), ("empty".to_string(), s("[]")),]
    );
}

#[test]
fn null_fields_are_omitted() {
    let batch = decode(r#"{"a": null, "b": 1, "c": {"d": null}}"#);
    assert_eq!(batch.rows, vec![Row::new(NOW, "truck-7").field("b", f(1.0))]);
}

#[test]
fn ts_string_with_offset_is_converted_to_utc() {
    let batch = decode(r#"{"ts": "2026-11-21T11:30:00.123456789+01:30", "v": 1}"#);
    assert_eq!(batch.rows[0].time_ns, NOW + 123_456_789);
    let batch = decode(r#"{"v": 1, "ts": "2026-11-21T05:00:00-05:00"}"#);
    assert_eq!(batch.rows[0].time_ns, NOW);
    assert_eq!(batch.rows[0].fields.len(), 1, "ts is not a field");
}

#[test]
fn ts_epoch_milliseconds_integer_and_fractional() {
    assert_eq!(decode(r#"{"ts": 1795255200000, "v": 1}"#).rows[0].time_ns, NOW);
    assert_eq!(decode(r#"{"ts": 1795255200000.5, "v": 1}"#).rows[0].time_ns, NOW + 500_000);
    assert_eq!(decode(r#"{"ts": 1795255200123.456, "v": 1}"#).rows[0].time_ns, NOW + 123_456_000);
    assert_eq!(decode(r#"{"ts": 1.7952552e12, "v": 1}"#).rows[0].time_ns, NOW);
    assert_eq!(decode(r#"{"ts": -1, "v": 1}"#).rows[0].time_ns, -1_000_000);
}

#[test]
fn missing_or_null_ts_uses_received_time() {
    assert_eq!(decode(r#"{"v": 1}"#).rows[0].time_ns, NOW);
    assert_eq!(decode(r#"{"ts": null, "v": 1}"#).rows[0].time_ns, NOW);
    // `ts` is only special at the top level.
    let batch = decode(r#"{"gps": {"ts": 5}}"#);
    assert_eq!(batch.rows, vec![Row::new(NOW, "truck-7").field("gps.ts", f(5.0))]);
}

#[test]
fn bad_ts_is_rejected() {
    assert!(
        error(r#"{"ts": "tomorrow", "v": 1}"#)
            .starts_with("message 1: \"ts\" is not a usable time: invalid RFC 3339 timestamp \"tomorrow\"")
    );
    assert_eq!(
        error(r#"[{"v": 1}, {"ts": true, "v": 1}]"#),
        "message 2: \"ts\" must be an RFC 3339 string or Unix epoch milliseconds, got a boolean"
    );
    for body in [
        r#"{"ts": 9300000000000, "v": 1}"#,
        r#"{"ts": 18446744073709551615, "v": 1}"#,
        r#"{"ts": -9300000000000.5, "v": 1}"#,
        r#"{"ts": "2263-01-01T00:00:00Z", "v": 1}"#,
    ] {
        assert!(error(body).contains("timestamp out of range"), "{body}");
    }
    assert_eq!(error(r#"{"ts": 1, "ts": 2, "v": 1}"#), "message 1: \"ts\" appears more than once");
}

#[test]
fn reserved_names_are_rejected() {
    assert!(error(r#"{"time": 1}"#).starts_with("message 1: field \"time\": name is reserved"));
    assert!(error(r#"[{"a": 1}, {"device": "x"}]"#).starts_with("message 2: field \"device\": name is reserved"));
    assert!(error(r#"{"time": null, "a": 1}"#).contains("reserved"));
    // Only the whole name is reserved.
    let batch = decode(r#"{"time": {"zone": "utc"}, "device_temp": 40}"#);
    assert_eq!(batch.rows[0].fields[0].0, "time.zone");
    assert_eq!(batch.rows[0].fields[1].0, "device_temp");
}

#[test]
fn duplicate_names_after_flattening_are_rejected() {
    assert_eq!(
        error(r#"{"a.b": 1, "a": {"b": 2}}"#),
        "message 1: field \"a.b\": appears more than once (names must be unique after flattening)"
    );
    assert!(error(r#"{"a": 1, "a": 2}"#).starts_with("message 1: field \"a\": appears more"));
}

#[test]
fn empty_names_are_rejected() {
    assert_eq!(error(r#"{"": 1}"#), "message 1: empty field name");
    assert_eq!(error(r#"{"gps": {"": 1}}"#), "message 1: field \"gps.\": empty key in a nested object");
}

#[test]
fn non_object_elements_and_top_levels_are_rejected() {
    assert_eq!(error(r#"[{"a": 1}, 2]"#), "message 2: must be an object, got a number");
    assert_eq!(error(r#"[[{"a": 1}]]"#), "message 1: must be an object, got an array");
    assert_eq!(error(r#""hi""#), "body must be an object or an array of objects, got a string");
    assert_eq!(error("null"), "body must be an object or an array of objects, got null");
}

#[test]
fn empty_array_and_empty_messages_are_rejected() {
    assert_eq!(error("[]"), "body is an empty array: no messages");
    assert_eq!(error("{}"), "message 1 has no fields");
    assert_eq!(error(r#"[{"a": 1}, {"ts": 5}]"#), "message 2 has no fields");
    assert_eq!(error(r#"{"a": null, "b": {}}"#), "message 1 has no fields");
}

#[test]
fn malformed_json_names_line_and_column() {
    assert_eq!(error(r#"{"a": 1, "b": }"#), "invalid JSON at line 1 column 15: expected value");
    let msg = error("[\n  {\"a\": 1},\n  {\"b\": tru}\n]");
    assert!(msg.starts_with("invalid JSON at line 3 column "), "{msg}");
    assert_eq!(error(""), "invalid JSON at line 1 column 0: EOF while parsing a value");
    assert!(error(r#"{"a": 1} x"#).starts_with("invalid JSON at line 1 column 10: trailing"));
    assert!(error("{\"a\": \"\u{0}\"}").starts_with("invalid JSON at line 1"));
    let bad_utf8 = decode_json(b"{\"a\": \"\xff\"}", "d", &TableName::telemetry(), 0, &Limits::default());
    assert!(bad_utf8.unwrap_err().message.starts_with("invalid JSON at line 1"));
    assert!(error(r#"{"a": 1e999}"#).starts_with("invalid JSON at line 1 column "));
}

#[test]
fn limits_are_enforced_with_clear_messages() {
    let tight = Limits { max_fields_per_row: 2, max_rows: 2, max_string_bytes: 4, max_name_bytes: 5 };
    assert_eq!(error_with(r#"{"a": 1, "b": 2, "c": 3}"#, &tight), "message 1: over the limit of 2 fields per message");
    assert_eq!(error_with(r#"[{"a": 1}, {"a": 1}, {"a": 1}]"#, &tight), "body has 3 messages, over the limit of 2");
    assert_eq!(error_with(r#"{"a": "12345"}"#, &tight), "message 1: field \"a\": string value is 5 bytes, over the limit of 4");
    assert_eq!(error_with(r#"{"a": [1, 2, 3]}"#, &tight), "message 1: field \"a\": string value is 7 bytes, over the limit of 4");
    assert_eq!(
        error_with(r#"{"gps": {"lat": 1}}"#, &tight),
        "message 1: field \"gps.lat\": name is 7 bytes, over the limit of 5"
    );
    let at_limits = r#"[{"abcde": "1234", "b": [1]}, {"a": {"b": {"c": 1}}}]"#;
    assert!(decode_json(at_limits.as_bytes(), "d", &TableName::telemetry(), 0, &tight).is_ok());
    let long = "n".repeat(1000);
    let msg = error(&format!(r#"{{"{long}": 1}}"#));
    assert!(msg.ends_with("name is 1000 bytes, over the limit of 256") && msg.len() < 200, "{msg}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(error(&deep).contains("recursion limit exceeded"));
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert!(error(&deep).contains("recursion limit exceeded"));
    let ok = format!("{{\"v\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    assert_eq!(decode(&ok).rows[0].fields.len(), 1);
}
