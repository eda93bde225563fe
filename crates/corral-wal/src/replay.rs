//! Reading the log back at open: every intact record in order, repairing torn or corrupt tails.
//!
//! A crash can leave the last group half written; the fsync that would have acknowledged it never
//! returned, so dropping it loses nothing that was promised. Replay therefore stops a segment at
//! the first record that is short, implausible or fails its checksum, and truncates the file
//! there so a later replay does not trip over the same bytes again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::segment::{self, FRAME_HEADER, MAGIC, MAX_RECORD_BYTES};

/// One record handed to the replay callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segment files found (damaged ones included).
    pub segments: usize,
    /// Records handed to the callback.
    pub records: u64,
    /// Payload bytes handed to the callback (framing excluded).
    pub bytes: u64,
    /// Set when a segment ended in a torn or corrupt record: which file, at what offset, why; the intact prefix was kept and the file truncated to it.
    pub damage: Vec<Damage>,
}

/// A segment whose tail could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// Byte offset of the first bad byte; the file now ends here (and is removed if that left
    /// it without records). For a bad header (offset 0) the file was removed (torn header) or
    /// renamed to `*.wal.corrupt` (foreign content).
    pub offset: u64,
    pub reason: String,
}

/// Replay plus what `open` needs to continue.
pub(crate) struct Replayed {
    pub report: ReplayReport,
    pub last_seq: Option<u64>,
    /// Segment files still on disk that hold at least one record.
    pub live_segments: u64,
}

pub(crate) fn replay_dir(dir: &Path, on_record: &mut dyn FnMut(Record<'_>)) -> Result<Replayed, WalError> {
    let segments = segment::list(dir).map_err(|e| WalError::io(format!("listing WAL directory {}", dir.display()), e))?;
    let mut report = ReplayReport { segments: segments.len(), ..ReplayReport::default() };
    let mut last_seq = None;
    let mut live_segments = 0;
    let mut dir_changed = false;
    // Reused across records so replay allocates once per size high-water mark, not per record.
    let mut payload = Vec::new();

    for (index, (id, path)) in segments.iter().enumerate() {
        let context = |what: &str| format!("{what} WAL segment {}", path.display());
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| WalError::io(context("opening"), e))?;
        let before = report.records;
        let end = scan(&file, *id, &mut last_seq, &mut payload, &mut report, on_record)
            .map_err(|e| WalError::io(context("reading"), e))?;
        let kept_records = report.records > before;

        let damage = match end {
            End::Clean => None,
            End::Torn { offset, reason } => {
                file.set_len(offset).map_err(|e| WalError::io(context("truncating"), e))?;
                file.sync_data().map_err(|e| WalError::io(context("syncing"), e))?;
                Some(Damage { segment: path.clone(), offset, reason })
            }
            End::TornHeader => {
                // A crash between creating the file and syncing its header: nothing was ever
                // acknowledged in it, so the file itself is the only thing to clean up.
                fs::remove_file(path).map_err(|e| WalError::io(context("removing"), e))?;
                dir_changed = true;
                Some(Damage { segment: path.clone(), offset: 0, reason: "torn segment header".into() })
            }
            End::ForeignHeader => {
                // Not our header: keep the bytes for a human instead of truncating them away,
                // but out of the way of future replays (the new name no longer parses).
                let aside = path.with_extension("wal.corrupt");
                fs::rename(path, &aside).map_err(|e| WalError::io(context("setting aside"), e))?;
                dir_changed = true;
                Some(Damage {
                    segment: path.clone(),
                    offset: 0,
                    reason: format!("bad segment magic, file renamed to {}", aside.display()),
                })
            }
        };
        drop(file);

        if let Some(damage) = damage {
            let is_last = index + 1 == segments.len();
            if is_last {
                tracing::warn!(segment = %damage.segment.display(), offset = damage.offset,
                    reason = %damage.reason, "WAL tail damaged; kept the intact prefix");
            } else {
                // Only the last segment can legitimately have a torn tail (it is the only one
                // written during a crash); damage earlier means bit rot or tampering.
                tracing::error!(segment = %damage.segment.display(), offset = damage.offset,
                    reason = %damage.reason,
                    "WAL damaged before its last segment; later records may be missing");
            }
            report.damage.push(damage);
        }

        if kept_records {
            live_segments += 1;
        } else if path.exists() {
            // A header-only segment holds nothing; removing it keeps the invariant the writer's
            // segment creation relies on (no file at an id >= next_seq).
            fs::remove_file(path).map_err(|e| WalError::io(context("removing empty"), e))?;
            dir_changed = true;
        }
    }

    if dir_changed {
        segment::sync_dir(dir).map_err(|e| WalError::io(format!("syncing WAL directory {}", dir.display()), e))?;
    }
    Ok(Replayed { report, last_seq, live_segments })
}

enum End {
    Clean,
    Torn { offset: u64, reason: String },
    TornHeader,
    ForeignHeader,
}

/// Reads one segment, feeding intact records to `on_record`. I/O errors are returned as errors
/// (a failing disk is not a torn tail, and truncating on EIO would destroy good data).
fn scan(
    file: &File,
    id: u64,
    last_seq: &mut Option<u64>,
    payload: &mut Vec<u8>,
    report: &mut ReplayReport,
    on_record: &mut dyn FnMut(Record<'_>),
) -> io::Result<End> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);

    let mut magic = [0u8; MAGIC.len()];
    let n = read_full(&mut reader, &mut magic)?;
    if n < MAGIC.len() {
        return Ok(if magic[..n] == MAGIC[..n] { End::TornHeader } else { End::ForeignHeader });
    }
    if &magic != MAGIC {
        return Ok(End::ForeignHeader);
    }

    let mut offset = MAGIC.len() as u64;
    let torn = |offset, reason: &str| Ok(End::Torn { offset, reason: reason.to_owned() });
    loop {
        let mut header = [0u8; FRAME_HEADER];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok(End::Clean),
            FRAME_HEADER => {}
            _ => return torn(offset, "torn record header"),
        }
        let frame = segment::decode_header(&header);
        let len = frame.len as usize;
        if len > MAX_RECORD_BYTES {
            return torn(offset, "implausible record length");
        }
        // Bound the allocation by what the file can actually hold, not by the length field.
        let available = file_len.saturating_sub(offset + FRAME_HEADER as u64);
        if frame.len as u64 > available {
            return torn(offset, "record extends past end of segment");
        }
        payload.resize(len, 0);
        if read_full(&mut reader, payload)? < len {
            return torn(offset, "torn record payload");
        }
        if segment::checksum(frame.seq, payload) != frame.crc {
            return torn(offset, "record checksum mismatch");
        }
        // The checksum covers the seq, so these only fire for valid-looking records in the wrong
        // place (a stale or foreign file); accepting them would break the ordering promise.
        if frame.seq < id {
            return torn(offset, "record sequence number below segment id");
        }
        if last_seq.is_some_and(|last| frame.seq <= last) {
            return torn(offset, "record sequence number not increasing");
        }
        on_record(Record { seq: frame.seq, payload });
        *last_seq = Some(frame.seq);
        report.records += 1;
        report.bytes += len as u64;
        offset += (FRAME_HEADER + len) as u64;
    }
}

/// Like `read_exact`, but reports how much it got instead of failing at end of file, because a
/// short read is exactly the torn-tail signal replay looks for.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
