//! Tests against real files in temporary directories. They live inside the crate (not in
//! `tests/`) so they can reach the `#[cfg(test)]` fault-injection hook of the writer.

mod faults;
mod garbage;
mod group_commit;
mod rotation;
mod roundtrip;
mod torn;

use std::path::{Path, PathBuf};

use crate::{ReplayReport, Wal, WalConfig, segment};

/// Everything a replay produced, owned.
pub(crate) type Replayed = Vec<(u64, Vec<u8>)>;

pub(crate) fn open(config: WalConfig) -> (Wal, Replayed, ReplayReport) {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open(config, |record| seen.push((record.seq, record.payload.to_vec()))).expect("open");
    assert_eq!(report.records, seen.len() as u64);
    (wal, seen, report)
}

pub(crate) fn open_dir(dir: &Path) -> (Wal, Replayed, ReplayReport) {
    open(WalConfig::new(dir))
}

/// Segment files in `dir`, by id.
pub(crate) fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    segment::list(dir).unwrap()
}

pub(crate) fn payload(i: usize) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat(i % 17)).into_bytes()
}

/// xorshift64*: a tiny deterministic generator, so failures reproduce without a rand dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
