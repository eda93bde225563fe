//! Golden cases for [`decode_line_protocol`], one per rule in the module docs. The seeded
//! random/mutation robustness test is in `line_protocol/tests_fuzz.rs`.

use super::{Precision, decode_line_protocol};
use crate::decode::Limits;
use FieldValue::{Bool, Float, Int, Str, UInt};
use corral_model::{Batch, ErrorKind, FieldValue, Row, TableName};

const NOW: i64 = 1_795_255_200_000_000_000; // 2026-11-21T10:00:00Z

fn run(body: &str, precision: Precision, tag: &str, default: Option<&str>, limits: &Limits) -> Result<Vec<Batch>, String> {
    decode_line_protocol(body.as_bytes(), precision, NOW, tag, default, limits).map_err(|e| {
        assert_eq!(e.kind, ErrorKind::BadInput, "{body}");
        e.message
    })
}

fn batches(body: &str) -> Vec<Batch> {
    run(body, Precision::Nanoseconds, "device", Some("dev-1"), &Limits::default())
        .unwrap_or_else(|e| panic!("{body:?} should decode: {e}"))
}

/// The rows of a body that has one measurement.
fn rows(body: &str) -> Vec<Row> {
    let mut batches = batches(body);
    assert_eq!(batches.len(), 1, "{body:?}");
    batches.remove(0).rows
}

/// The fields of a one-line body.
fn fields(body: &str) -> Vec<(String, FieldValue)> {
    rows(body).remove(0).fields
}

fn error(body: &str) -> String {
    run(body, Precision::Nanoseconds, "device", Some("dev-1"), &Limits::default()).expect_err(body)
}

fn named(pairs: &[(&str, FieldValue)]) -> Vec<(String, FieldValue)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn a_full_line() {
    let batches = batches("weather,site=north,device=truck-7 temp=21.5,ok=t,n=3i 1795255200000000001");
    assert_eq!(batches[0].table, TableName::new("weather").unwrap());
    let expected =
        Row::new(NOW + 1, "truck-7").tag("site", "north").field("temp", Float(21.5)).field("ok", Bool(true)).field("n", Int(3));
    assert_eq!(batches[0].rows, vec![expected]);
}

#[test]
fn measurements_with_any_character_land_in_a_table_with_an_sql_friendly_name() {
    let cases = [
        (r"my\ weather f=1", "my_weather"),
        (r"a\,b f=1", "a_b"),
        (r"a\b f=1", "a_b"),
        ("a=b f=1", "a_b"),
        ("température f=1", "temp_rature"),
        ("Cpu.load-1 f=1", "Cpu.load-1"),
    ];
    for (body, table) in cases {
        assert_eq!(batches(body)[0].table, TableName::new(table).unwrap(), "{body}");
    }
    // Two spellings of one name share its table.
    let two = batches("my\\ weather f=1\nmy_weather f=2");
    assert_eq!((two.len(), two[0].rows.len()), (1, 2));
}

#[test]
fn measurements_that_still_break_a_table_rule_are_refused() {
    assert!(error("m f=1\n_x f=1").starts_with("line 2: measurement \"_x\" is not"));
    assert!(error("\\ x f=1").ends_with(": must start with a letter or digit"), "{}", error("\\ x f=1"));
    let reserved = error("devices f=1");
    assert_eq!(reserved, "line 1: measurement \"devices\" is not a valid table name: is reserved for the platform");
    assert!(error("_x f=1").ends_with(": must start with a letter or digit"));
    assert!(error(&format!("{} f=1", "m".repeat(65))).ends_with(": must be 1-64 characters"));
}

#[test]
fn tag_and_field_key_escapes_round_trip() {
    let row = rows(r"m,tag\ key\,x\=y=va\ l\,u\=e,p=C:\dir\file,q=x\\y fi\ eld\,a\=b=1").remove(0);
    let tags = [("tag key,x=y", "va l,u=e"), ("p", r"C:\dir\file"), ("q", r"x\\y")];
    let tags: Vec<_> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(row.tags, tags);
    assert_eq!(row.fields, named(&[("fi eld,a=b", Float(1.0))]));
    // A backslash before a non-special character stays, and the next character is read as usual.
    assert_eq!(rows(r"m,t=a\\,u f=1")[0].tags[0], ("t".into(), r"a\,u".into()));
}

