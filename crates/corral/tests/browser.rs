//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (npm, `tests/browser/`), against a server on port 0. The steps are in
//! `tests/browser/console.mjs`; screenshots of every page land in
//! `<target>/tmp/console-screenshots` (kept as test artifacts). `scripts/test.sh` installs both.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use serde_json::json;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

#[tokio::test]
async fn the_console_works_in_chromium() {
    assert!(
        Path::new(DIR).join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "browser tests need Chromium and playwright-core: apt-get install chromium; npm ci --prefix {DIR} (scripts/test.sh does both)"
    );
    let server = TestServer::start(BIN).await;
    // A fleet: 120 devices over 4 sites, pages of 50.
    let sites = ["north", "south", "east", "west"];
    let mut csv = String::from("id,profile,site,tags\n");
    for i in 0..120 {
        csv.push_str(&format!("pump-{i:03},pump,{},fleet\n", sites[i % 4]));
    }
    let report: serde_json::Value = server
        .http
        .post(server.url("/api/v1/devices/import"))
        .bearer_auth(ADMIN_TOKEN)
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["accepted"].as_array().map(Vec::len), Some(120), "{report}");
    assert_eq!(report["rejected"], json!([]));

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let run = tokio::task::spawn_blocking({
        let (base, shots) = (server.base.clone(), shots.clone());
        move || {
            Command::new("node")
                .arg("console.mjs")
                .current_dir(DIR)
                .env("BASE", base)
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                .env("SHOTS", shots)
                .output()
                .expect("node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "browser steps failed (screenshots in {}):\n{stdout}\n{}\nserver log:\n{}",
        shots.display(),
        String::from_utf8_lossy(&run.stderr),
        server.log_text()
    );
    for page in [
        "login",
        "overview",
        "inventory",
        "registered",
        "device",
        "device-psk",
        "import-report",
        "alarms",
        "sql",
        "account-admin",
        "inventory-viewer-tablet",
        "password-changed",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "screenshot {page}");
    }
}
