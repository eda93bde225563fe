//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (npm, `tests/browser/`), against a server on port 0. The steps are in
//! `tests/browser/console.mjs` (the tour of every page) and `tests/browser/twin.mjs` (the device
//! twin on the device page); screenshots of every page land in
//! `<target>/tmp/console-screenshots` (kept as test artifacts). `scripts/test.sh` installs both.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

#[tokio::test]
async fn the_console_works_in_chromium() {
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

    let shots = run_steps(&server, "console.mjs", &[]).await;
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

/// The device page shows the twin (desired, reported, the delta) and an operator changes desired
/// there: the change is a new version over REST, a stale edit (desired moved on after the page
/// loaded) is refused with 412 and explained, a viewer gets no editor, and a reported value that
/// looks like HTML stays text.
#[tokio::test]
async fn the_device_twin_is_shown_and_edited_in_chromium() {
    let server = TestServer::start(BIN).await;
    let device = server.register_device("twin-1", json!({"profile": "reefer", "site": "lab"})).await;
    let (status, out) =
        server.admin(Method::PATCH, "/api/v1/devices/twin-1/twin/desired", Some(json!({"interval_s": 60, "fw": "2.1"}))).await;
    assert_eq!((status, &out["version"]), (200, &json!(1)), "{out}");
    let reported = json!({"interval_s": 60, "fw": "2.0", "battery": 80, "label": "<img src=x onerror=\"window.injected=1\">"});
    let (status, out) = server.call(Method::PATCH, "/api/v1/devices/twin-1/twin/reported", &device, Some(reported)).await;
    assert_eq!((status, &out["version"]), (200, &json!(1)), "{out}");
    let (status, out) = server.admin(Method::POST, "/api/v1/users", Some(json!({"name": "tess", "role": "viewer"}))).await;
    assert_eq!(status, 201, "{out}");
    let viewer_password = out["password"].as_str().expect("a generated password").to_string();

    let shots = run_steps(&server, "twin.mjs", &[("VIEWER_PASSWORD", viewer_password)]).await;

    // What the console did, seen over REST: the operator's patch made version 2, the stale one
    // was refused, so the REST change (version 3) stands.
    let (status, twin) = server.admin(Method::GET, "/api/v1/devices/twin-1/twin", None).await;
    assert_eq!(status, 200, "{twin}");
    assert_eq!(twin["desired"]["document"], json!({"interval_s": 45, "led": true}), "{twin}");
    assert_eq!(twin["desired"]["version"], 3, "{twin}");
    for page in ["device-twin", "device-twin-edited", "device-twin-stale", "device-twin-viewer"] {
        assert!(shots.join(format!("{page}.png")).exists(), "screenshot {page}");
    }
}

/// Runs `script` (in `tests/browser/`) with node against `server`, `extra` added to its
/// environment; returns the screenshots' directory. Fails the test with the steps' output and
/// the server's log when a step failed.
async fn run_steps(server: &TestServer, script: &'static str, extra: &[(&str, String)]) -> std::path::PathBuf {
    assert!(
        Path::new(DIR).join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "browser tests need Chromium and playwright-core: apt-get install chromium; npm ci --prefix {DIR} (scripts/test.sh does both)"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(DIR)
        .env("BASE", &server.base)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHOTS", &shots)
        .envs(extra.iter().map(|(k, v)| (k, v)));
    let run = tokio::task::spawn_blocking(move || command.output().expect("node")).await.unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "browser steps of {script} failed (screenshots in {}):\n{stdout}\n{}\nserver log:\n{}",
        shots.display(),
        String::from_utf8_lossy(&run.stderr),
        server.log_text()
    );
    shots
}
