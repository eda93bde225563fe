//! Append, reopen, replay: payloads, sequence numbers and their continuation.

use super::{open, open_dir, payload, segments};
use crate::{MAX_RECORD_BYTES, Wal, WalConfig, WalError};

#[tokio::test]
async fn replay_returns_every_record_in_order_and_seqs_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, seen, report) = open_dir(dir.path());
    assert!(seen.is_empty());
    assert_eq!(report.segments, 0);

    let mut expected = Vec::new();
    for i in 0..50 {
        let seq = wal.append(payload(i)).await.unwrap();
        expected.push((seq, payload(i)));
    }
    // An empty payload is a valid record too.
    expected.push((wal.append(Vec::new()).await.unwrap(), Vec::new()));
    let seqs: Vec<u64> = expected.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    let metrics = wal.metrics();
    assert_eq!(metrics.appends, 51);
    assert_eq!(metrics.segments_on_disk, 1);
    drop(wal); // dropping the last handle stops the writer like shutdown does

    let (wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, expected);
    assert_eq!(report.segments, 1);
    assert!(report.damage.is_empty());
    assert_eq!(report.bytes, expected.iter().map(|(_, p)| p.len() as u64).sum::<u64>());
    assert_eq!(wal.append(b"after".to_vec()).await.unwrap(), 52);
    wal.shutdown();

    let (_wal, seen, _) = open_dir(dir.path());
    assert_eq!(seen.len(), 52);
    assert_eq!(seen.last().unwrap(), &(52, b"after".to_vec()));
}

#[tokio::test]
async fn start_seq_is_respected_when_no_segment_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    for i in 0..3 {
        wal.append(payload(i)).await.unwrap();
    }
    let rotated = wal.rotate().await.unwrap();
    assert_eq!(rotated, 4);
    assert_eq!(wal.remove_segments_before(rotated).unwrap(), 1);
    wal.shutdown();

    // The store persisted 1..=3 and says the next record must be at least 1000.
    let config = WalConfig { start_seq: 1000, ..WalConfig::new(dir.path()) };
    let (wal, seen, report) = open(config);
    assert!(seen.is_empty());
    assert!(report.damage.is_empty());
    assert_eq!(wal.append(b"a".to_vec()).await.unwrap(), 1000);
    wal.shutdown();

    // A start_seq below what the log holds never makes sequence numbers go backwards.
    let config = WalConfig { start_seq: 5, ..WalConfig::new(dir.path()) };
    let (wal, seen, _) = open(config);
    assert_eq!(seen, [(1000, b"a".to_vec())]);
    assert_eq!(wal.append(b"b".to_vec()).await.unwrap(), 1001);
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/wal");
    let (wal, _, _) = open_dir(&nested);
    assert_eq!(wal.append(b"x".to_vec()).await.unwrap(), 1);
    assert_eq!(segments(&nested).len(), 1);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let second = Wal::open(WalConfig::new(dir.path()), |_| {});
    assert!(matches!(second, Err(WalError::Locked { .. })), "{second:?}");

    wal.append(b"x".to_vec()).await.unwrap();
    wal.shutdown();
    // The old handle still exists, but shutdown released the directory.
    let (_wal2, seen, _) = open_dir(dir.path());
    assert_eq!(seen, [(1, b"x".to_vec())]);
    assert!(matches!(wal.append(b"y".to_vec()).await, Err(WalError::Closed)));
    assert!(matches!(wal.rotate().await, Err(WalError::Closed)));
    assert!(matches!(wal.remove_segments_before(u64::MAX), Err(WalError::Closed)));
    wal.shutdown(); // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_queued_appends_finish_and_acked_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { (i, wal.append(payload(i)).await) })
        })
        .collect();
    tokio::task::yield_now().await;
    let stopper = wal.clone();
    tokio::task::spawn_blocking(move || stopper.shutdown()).await.unwrap();

    let mut acked = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(seq)) => acked.push((seq, payload(i))),
            (_, Err(WalError::Closed)) => {} // queued after the shutdown request
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    acked.sort();
    let (_wal, seen, _) = open_dir(dir.path());
    assert_eq!(seen, acked);
}

#[tokio::test]
async fn oversized_records_are_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    // calloc-backed, so the 256 MiB are never touched.
    let err = wal.append(vec![0; MAX_RECORD_BYTES + 1]).await.unwrap_err();
    assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
    assert_eq!(wal.append(b"ok".to_vec()).await.unwrap(), 1);
}
