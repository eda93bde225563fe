//! Disk full while writing: the write fails with 503, nothing is acknowledged or stored, the
//! server keeps serving, and writes succeed again once space returns. Runs on a small tmpfs, so
//! it needs root (as CI has).

use corral_testkit::TestServer;
use serde_json::json;
use std::io::Write;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root; run this test as root (CI does)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the filesystem until the kernel says ENOSPC; returns the filler's path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    // Byte-sized leftovers too, so not even a small WAL record fits.
    while file.write_all(&[0u8; 512]).is_ok() {}
    while file.write_all(&[0u8]).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_and_recovers() {
    let fs = Tmpfs::mount("24m");
    let data = fs.0.path().join("data");
    let server = TestServer::start_in_dir(BIN, &data, &[]).await;
    let token = server.register_device("d1", json!({})).await;
    assert_eq!(server.ingest(&token, "telemetry", r#"{"x": 1}"#).await.0, 200);

    let filler = fill(fs.0.path());
    let big = json!((0..200).map(|i| json!({"x": i, "note": "y".repeat(100)})).collect::<Vec<_>>()).to_string();
    let (status, out) = server.ingest(&token, "telemetry", &big).await;
    assert_eq!(status, 503, "{out}");
    assert!(out["error"].as_str().unwrap().contains("disk full"), "{out}");
    // Reads still work, and nothing of the refused write is visible.
    assert_eq!(server.count("telemetry").await, 1);
    let (status, _) = server.admin(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200);

    std::fs::remove_file(filler).unwrap();
    let (status, out) = server.ingest(&token, "telemetry", &big).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(server.count("telemetry").await, 201);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("corral_write_failures_total ") && !l.ends_with(" 0")), "{metrics}");
}
