//! Rotation, size-based rolling and deletion of persisted segments.

use super::{open, open_dir, payload, segments};
use crate::WalConfig;

#[tokio::test]
async fn removing_segments_before_a_rotation_leaves_only_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(wal.append(payload(i)).await.unwrap());
    }
    let rotated = wal.rotate().await.unwrap();
    assert!(before.iter().all(|&seq| seq < rotated));
    // Nothing appended since: rotating again keeps the (empty) segment.
    assert_eq!(wal.rotate().await.unwrap(), rotated);

    let mut after = Vec::new();
    for i in 3..5 {
        after.push((wal.append(payload(i)).await.unwrap(), payload(i)));
    }
    assert!(after.iter().all(|&(seq, _)| seq >= rotated));
    assert_eq!(wal.metrics().segments_on_disk, 2);
    assert_eq!(wal.remove_segments_before(rotated).unwrap(), 1);
    assert_eq!(wal.remove_segments_before(rotated).unwrap(), 0);
    assert_eq!(wal.metrics().segments_on_disk, 1);
    assert_eq!(segments(dir.path()).iter().map(|(id, _)| *id).collect::<Vec<_>>(), [rotated]);
    wal.shutdown();

    let (_wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, after);
    assert_eq!(report.segments, 1);
    assert!(report.damage.is_empty());
}

#[tokio::test]
async fn the_active_segment_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let seq = wal.append(b"keep".to_vec()).await.unwrap();
    assert_eq!(wal.remove_segments_before(u64::MAX).unwrap(), 0);
    wal.shutdown();
    let (_wal, seen, _) = open_dir(dir.path());
    assert_eq!(seen, [(seq, b"keep".to_vec())]);
}

#[tokio::test]
async fn rotation_is_ordered_with_appends_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    // Queue appends and a rotation without waiting in between: the queue order decides.
    let (a, b, rotated, c) =
        tokio::join!(wal.append(b"a".to_vec()), wal.append(b"b".to_vec()), wal.rotate(), wal.append(b"c".to_vec()),);
    let rotated = rotated.unwrap();
    assert!(a.unwrap() < rotated && b.unwrap() < rotated);
    assert!(c.unwrap() >= rotated);
}

#[tokio::test]
async fn the_writer_rolls_to_a_new_segment_at_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig { segment_bytes: 200, ..WalConfig::new(dir.path()) };
    let (wal, _, _) = open(config.clone());
    let mut expected = Vec::new();
    for i in 0..20 {
        let payload = vec![i as u8; 50];
        expected.push((wal.append(payload.clone()).await.unwrap(), payload));
    }
    let segs = segments(dir.path());
    // 8-byte header + 66 bytes per record: three records reach 200 bytes.
    assert_eq!(segs.len(), 7, "{segs:?}");
    assert_eq!(wal.metrics().segments_on_disk, 7);
    // Each segment's id is the seq of its first record.
    let ids: Vec<u64> = segs.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 4, 7, 10, 13, 16, 19]);
    wal.shutdown();

    let (wal, seen, report) = open(config);
    assert_eq!(seen, expected);
    assert_eq!(report.segments, 7);
    assert_eq!(wal.metrics().segments_on_disk, 8);
}
