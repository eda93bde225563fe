//! One fsync covers every append waiting when it starts.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{open, open_dir, payload};
use crate::WalConfig;
use crate::writer::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    let before = wal.metrics();

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { (wal.append(payload(i)).await.unwrap(), payload(i)) })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.push(task.await.unwrap());
    }

    let after = wal.metrics();
    let appends = after.appends - before.appends;
    let fsyncs = after.fsyncs - before.fsyncs;
    assert_eq!(appends, 200);
    eprintln!("{fsyncs} fsyncs for {appends} appends");
    assert!(fsyncs < appends, "{fsyncs} fsyncs for {appends} appends");
    let distinct: BTreeSet<u64> = acked.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(distinct.len(), 200);
    wal.shutdown();

    acked.sort();
    let (_wal, seen, report) = open_dir(dir.path());
    assert_eq!(seen, acked);
    assert!(report.damage.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_queued_behind_a_slow_fsync_shares_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open_dir(dir.path());
    wal.inject_fault(Fault::SyncDelay(Duration::from_millis(300)));
    let first = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append(b"first".to_vec()).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // writer is now inside the slow fsync
    let before = wal.metrics().fsyncs;
    let rest: Vec<_> = (0..199)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(payload(i)).await.unwrap() })
        })
        .collect();
    assert_eq!(first.await.unwrap(), 1);
    for task in rest {
        task.await.unwrap();
    }
    // The slow fsync itself, then one for all 199 that queued meanwhile.
    assert_eq!(wal.metrics().fsyncs - before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_group_bytes_caps_one_group() {
    let dir = tempfile::tempdir().unwrap();
    // Two 20-byte payloads (36 bytes framed each) fit in 100 bytes, three do not.
    let config = WalConfig { max_group_bytes: 100, ..WalConfig::new(dir.path()) };
    let (wal, _, _) = open(config);
    wal.inject_fault(Fault::SyncDelay(Duration::from_millis(300)));
    let first = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append(vec![0; 20]).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = wal.metrics().fsyncs;
    let rest: Vec<_> = (0..10)
        .map(|_| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(vec![1; 20]).await.unwrap() })
        })
        .collect();
    first.await.unwrap();
    for task in rest {
        task.await.unwrap();
    }
    assert_eq!(wal.metrics().fsyncs - before, 1 + 5);
}
