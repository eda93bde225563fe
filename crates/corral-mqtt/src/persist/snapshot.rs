//! The snapshot file: `CMQSNAP1`, base segment (u64), body length (u64), CRC32 of the body
//! (u32), body = framed ops. Written to a temp file, fsynced and renamed over the old one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use super::op::{self, Op};
use crate::error::BrokerError;

const MAGIC: &[u8; 8] = b"CMQSNAP1";
const FILE: &str = "snapshot.bin";
const TEMP: &str = "snapshot.tmp";

/// Writes the snapshot; returns its size in bytes.
pub(super) fn write(dir: &Path, base_segment: u64, ops: &[Op]) -> std::io::Result<usize> {
    let mut body = Vec::new();
    for op in ops {
        op::frame(op, &mut body);
    }
    let mut file = File::create(dir.join(TEMP))?;
    file.write_all(MAGIC)?;
    file.write_all(&base_segment.to_be_bytes())?;
    file.write_all(&(body.len() as u64).to_be_bytes())?;
    file.write_all(&crc32fast::hash(&body).to_be_bytes())?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    fs::rename(dir.join(TEMP), dir.join(FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(body.len() + 28)
}

/// Feeds the snapshot's ops to `apply`; returns its base segment, `None` without a snapshot.
pub(super) fn read(dir: &Path, mut apply: impl FnMut(Op)) -> Result<Option<u64>, BrokerError> {
    let path = dir.join(FILE);
    let fail = |message: String| BrokerError::State { path: path.display().to_string(), message };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BrokerError::io(format!("opening {}", path.display()), e)),
    };
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?;
    if raw.len() < 28 || &raw[..8] != MAGIC {
        return Err(fail("not a snapshot file (bad header)".into()));
    }
    let base = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
    let len = u64::from_be_bytes(raw[16..24].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_be_bytes(raw[24..28].try_into().expect("4 bytes"));
    let body = &raw[28..];
    if body.len() != len || crc32fast::hash(body) != crc {
        return Err(fail("snapshot is damaged (length or checksum mismatch)".into()));
    }
    op::unframe(body, &mut apply).map_err(|e| fail(format!("snapshot content: {e}")))?;
    Ok(Some(base))
}