#[test]
fn string_field_escapes_round_trip() {
    let body = r#"m s="say \"hi\", a=b c\\d e\f",e="",t="end\\",u="a b,c=d" 1"#;
    let expected = [
        ("s", Str(r#"say "hi", a=b c\d e\f"#.into())),
        ("e", Str("".into())),
        ("t", Str(r"end\".into())),
        ("u", Str("a b,c=d".into())),
    ];
    assert_eq!(fields(body), named(&expected));
}

#[test]
fn integers_and_unsigned_cover_their_range() {
    let body = "m a=1i,b=-9223372036854775808i,c=9223372036854775807i,d=18446744073709551615u,e=0u,f=-0i";
    let expected =
        [("a", Int(1)), ("b", Int(i64::MIN)), ("c", Int(i64::MAX)), ("d", UInt(u64::MAX)), ("e", UInt(0)), ("f", Int(0))];
    assert_eq!(fields(body), named(&expected));
    let signed = "(integers with i are 64-bit signed)";
    assert_eq!(
        error("m a=9223372036854775808i"),
        format!("line 1: field value for \"a\" out of range: \"9223372036854775808i\" {signed}")
    );
    assert!(error("m a=-9223372036854775809i").ends_with(signed));
    assert!(error("m a=18446744073709551616u").ends_with("(unsigned values with u are 64-bit)"));
}

#[test]
fn floats_with_and_without_exponent() {
    let body = "m a=1,b=-1.5E-3,c=1e3,d=.5,e=1.,f=-0.0,g=1E+2,h=21.5";
    let expected = [("a", 1.0), ("b", -1.5e-3), ("c", 1e3), ("d", 0.5), ("e", 1.0), ("f", -0.0), ("g", 100.0), ("h", 21.5)];
    let expected: Vec<_> = expected.iter().map(|(k, v)| (*k, Float(*v))).collect();
    assert_eq!(fields(body), named(&expected));
    assert!(error("m a=1e400").ends_with("out of range: \"1e400\" (floats are 64-bit)"));
}

#[test]
fn booleans_every_spelling() {
    for (text, value) in [
        ("t", true),
        ("T", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("f", false),
        ("F", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        assert_eq!(fields(&format!("m b={text}")), named(&[("b", Bool(value))]), "{text}");
    }
}

#[test]
fn bad_values_name_line_field_and_text() {
    let expected = "line 3: invalid field value for \"temp\": \"abc\" (expected a number, an \
                    integer with i, an unsigned with u, a boolean, or a double-quoted string)";
    assert_eq!(error("m temp=1\n\nm temp=abc"), expected);
    for bad in ["tRue", "yes", "inf", "NaN", "+1", "1_0", "-1u", "1.5i", "1e3i", "0x10", "-", "1e", "a\"b\"", "1i2"] {
        let message = error(&format!("m v={bad}"));
        assert!(message.starts_with(&format!("line 1: invalid field value for \"v\": {bad:?}")), "{bad}: {message}");
    }
    assert_eq!(error("m v="), "line 1: missing value for field \"v\"");
    assert_eq!(error("m v=,w=1"), "line 1: missing value for field \"v\"");
}

#[test]
fn precision_scales_each_unit() {
    let units =
        [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)];
    for (name, nanos) in units {
        let precision = Precision::parse(name).unwrap();
        assert_eq!(precision.as_str(), name);
        let batches = run("m f=1 2\nm f=1 -3", precision, "device", Some("d"), &Limits::default()).unwrap();
        let times: Vec<_> = batches[0].rows.iter().map(|r| r.time_ns).collect();
        assert_eq!(times, [2 * nanos, -3 * nanos], "{name}");
    }
    for (v1, unit) in [("n", "ns"), ("u", "us"), ("µ", "us"), ("µs", "us"), ("μ", "us")] {
        assert_eq!(Precision::parse(v1).map(Precision::as_str), Some(unit));
    }
    assert_eq!(Precision::parse("sec"), None);
    assert_eq!(Precision::parse(""), None);
    assert_eq!(Precision::default(), Precision::Nanoseconds);
}

#[test]
fn timestamps_range_sign_and_absence() {
    assert_eq!(rows("m f=1 9223372036854775807")[0].time_ns, i64::MAX);
    assert_eq!(rows("m f=1 -9223372036854775808")[0].time_ns, i64::MIN);
    assert_eq!(rows("m f=1 -1")[0].time_ns, -1);
    assert_eq!(rows("m f=1")[0].time_ns, NOW);
    assert_eq!(rows("m f=1  \t")[0].time_ns, NOW, "trailing whitespace is no timestamp");
    assert_eq!(rows("m f=1   7  ")[0].time_ns, 7);
    let ms = run("m f=1\nm f=1 99999999999999999999", Precision::Milliseconds, "device", Some("d"), &Limits::default());
    assert_eq!(ms.unwrap_err(), "line 2: timestamp \"99999999999999999999\" out of range for precision ms");
    let h = run("m f=1 2562048", Precision::Hours, "device", Some("d"), &Limits::default());
    assert_eq!(h.unwrap_err(), "line 1: timestamp \"2562048\" out of range for precision h");
    assert!(error("m f=1 9223372036854775808").ends_with("out of range for precision ns"));
    assert_eq!(error("m f=1 12a"), "line 1: invalid timestamp \"12a\" (expected an integer)");
    assert_eq!(error("m f=1 1.5"), "line 1: invalid timestamp \"1.5\" (expected an integer)");
    assert_eq!(error("m f=1 123 456"), "line 1: unexpected text after the timestamp: \"456\"");
}

#[test]
fn comments_blank_lines_and_crlf() {
    assert_eq!(batches(""), vec![]);
    assert_eq!(batches("# only a comment\r\n\r\n   \n\t# indented\n"), vec![]);
    let body = "# header\r\n\r\n  m f=1 1\r\n\n\tm f=2 2  \r\n# m f=3\nm s=\"#not a comment\" 3\r\n";
    let times: Vec<_> = rows(body).iter().map(|r| r.time_ns).collect();
    assert_eq!(times, [1, 2, 3]);
    assert_eq!(error("# c\n\r\nm f=1\r\nm f=x\r\n").split(':').next(), Some("line 4"));
    assert_eq!(error("m f=1\n\u{0}\n").split(':').next(), Some("line 2"));
    let invalid_utf8 =
        decode_line_protocol(b"m f=1\nm s=\"\xff\"", Precision::Nanoseconds, NOW, "device", Some("d"), &Limits::default());
    assert_eq!(invalid_utf8.unwrap_err().message, "line 2: invalid UTF-8");
}

#[test]
fn one_batch_per_measurement_in_first_seen_order() {
    let batches = batches("b f=1 1\na f=2 2\nb f=3 3\nc f=4 4\na f=5 5");
    let tables: Vec<_> = batches.iter().map(|b| b.table.as_str()).collect();
    assert_eq!(tables, ["b", "a", "c"]);
    let times: Vec<Vec<i64>> = batches.iter().map(|b| b.rows.iter().map(|r| r.time_ns).collect()).collect();
    assert_eq!(times, [vec![1, 3], vec![2, 5], vec![4]]);
}

#[test]
fn device_tag_is_consumed_and_default_device_fills_in() {
    let rows = rows("m,device=truck-9,site=A f=1\nm,site=B f=2");
    assert_eq!(rows[0], Row::new(NOW, "truck-9").tag("site", "A").field("f", Float(1.0)));
    assert_eq!(rows[1], Row::new(NOW, "dev-1").tag("site", "B").field("f", Float(2.0)));
    let missing = run("m f=1\nm,site=B f=2", Precision::Nanoseconds, "device", None, &Limits::default());
    assert_eq!(
        missing.unwrap_err(),
        "line 1: missing tag \"device\" (the tag that names the device; or write with a device token)"
    );
    let by_host = |body: &str| run(body, Precision::Nanoseconds, "host", None, &Limits::default());
    assert_eq!(by_host("m,host=web-1 f=1").unwrap()[0].rows, vec![Row::new(NOW, "web-1").field("f", Float(1.0))]);
    assert_eq!(
        by_host("m f=1").unwrap_err(),
        "line 1: missing tag \"host\" (the tag that names the device; or write with a device token)"
    );
    let reserved = "key is reserved (every row has the columns \"time\" and \"device\")";
    assert_eq!(by_host("m,host=a,device=b f=1").unwrap_err(), format!("line 1: tag \"device\": {reserved}"));
    assert_eq!(by_host("m,host=a host=1").unwrap_err(), "line 1: \"host\" is used as both a tag and a field");
    assert_eq!(by_host("m,host=a,host=b f=1").unwrap_err(), "line 1: tag \"host\" appears more than once");
    assert_eq!(
        error(r"m,device=a/b f=1"),
        "line 1: tag \"device\": \"a/b\" is not a valid device id: only letters, digits, '.', '_' \
         and '-' are allowed"
    );
}

#[test]
fn structural_errors_name_their_line() {
    let reserved = "is reserved (every row has the columns \"time\" and \"device\")";
    let cases = [
        ("m f=1\nm", "line 2: missing fields"),
        ("m,t=1", "line 1: missing fields"),
        ("m  ", "line 1: missing fields"),
        (",t=1 f=1", "line 1: missing measurement"),
        ("m,t f=1", "line 1: tag \"t\": missing \"=\" and value"),
        ("m,=x f=1", "line 1: tag with an empty key"),
        ("m, f=1", "line 1: missing tag after \",\""),
        ("m,t= f=1", "line 1: tag \"t\" has an empty value"),
        ("m,t=a=b f=1", "line 1: tag \"t\": unescaped \"=\" in the value (write \\=)"),
        ("m f", "line 1: field \"f\": missing \"=\" and value"),
        ("m =1", "line 1: field with an empty key"),
        ("m f=1,", "line 1: missing field after \",\""),
        ("m f=1, g=2", "line 1: missing field after \",\""),
        ("m f=1\nm s=\"abc", "line 2: unterminated string value for field \"s\""),
        ("m s=\"abc\\\"", "line 1: unterminated string value for field \"s\""),
        ("m s=\"a\nb\"", "line 1: unterminated string value for field \"s\""),
        ("m s=\"a\"b", "line 1: field \"s\": unexpected text after the closing quote"),
        ("m a=1,b=2,a=3", "line 1: field \"a\" appears more than once"),
        ("m,t=1,u=2,t=3 f=1", "line 1: tag \"t\" appears more than once"),
        ("m,t=1 f=1,t=2", "line 1: \"t\" is used as both a tag and a field"),
        ("m time=1", &format!("line 1: field \"time\": name {reserved}")),
        ("m device=1", &format!("line 1: field \"device\": name {reserved}")),
        ("m,time=x f=1", &format!("line 1: tag \"time\": key {reserved}")),
    ];
    for (body, expected) in cases {
        assert_eq!(error(body), expected, "{body:?}");
    }
    // Any bad line fails the body, wherever it is.
    assert!(run("m f=1\nm f=2\nm f=", Precision::Nanoseconds, "device", Some("d"), &Limits::default()).is_err());
}

#[test]
fn limits_bound_width_rows_strings_and_names() {
    let limits = Limits { max_fields_per_row: 3, max_rows: 2, max_string_bytes: 4, max_name_bytes: 5 };
    let check = |body: &str| run(body, Precision::Nanoseconds, "device", Some("d"), &limits);
    assert!(check("m,a=1,b=2 c=3\nm,device=x a=1,b=2,c=\"abcd\"").is_ok());
    assert_eq!(check("m,a=1,b=2 c=3,d=4").unwrap_err(), "line 1: over the limit of 3 tags and fields per line");
    assert_eq!(check("m,a=1,b=2,c=3,d=4 e=1").unwrap_err(), "line 1: over the limit of 3 tags and fields per line");
    assert_eq!(check("m f=1\n#\nm f=2\nm f=3").unwrap_err(), "line 4: over the limit of 2 rows per body");
    assert_eq!(check("m s=\"abcde\"").unwrap_err(), "line 1: field \"s\": string value is 5 bytes, over the limit of 4");
    assert_eq!(check("m,t=abcde f=1").unwrap_err(), "line 1: tag \"t\": value is 5 bytes, over the limit of 4");
    assert_eq!(check("m abcdef=1").unwrap_err(), "line 1: field \"abcdef\": name is 6 bytes, over the limit of 5");
    assert_eq!(check("m,abcdef=1 f=1").unwrap_err(), "line 1: tag \"abcdef\": key is 6 bytes, over the limit of 5");
}

#[test]
fn wide_lines_check_repeated_keys_too() {
    let many: Vec<String> = (0..20).map(|i| format!("k{i}=1")).collect();
    let fields = many.join(",");
    assert_eq!(rows(&format!("m {fields}"))[0].fields.len(), 20);
    assert_eq!(error(&format!("m {fields},k3=2")), "line 1: field \"k3\" appears more than once");
    let tags = many.iter().map(|kv| format!(",{kv}")).collect::<String>();
    assert_eq!(error(&format!("m{tags} x=1,k19=1")), "line 1: \"k19\" is used as both a tag and a field");
    assert_eq!(error(&format!("m{tags},k0=2 x=1")), "line 1: tag \"k0\" appears more than once");
}

#[test]
fn ten_thousand_lines() {
    let mut body = String::new();
    for i in 0..10_000 {
        body.push_str(&format!("cpu,device=host-{},region=eu\\ west usage={i}.5,count={i}i,ok=t,note=\"n {i}\" {i}\n", i % 10));
    }
    let start = std::time::Instant::now();
    let batches = batches(&body);
    println!("10k lines ({} bytes) in {:?} (debug build)", body.len(), start.elapsed());
    assert_eq!(batches[0].rows.len(), 10_000);
    let last = &batches[0].rows[9_999];
    assert_eq!((last.device.as_str(), last.time_ns, &last.tags[0].1[..]), ("host-9", 9_999, "eu west"));
    assert_eq!(last.fields[3], ("note".into(), Str("n 9999".into())));
}
