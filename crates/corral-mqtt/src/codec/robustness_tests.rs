//! Throws seeded random bytes and mutations of valid packets at the decoder: it must never
//! panic, and whatever it accepts must re-encode and decode to the same packet. (The cargo-fuzz
//! target in `fuzz/` does the same with coverage guidance, on nightly.)

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn check(bytes: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    for _ in 0..8 {
        match decode_packet(&mut buf, version, 64 * 1024) {
            Ok(Some(packet)) => {
                let mut again = BytesMut::new();
                encode_packet(&packet, version, &mut again);
                let back =
                    decode_packet(&mut again, version, usize::MAX).unwrap_or_else(|e| panic!("re-decoding {packet:?}: {e}"));
                assert_eq!(back.as_ref(), Some(&packet));
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    // `cargo test` names the crate's directory at run time too; that one is right even when the
    // test binary was built in another checkout that shares the target directory.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let dir = format!("{root}/fuzz/corpus/decode");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect())
        .unwrap_or_default();
    assert!(seeds.len() >= 10, "seed corpus missing in {dir}");
    seeds.sort();
    seeds
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the time make the header plausible so parsing gets past the length check.
        if len >= 2 && rng.random_bool(0.5) {
            bytes[1] = (len - 2) as u8 & 0x7F;
        }
        check(&bytes, ProtocolVersion::V311);
        check(&bytes, ProtocolVersion::V5);
    }
}

#[test]
fn mutated_valid_packets_never_panic_the_decoder() {
    let mut rng = StdRng::seed_from_u64(42);
    let seeds = seeds();
    for _ in 0..50_000 {
        let mut bytes = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..4) {
                0 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random();
                }
                1 if !bytes.is_empty() => {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
                2 if !bytes.is_empty() => {
                    bytes.truncate(rng.random_range(0..bytes.len()));
                }
                _ => {
                    let i = rng.random_range(0..=bytes.len());
                    bytes.insert(i, rng.random());
                }
            }
        }
        check(&bytes, ProtocolVersion::V311);
        check(&bytes, ProtocolVersion::V5);
    }
}
