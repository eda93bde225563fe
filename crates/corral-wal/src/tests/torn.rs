//! Torn and corrupt tails: replay keeps exactly the intact prefix, repairs the file, reports it.

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::{Replayed, open_dir, segments};
use crate::segment::{FRAME_HEADER, MAGIC};

const SIZES: [usize; 5] = [10, 0, 33, 7, 50];

/// Writes one segment holding records of `SIZES`; returns them and the last record's offset.
async fn write_records(dir: &Path) -> (Replayed, u64) {
    let (wal, _, _) = open_dir(dir);
    let mut records = Vec::new();
    for (i, size) in SIZES.into_iter().enumerate() {
        let payload = vec![i as u8 + 1; size];
        records.push((wal.append(payload.clone()).await.unwrap(), payload));
    }
    wal.shutdown();
    let last_start = MAGIC.len() + SIZES[..4].iter().map(|s| FRAME_HEADER + s).sum::<usize>();
    (records, last_start as u64)
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segs = segments(dir);
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].1.clone()
}

/// After damage at `last_start`: exactly the first four records come back, the file is cut
/// there, and the log keeps working across another reopen.
async fn assert_repaired(dir: &Path, records: &Replayed, last_start: u64) {
    let segment = only_segment(dir);
    let (wal, seen, report) = open_dir(dir);
    assert_eq!(seen, records[..4]);
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].segment, segment);
    assert_eq!(report.damage[0].offset, last_start);
    assert_eq!(fs::metadata(&segment).unwrap().len(), last_start);

    // The lost record was never durable, so its number is free again.
    assert_eq!(wal.append(b"again".to_vec()).await.unwrap(), records[4].0);
    wal.shutdown();
    let (_wal, seen, report) = open_dir(dir);
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[..4], records[..4]);
    assert_eq!(seen[4], (records[4].0, b"again".to_vec()));
}

#[tokio::test]
async fn truncation_inside_the_last_record_keeps_the_intact_prefix() {
    let last_len = (FRAME_HEADER + SIZES[4]) as u64;
    for cut in [1, 4, 8, 15, 16, 17, 40, last_len - 1] {
        let dir = tempfile::tempdir().unwrap();
        let (records, last_start) = write_records(dir.path()).await;
        let file = OpenOptions::new().write(true).open(only_segment(dir.path())).unwrap();
        assert_eq!(file.metadata().unwrap().len(), last_start + last_len);
        file.set_len(last_start + cut).unwrap();
        drop(file);
        assert_repaired(dir.path(), &records, last_start).await;
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_caught() {
    // In the length, the checksum, the sequence number and the payload.
    for at in [0, 1, 3, 5, 9, 15, 16, 40, 65] {
        let dir = tempfile::tempdir().unwrap();
        let (records, last_start) = write_records(dir.path()).await;
        let path = only_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[last_start as usize + at] ^= 0x10;
        fs::write(&path, bytes).unwrap();
        assert_repaired(dir.path(), &records, last_start).await;
    }
}

#[tokio::test]
async fn a_cut_on_a_record_boundary_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (records, last_start) = write_records(dir.path()).await;
    let file = OpenOptions::new().write(true).open(only_segment(dir.path())).unwrap();
    file.set_len(last_start).unwrap();
    drop(file);
    let (_wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, records[..4]);
    assert!(report.damage.is_empty());
}

#[tokio::test]
async fn damage_in_an_earlier_segment_does_not_hide_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let a = wal.append(b"a".to_vec()).await.unwrap();
    let b = wal.append(b"b".to_vec()).await.unwrap();
    wal.rotate().await.unwrap();
    let c = wal.append(b"c".to_vec()).await.unwrap();
    wal.shutdown();

    let first = segments(dir.path())[0].1.clone();
    let mut bytes = fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // payload of "b"
    fs::write(&first, bytes).unwrap();

    let (_wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, [(a, b"a".to_vec()), (c, b"c".to_vec())]);
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].segment, first);
    assert!(b < c);
}

#[tokio::test]
async fn torn_and_foreign_headers_are_cleared_out_of_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let a = wal.append(b"a".to_vec()).await.unwrap();
    wal.shutdown();
    // A crash right after creating the next segment, and a file that is not ours.
    fs::write(dir.path().join(crate::segment::file_name(50)), &MAGIC[..3]).unwrap();
    fs::write(dir.path().join(crate::segment::file_name(60)), b"not a wal segment").unwrap();

    let (wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, [(a, b"a".to_vec())]);
    assert_eq!(report.damage.len(), 2, "{report:?}");
    assert!(dir.path().join(format!("{}.corrupt", crate::segment::file_name(60))).exists());
    // Both gone from the segment list; the log continues right after the last record.
    assert_eq!(wal.append(b"b".to_vec()).await.unwrap(), a + 1);
    wal.shutdown();
    let (_wal, seen, report) = open_dir(dir.path());
    assert!(report.damage.is_empty());
    assert_eq!(seen.len(), 2);
}
