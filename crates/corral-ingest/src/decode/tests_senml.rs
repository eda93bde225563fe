//! Golden cases for [`decode_senml_json`], one per rule in the module docs.

use super::{Limits, decode_senml_json};
use corral_model::{Batch, ErrorKind, FieldValue, Row, TableName};

const NOW: i64 = 1_795_255_200_000_000_000; // 2026-11-21T10:00:00Z
const SEC: i64 = 1_000_000_000;

fn decode(body: &str) -> Batch {
    decode_senml_json(body.as_bytes(), "meter-1", &TableName::telemetry(), NOW, &Limits::default())
        .unwrap_or_else(|e| panic!("{body} should decode: {e}"))
}

fn error_with(body: &str, limits: &Limits) -> String {
    let err = decode_senml_json(body.as_bytes(), "meter-1", &TableName::telemetry(), NOW, limits).expect_err(body);
    assert_eq!(err.kind, ErrorKind::BadInput, "{body}");
    err.message
}

fn error(body: &str) -> String {
    error_with(body, &Limits::default())
}

fn f(x: f64) -> FieldValue {
    FieldValue::Float(x)
}

#[test]
fn rfc8428_5_1_2_multiple_data_points_resolved() {
    let pack = r#"[
        {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,
         "bu":"A","bver":5,
         "n":"voltage","u":"V","v":120.1},
        {"n":"current","t":-5,"v":1.2},
        {"n":"current","t":-4,"v":1.3},
        {"n":"current","t":-3,"v":1.4},
        {"n":"current","t":-2,"v":1.5},
        {"n":"current","t":-1,"v":1.6},
        {"n":"current","v":1.7}
    ]"#;
    let bt = 1_276_020_076_001_000_000;
    let voltage = "urn:dev:ow:10e2073a01080063:voltage";
    let current = "urn:dev:ow:10e2073a01080063:current";
    let row = |t: i64| Row::new(t, "meter-1");
    let expected = vec![
        row(bt).field(voltage, f(120.1)).field(current, f(1.7)),
        row(bt - 5 * SEC).field(current, f(1.2)),
        row(bt - 4 * SEC).field(current, f(1.3)),
        row(bt - 3 * SEC).field(current, f(1.4)),
        row(bt - 2 * SEC).field(current, f(1.5)),
        row(bt - SEC).field(current, f(1.6)),
    ];
    assert_eq!(decode(pack).rows, expected);
}

