//! Deterministic robustness test: seeded pseudo-random bytes and mutations of valid bodies never
//! panic, errors are always bad input naming a line, and every accepted body obeys the rules.

use super::{Precision, decode_line_protocol};
use crate::decode::Limits;
use corral_model::{Batch, DeviceId, ErrorKind, FieldValue};
use std::collections::HashSet;

const NOW: i64 = 1_795_255_200_000_000_000;

use crate::decode::tests_fuzz::Rng;

const SEEDS: &[&str] = &[
    "weather,site=north,device=truck-7 temp=21.5,ok=t,n=3i,u=7u 1795255200000000001\n",
    "# c\r\nm,t\\ k=v\\,w f\\=x=\"s \\\"q\\\" \\\\ e\\f\",g=-1.5E-3 -5\r\n\nn,device=d2 a=TRUE\n",
    "a f=1\nb,x=1 f=2i 3\na,device=z g=F\n",
];
const TOKENS: &[&str] = &[
    ",",
    "=",
    " ",
    "\\",
    "\"",
    "\n",
    "\r\n",
    "#",
    "i",
    "u",
    "t",
    "1e400",
    "-",
    "9223372036854775808",
    "device=",
    "time=",
    ",device=x",
    "a=1",
    "\\ ",
    "\\,",
    "\\=",
    "\\\"",
    "é",
];

fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
    let mut out = doc.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(7),
            1 => drop(out.drain(at..(at + 1 + rng.below(6)).min(out.len()))),
            2 => out.splice(at..at, TOKENS[rng.below(TOKENS.len())].bytes()).for_each(drop),
            3 => out.insert(at, rng.next() as u8 & 0x7f),
            _ => out.truncate(at),
        }
    }
    out
}

/// What every accepted body must satisfy, whatever the input.
fn check_batches(batches: &[Batch], limits: &Limits, input: &[u8]) {
    let show = || String::from_utf8_lossy(input).into_owned();
    let tables: HashSet<_> = batches.iter().map(|b| b.table.as_str()).collect();
    assert_eq!(tables.len(), batches.len(), "{}", show());
    assert!(batches.iter().map(|b| b.rows.len()).sum::<usize>() <= limits.max_rows, "{}", show());
    for row in batches.iter().flat_map(|b| &b.rows) {
        assert!(row.device == "dev-1" || DeviceId::new(row.device.as_str()).is_ok(), "{}", show());
        assert!(!row.fields.is_empty() && row.fields.len() + row.tags.len() <= limits.max_fields_per_row, "{}", show());
        let mut seen = HashSet::new();
        for (key, value) in &row.tags {
            assert!(!value.is_empty() && value.len() <= limits.max_string_bytes, "{}", show());
            assert!(seen.insert(key.as_str()), "{}", show());
        }
        for (key, value) in &row.fields {
            assert!(seen.insert(key.as_str()), "{}", show());
            match value {
                FieldValue::Str(s) => assert!(s.len() <= limits.max_string_bytes, "{}", show()),
                FieldValue::Float(x) => assert!(x.is_finite(), "{}", show()),
                _ => {}
            }
        }
        for key in seen {
            assert!(!key.is_empty() && key.len() <= limits.max_name_bytes, "{}", show());
            assert!(!["time", "device"].contains(&key), "{}", show());
        }
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let limit_sets = [Limits::default(), Limits { max_fields_per_row: 3, max_rows: 2, max_string_bytes: 6, max_name_bytes: 8 }];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut total) = (0, 0);
    for round in 0..4000 {
        let input: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(40)).map(|_| if rng.below(2) == 0 { rng.next() as u8 } else { b"a=1 ,\"\\\n"[rng.below(8)] }).collect()
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())].as_bytes();
            mutate(&mut rng, seed)
        };
        let precision = [Precision::Nanoseconds, Precision::Seconds, Precision::Hours][rng.below(3)];
        for limits in &limit_sets {
            total += 1;
            match decode_line_protocol(&input, precision, NOW, "device", Some("dev-1"), limits) {
                Ok(batches) => {
                    accepted += 1;
                    check_batches(&batches, limits, &input);
                }
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::BadInput);
                    let number = e.message.strip_prefix("line ").and_then(|m| m.split(':').next());
                    assert!(number.is_some_and(|n| n.parse::<usize>().is_ok()), "{}", e.message);
                }
            }
        }
    }
    println!("{accepted} of {total} decodes accepted");
    assert!(accepted > total / 20, "only {accepted} of {total} decodes accepted");
}

#[test]
fn unmutated_seeds_decode() {
    for seed in SEEDS {
        let decoded =
            decode_line_protocol(seed.as_bytes(), Precision::Nanoseconds, NOW, "device", Some("dev-1"), &Limits::default());
        let batches = decoded.unwrap_or_else(|e| panic!("{seed:?}: {e}"));
        check_batches(&batches, &Limits::default(), seed.as_bytes());
        assert!(!batches.is_empty());
    }
}
