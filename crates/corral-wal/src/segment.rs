//! On-disk format: segment file names, the segment header and record framing.
//!
//! ```text
//! segment  = MAGIC record*
//! record   = len:u32le crc:u32le seq:u64le payload[len]
//! crc      = crc32(seq bytes ++ payload)
//! ```
//! A segment's id is the first sequence number it may hold; its file name is the id padded to
//! 20 digits (the width of `u64::MAX`) so lexical and numeric order agree for humans too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::metrics::Metrics;

/// First bytes of every segment; the trailing version digits change if the framing ever does.
pub(crate) const MAGIC: &[u8; 8] = b"CRLWAL01";

/// Bytes in front of each payload: length, checksum, sequence number.
pub(crate) const FRAME_HEADER: usize = 16;

/// Largest payload one record may carry. Replay treats a larger length field as corruption, so
/// a flipped bit in a length can never make us allocate gigabytes.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

const SUFFIX: &str = ".wal";
const ID_DIGITS: usize = 20;

pub(crate) fn file_name(id: u64) -> String {
    format!("{id:0ID_DIGITS$}{SUFFIX}")
}

pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// The id encoded in a segment file name, or `None` for any other file (lock file, files set
/// aside as corrupt, editor droppings).
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every segment in `dir`, sorted by id.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(id) = name.to_str().and_then(parse_file_name) {
            segments.push((id, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(id, _)| *id);
    Ok(segments)
}

pub(crate) fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one framed record to `buf`. The caller has checked `payload.len() <= MAX_RECORD_BYTES`.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let len = payload.len() as u32;
    buf.reserve(FRAME_HEADER + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A decoded frame header, not yet checked against its payload.
pub(crate) struct FrameHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

pub(crate) fn decode_header(bytes: &[u8; FRAME_HEADER]) -> FrameHeader {
    let [l0, l1, l2, l3, c0, c1, c2, c3, s @ ..] = *bytes;
    FrameHeader {
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        crc: u32::from_le_bytes([c0, c1, c2, c3]),
        seq: u64::from_le_bytes(s),
    }
}

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    pub id: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes known good (header plus every record whose group was fsynced); a failed group is
    /// cut back to this length.
    pub len: u64,
    pub records: u64,
}

/// Creates segment `id` with its header, durable (file data and directory entry) before return,
/// so a record acknowledged in it can never live in a file the directory forgot.
///
/// The file is opened with truncate rather than `create_new` on purpose: the writer only ever
/// creates `id = next_seq`, and no file at that name can hold a record (records in segment `id`
/// have seq >= id, while every seq handed out so far is < next_seq; `open` deletes record-less
/// segments). So what truncate might meet is a header-only leftover of an earlier failed
/// attempt (e.g. ENOSPC mid-header), and reusing it lets the retry succeed once space returns.
pub(crate) fn create(dir: &Path, id: u64, metrics: &Metrics) -> io::Result<ActiveSegment> {
    let path = path(dir, id);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        file.write_all(MAGIC)?;
        sync_data(&file, metrics)?;
        sync_dir(dir)?;
        Ok(file)
    })();
    match result {
        Ok(file) => {
            metrics.add_bytes_written(MAGIC.len() as u64);
            Ok(ActiveSegment { id, path, file, len: MAGIC.len() as u64, records: 0 })
        }
        Err(e) => {
            // Best effort: a half-written header would otherwise show up as damage on replay.
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// `sync_data` timed into the fsync histogram. sync_data (not sync_all) is enough: it also
/// flushes the file size, which is all the metadata a reader needs to find appended records.
pub(crate) fn sync_data(file: &File, metrics: &Metrics) -> io::Result<()> {
    let started = Instant::now();
    let result = file.sync_data();
    metrics.observe_fsync(started.elapsed());
    result
}

/// Makes creations, deletions and renames inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(42), "00000000000000000042.wal");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("99999999999999999999.wal"), None); // overflows u64
        assert_eq!(parse_file_name("0000000000000000042.wal"), None);
        assert_eq!(parse_file_name("00000000000000000042.wal.corrupt"), None);
        assert_eq!(parse_file_name("+0000000000000000042.wal"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }

    #[test]
    fn frame_layout_is_len_crc_seq_payload() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, b"abc");
        assert_eq!(buf.len(), FRAME_HEADER + 3);
        let header = decode_header(buf[..FRAME_HEADER].try_into().unwrap());
        assert_eq!((header.len, header.seq), (3, 7));
        assert_eq!(header.crc, checksum(7, b"abc"));
        assert_eq!(&buf[FRAME_HEADER..], b"abc");
    }
}