#[test]
fn times_below_2_pow_28_are_relative_to_now() {
    let batch = decode(r#"[{"n":"a","v":1,"t":-60}, {"n":"a","v":2}, {"n":"a","v":3,"t":0.5}]"#);
    let times: Vec<i64> = batch.rows.iter().map(|r| r.time_ns).collect();
    assert_eq!(times, [NOW - 60 * SEC, NOW, NOW + SEC / 2]);
    // bt + t is resolved first: 2^28 - 1 is relative, 2^28 is absolute.
    let batch = decode(r#"[{"bt":268435400,"n":"a","v":1,"t":55}, {"n":"b","v":1,"t":56}]"#);
    assert_eq!(batch.rows[0].time_ns, NOW + 268_435_455 * SEC);
    assert_eq!(batch.rows[1].time_ns, 268_435_456 * SEC);
}

#[test]
fn base_value_and_base_sum_are_added_and_carry_over() {
    let batch = decode(
        r#"[{"bn":"m:","bv":100,"bs":1000,"n":"kwh","v":1.5,"s":2},
            {"n":"kwh2","v":-1,"t":1},
            {"n":"kwh3","s":5,"t":2},
            {"bv":0,"n":"kwh4","v":7,"t":3}]"#,
    );
    assert_eq!(
        batch.rows,
        vec![
            Row::new(NOW, "meter-1").field("m:kwh", f(101.5)).field("m:kwh.sum", f(1002.0)),
            Row::new(NOW + SEC, "meter-1").field("m:kwh2", f(99.0)),
            Row::new(NOW + 2 * SEC, "meter-1").field("m:kwh3.sum", f(1005.0)),
            Row::new(NOW + 3 * SEC, "meter-1").field("m:kwh4", f(7.0)),
        ]
    );
}

#[test]
fn string_boolean_and_data_values() {
    let batch = decode(
        r#"[{"bn":"d/","bv":5,"n":"mode","vs":"eco"},
            {"n":"open","vb":true},
            {"n":"blob","vd":"aGVsbG8"},
            {"n":"blob2","vd":"aGk-_w=="}]"#,
    );
    assert_eq!(
        batch.rows,
        vec![
            Row::new(NOW, "meter-1")
                .field("d/mode", FieldValue::Str("eco".into()))
                .field("d/open", FieldValue::Bool(true))
                .field("d/blob", FieldValue::Str("aGVsbG8".into()))
                .field("d/blob2", FieldValue::Str("aGk-_w==".into()))
        ]
    );
    assert_eq!(error(r#"[{"n":"x","vd":"not base64!"}]"#), "record 1: data value \"vd\" must be base64 text");
    assert_eq!(error(r#"[{"n":"x","vd":"a"}]"#), "record 1: data value \"vd\" must be base64 text");
}

#[test]
fn same_time_records_merge_in_order_and_names_may_not_repeat() {
    let batch = decode(r#"[{"bt":1.8e9,"n":"a","v":1},{"n":"b","v":2,"t":10},{"n":"c","v":3},{"n":"d","v":4,"t":10}]"#);
    let t = 1_800_000_000 * SEC;
    assert_eq!(
        batch.rows,
        vec![
            Row::new(t, "meter-1").field("a", f(1.0)).field("c", f(3.0)),
            Row::new(t + 10 * SEC, "meter-1").field("b", f(2.0)).field("d", f(4.0)),
        ]
    );
    assert_eq!(
        error(r#"[{"n":"a","v":1},{"n":"b","v":1},{"n":"a","v":2}]"#),
        "record 3: field \"a\": repeated at the same time (an earlier record has this name and time)"
    );
    assert!(error(r#"[{"n":"a.sum","v":1},{"n":"a","s":1}]"#).starts_with("record 2: field \"a.sum\": repeated"));
    // The same name at different times is a time series.
    assert_eq!(decode(r#"[{"n":"a","v":1},{"n":"a","v":2,"t":1}]"#).rows.len(), 2);
}

#[test]
fn must_understand_keys_are_rejected_other_unknown_keys_ignored() {
    assert_eq!(
        error(r#"[{"n":"a","v":1},{"n":"b","v":1,"foo_":1}]"#),
        "record 2: field \"foo_\" must be understood (RFC 8428 §4.4) and is not supported"
    );
    let batch = decode(r#"[{"n":"a","v":1,"foo":{"x":1},"ut":60,"u":"Cel"}]"#);
    assert_eq!(batch.rows, vec![Row::new(NOW, "meter-1").field("a", f(1.0))]);
}

#[test]
fn missing_value_or_name_and_several_values_are_rejected() {
    assert_eq!(
        error(r#"[{"n":"a","v":1},{"n":"b","u":"Cel"}]"#),
        "record 2: field \"b\": no value (one of \"v\", \"vs\", \"vb\", \"vd\" or a sum \"s\" is required)"
    );
    assert_eq!(error(r#"[{"bv":5,"n":"b"}]"#).split(':').next(), Some("record 1"));
    assert_eq!(error(r#"[{"v":1}]"#), "record 1: empty name: neither \"bn\" nor \"n\" gives one");
    assert_eq!(
        error(r#"[{"n":"a","v":1,"vs":"x"}]"#),
        "record 1: field \"a\": more than one value (\"v\", \"vs\"); a record carries one"
    );
}

#[test]
fn bad_base_and_record_types_are_rejected() {
    let cases = [
        (r#"[{"n":"a","v":1},{"bn":5,"n":"a","v":1}]"#, "record 2: base name \"bn\" must be a string, got a number"),
        (r#"[{"bt":"now","n":"a","v":1}]"#, "record 1: base time \"bt\" must be a number, got a string"),
        (r#"[{"bu":1,"n":"a","v":1}]"#, "record 1: base unit \"bu\" must be a string, got a number"),
        (r#"[{"bv":"1","n":"a","v":1}]"#, "record 1: base value \"bv\" must be a number, got a string"),
        (r#"[{"bs":null,"n":"a","s":1}]"#, "record 1: base sum \"bs\" must be a number, got null"),
        (r#"[{"bver":"10","n":"a","v":1}]"#, "record 1: base version \"bver\" must be a positive integer, got a string"),
        (r#"[{"bver":1.5,"n":"a","v":1}]"#, "record 1: base version \"bver\" must be a positive integer, got 1.5"),
        (r#"[{"n":1,"v":1}]"#, "record 1: name \"n\" must be a string, got a number"),
        (r#"[{"n":"a","t":"1","v":1}]"#, "record 1: time \"t\" must be a number, got a string"),
        (r#"[{"n":"a","v":true}]"#, "record 1: value \"v\" must be a number, got a boolean"),
        (r#"[{"n":"a","vs":1}]"#, "record 1: string value \"vs\" must be a string, got a number"),
        (r#"[{"n":"a","vb":"true"}]"#, "record 1: boolean value \"vb\" must be a boolean, got a string"),
        (r#"[{"n":"a","vd":[]}]"#, "record 1: data value \"vd\" must be a string, got an array"),
        (r#"[{"n":"a","s":"1"}]"#, "record 1: sum \"s\" must be a number, got a string"),
        (r#"[{"n":"a","v":1,"ut":{}}]"#, "record 1: update time \"ut\" must be a number, got an object"),
        (r#"[{"n":"a","v":1,"v":2}]"#, "record 1: key \"v\" appears more than once"),
    ];
    for (body, expected) in cases {
        assert_eq!(error(body), expected, "{body}");
    }
}

#[test]
fn versions_above_10_are_rejected() {
    assert_eq!(decode(r#"[{"bver":10,"n":"a","v":1}]"#).rows.len(), 1);
    assert_eq!(
        error(r#"[{"bver":11,"n":"a","v":1}]"#),
        "record 1: base version \"bver\" is 11; this server understands SenML up to version 10"
    );
    assert!(error(r#"[{"bver":0,"n":"a","v":1}]"#).ends_with("must be a positive integer, got 0"));
}

#[test]
fn names_follow_rfc_and_field_rules() {
    assert!(error(r#"[{"n":"a b","v":1}]"#).starts_with("record 1: field \"a b\": invalid SenML name"));
    assert!(error(r#"[{"n":"-a","v":1}]"#).contains("invalid SenML name"));
    assert!(error(r#"[{"n":"time","v":1}]"#).starts_with("record 1: field \"time\": name is reserved"));
    assert!(error(r#"[{"bn":"dev","n":"ice","v":1}]"#).contains("\"device\": name is reserved"));
    assert!(error(r#"[{"n":"x","vs":"a"},{"n":"é","v":1}]"#).starts_with("record 2: field \"é\": invalid"));
}

#[test]
fn pack_shape_and_json_errors() {
    assert_eq!(error("[]"), "SenML pack is an empty array: no records");
    assert_eq!(error(r#"{"n":"a","v":1}"#), "SenML pack must be an array of records, got an object");
    assert_eq!(error(r#"[{"n":"a","v":1}, "x"]"#), "record 2: must be an object, got a string");
    assert_eq!(error(r#"[{"n":"a","v":}]"#), "invalid JSON at line 1 column 15: expected value");
}

#[test]
fn out_of_range_times_and_values_are_rejected() {
    assert!(error(r#"[{"bt":1e10,"n":"a","v":1}]"#).starts_with("record 1: base time \"bt\": timestamp out of range"));
    assert!(error(r#"[{"bt":9e9,"n":"a","v":1,"t":3e8}]"#).starts_with("record 1: time: timestamp out of range"));
    assert_eq!(
        error(r#"[{"bv":1.7e308,"n":"a","v":1.7e308}]"#),
        "record 1: field \"a\": value is out of range after adding the base"
    );
}

#[test]
fn limits_apply_to_rows_fields_strings_and_names() {
    let tight = Limits { max_fields_per_row: 2, max_rows: 2, max_string_bytes: 4, max_name_bytes: 5 };
    assert_eq!(
        error_with(r#"[{"n":"a","v":1},{"n":"b","v":1},{"n":"c","v":1}]"#, &tight),
        "record 3: over the limit of 2 fields per row (records with the same time)"
    );
    assert_eq!(
        error_with(r#"[{"n":"a","v":1,"t":1},{"n":"a","v":1,"t":2},{"n":"a","v":1,"t":3}]"#, &tight),
        "record 3: over the limit of 2 rows (distinct times) per pack"
    );
    assert_eq!(
        error_with(r#"[{"n":"a","vs":"12345"}]"#, &tight),
        "record 1: field \"a\": string value is 5 bytes, over the limit of 4"
    );
    assert_eq!(
        error_with(r#"[{"bn":"abc:","n":"de","v":1}]"#, &tight),
        "record 1: field \"abc:de\": name is 6 bytes, over the limit of 5"
    );
    assert!(error_with(r#"[{"n":"ab","s":1}]"#, &tight).contains("\"ab.sum\""), "the suffix counts");
}
