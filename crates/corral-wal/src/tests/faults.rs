//! Write and fsync failures: nothing unacknowledged is acked, nothing bad is left behind, and
//! the log keeps serving once the cause is gone.

use super::open_dir;
use crate::WalError;
use crate::writer::Fault;

#[tokio::test]
async fn a_full_disk_fails_the_group_and_the_next_append_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let a = wal.append(b"before".to_vec()).await.unwrap();

    wal.inject_fault(Fault::WriteStorageFull);
    let err = wal.append(vec![7; 1000]).await.unwrap_err();
    assert!(err.is_storage_full(), "{err}");
    assert!(matches!(err, WalError::StorageFull { .. }));
    assert_eq!(wal.metrics().write_errors, 1);

    let c = wal.append(b"after".to_vec()).await.unwrap();
    assert!(c > a);
    let metrics = wal.metrics();
    assert_eq!(metrics.appends, 2);
    wal.shutdown();

    // The half-written record was cut off: no damage, no garbage between the two good ones.
    let (_wal, seen, report) = open_dir(dir.path());
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(seen, [(a, b"before".to_vec()), (c, b"after".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_of_a_failed_group_gets_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    wal.inject_fault(Fault::WriteStorageFull);
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { (i, wal.append(vec![i; 100]).await) })
        })
        .collect();
    let mut acked = Vec::new();
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(seq)) => acked.push((seq, vec![i; 100])),
            (_, Err(e)) => {
                assert!(e.is_storage_full(), "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed >= 1);
    assert_eq!(wal.metrics().write_errors, 1);
    wal.shutdown();

    acked.sort();
    let (_wal, seen, report) = open_dir(dir.path());
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(seen, acked, "only acknowledged records come back");
}

#[tokio::test]
async fn a_failed_fsync_is_never_acked_and_the_writer_moves_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let a = wal.append(b"a".to_vec()).await.unwrap();
    let segment_before = wal.active_segment();

    wal.inject_fault(Fault::SyncFails);
    let err = wal.append(b"lost".to_vec()).await.unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(!err.is_storage_full());
    assert!(wal.active_segment() > segment_before);

    let c = wal.append(b"c".to_vec()).await.unwrap();
    assert!(c > a + 1, "the failed record's number is not reused");
    assert_eq!(wal.metrics().write_errors, 1);
    wal.shutdown();

    let (_wal, seen, report) = open_dir(dir.path());
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(seen, [(a, b"a".to_vec()), (c, b"c".to_vec())]);
}
