//! Deterministic robustness test: seeded pseudo-random bytes and mutations of valid documents
//! never panic, errors are always bad input, and every accepted batch obeys the decoders' rules.

use super::{Limits, decode_json, decode_senml_json};
use corral_model::{Batch, ErrorKind, TableName, WireError};
use std::collections::HashSet;

pub(crate) use rng::Rng;

/// xorshift64* (Vigna): tiny, deterministic, good enough to pick bytes. Shared by the decoders'
/// robustness tests.
pub(crate) mod rng {
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }
}

const SEEDS: &[&str] = &[
    r#"{"ts": "2026-11-21T10:00:00Z", "temperature": 21.5, "door_open": false, "mode": "eco"}"#,
    r#"[{"ts": 1795255200000.5, "gps": {"lat": 1, "lon": -2.5e3}}, {"xs": [1, {"a": null}], "b": true}]"#,
    r#"{"a": {"b": {"c": {"d": "e"}}}, "n": null, "ts": "2026-11-21T11:30:00+01:30"}"#,
    r#"[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2},{"n":"current","v":1.7}]"#,
    r#"[{"bn":"d/","bv":5,"bs":10,"n":"kwh","v":1,"s":2},{"n":"mode","vs":"eco","t":1},{"n":"open","vb":true},{"n":"blob","vd":"aGk-_w=="}]"#,
];

/// Pieces that make mutations likely to stay near-valid JSON and reach deeper code paths.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e308",
    "1.5",
    "\"ts\"",
    "\"time\"",
    "\"device\"",
    "\"bn\"",
    "\"bt\"",
    "\"bv\"",
    "\"bs\"",
    "\"bver\"",
    "\"n\"",
    "\"t\"",
    "\"v\"",
    "\"vs\"",
    "\"vb\"",
    "\"vd\"",
    "\"s\"",
    "\"x_\"",
    "\"a.b\"",
    "\"\"",
    "1e13",
    "9223372036854775807",
    "18446744073709551616",
    "\"2262-04-12T00:00:00Z\"",
    "\\u0000",
    "\\ud800",
    "\u{e9}",
    "268435456",
    "-1e10",
    "{\"a\":",
    "[[[[",
];

fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
    let mut out = doc.to_vec();
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 => out.splice(at..at, rng.pick(TOKENS).bytes()).for_each(drop),
            3 => out.insert(at, rng.next() as u8),
            4 => {
                let start = rng.below(out.len() + 1);
                let end = (start + rng.below(16)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(at..at, chunk).for_each(drop);
            }
            5 => out.truncate(at),
            // Change one digit: stays valid JSON, moves times and values around.
            _ => {
                let digits: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let i = *rng.pick(&digits);
                    out[i] = b'0' + rng.below(10) as u8;
                }
            }
        }
    }
    out
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(48);
    if rng.below(2) == 0 {
        (0..len).map(|_| rng.next() as u8).collect()
    } else {
        let mut out = Vec::new();
        for _ in 0..len / 3 {
            out.extend_from_slice(rng.pick(TOKENS).as_bytes());
        }
        out
    }
}

/// What every accepted batch must satisfy, whatever the input.
fn check_batch(batch: &Batch, limits: &Limits, input: &[u8]) {
    let show = || String::from_utf8_lossy(input).into_owned();
    assert!(!batch.rows.is_empty(), "empty batch from {}", show());
    assert!(batch.rows.len() <= limits.max_rows, "{}", show());
    for row in &batch.rows {
        assert_eq!(row.device, "dev-1");
        assert!(row.tags.is_empty());
        assert!(!row.fields.is_empty() && row.fields.len() <= limits.max_fields_per_row, "{}", show());
        let mut seen = HashSet::new();
        for (name, value) in &row.fields {
            assert!(!name.is_empty() && name.len() <= limits.max_name_bytes, "{}", show());
            assert!(name != "time" && name != "device", "{}", show());
            assert!(seen.insert(name), "duplicate {name} from {}", show());
            if let corral_model::FieldValue::Str(s) = value {
                assert!(s.len() <= limits.max_string_bytes, "{}", show());
            }
        }
    }
}

fn check(result: Result<Batch, WireError>, limits: &Limits, input: &[u8]) {
    match result {
        Ok(batch) => check_batch(&batch, limits, input),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::BadInput, "{e} from {}", String::from_utf8_lossy(input));
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let table = TableName::telemetry();
    let limit_sets = [Limits::default(), Limits { max_fields_per_row: 3, max_rows: 2, max_string_bytes: 6, max_name_bytes: 8 }];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut semantic, mut total) = (0, 0, 0);
    for round in 0..4000 {
        let input = if round % 4 == 0 {
            random_bytes(&mut rng)
        } else {
            let seed = rng.pick(SEEDS).as_bytes();
            mutate(&mut rng, seed)
        };
        let now = [0, 1_795_255_200_000_000_000, i64::MAX, i64::MIN][rng.below(4)];
        for limits in &limit_sets {
            for senml in [false, true] {
                let result = if senml {
                    decode_senml_json(&input, "dev-1", &table, now, limits)
                } else {
                    decode_json(&input, "dev-1", &table, now, limits)
                };
                total += 1;
                accepted += usize::from(result.is_ok());
                semantic += usize::from(result.as_ref().is_err_and(|e| !e.message.starts_with("invalid JSON")));
                check(result, limits, &input);
            }
        }
    }
    // Enough inputs must get past the JSON parser to exercise the decoders' own paths too.
    println!("{accepted} of {total} decodes accepted, {semantic} refused after parsing");
    assert!(accepted > total / 50, "only {accepted} of {total} decodes accepted");
    assert!(semantic > total / 10, "only {semantic} of {total} decodes refused after parsing");
}

#[test]
fn unmutated_seeds_decode() {
    let table = TableName::telemetry();
    for (i, seed) in SEEDS.iter().enumerate() {
        let result = if i < 3 {
            decode_json(seed.as_bytes(), "dev-1", &table, 0, &Limits::default())
        } else {
            decode_senml_json(seed.as_bytes(), "dev-1", &table, 0, &Limits::default())
        };
        check_batch(&result.unwrap_or_else(|e| panic!("seed {i}: {e}")), &Limits::default(), seed.as_bytes());
    }
}
