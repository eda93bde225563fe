//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (npm, `tests/browser/`), against a server on port 0. The steps are in
//! `tests/browser/console.mjs` (the tour of every page), `tests/browser/twin.mjs` (the device
//! twin on the device page) and `tests/browser/campaigns.mjs` (a firmware campaign's progress,
//! failures and actions); screenshots of every page land in
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
        "account-broker-users",
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

/// The campaigns page follows a firmware campaign: six devices in two waves, the first wave's
/// devices report a failure (two the same reason, one a reason that looks like HTML) through their
/// twins. The page lists the campaigns a page at a time, shows the waves with their counts and
/// the failure reasons, follows a report as it comes, and pauses and resumes the campaign (and
/// cancels a draft) for an administrator, none of which a viewer is offered.
#[tokio::test]
async fn a_campaign_shows_its_progress_and_is_paused_in_chromium() {
    let server = TestServer::start(BIN).await;
    let mut tokens = std::collections::BTreeMap::new();
    for i in 1..=6 {
        let id = format!("cx-{i:02}");
        let token = server.register_device(&id, json!({"profile": "cx", "site": "lab"})).await;
        tokens.insert(id, token);
    }
    server.register_device("other-1", json!({"profile": "reefer"})).await;
    // 25 older drafts fill the list's first page, so its second page holds the oldest two.
    for i in 0..25 {
        let draft = json!({"name": format!("old draft {i:02}"), "configuration": {"interval_s": 60}, "target": {"profile": "reefer"}, "start": false});
        let (status, out) = server.admin(Method::POST, "/api/v1/campaigns", Some(draft)).await;
        assert_eq!((status, &out["state"]), (201, &json!("draft")), "{out}");
    }
    let response = server
        .http
        .post(server.url("/api/v1/artifacts?name=fw&version=2.0.0"))
        .bearer_auth(ADMIN_TOKEN)
        .body(vec![0x5a_u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let artifact: serde_json::Value = response.json().await.unwrap();
    let artifact = artifact["id"].as_str().expect("an artifact id").to_string();
    let rollout = json!({"name": "fw rollout", "artifact": artifact, "target": {"where": "device LIKE 'cx-%'"},
        "plan": {"waves": ["50%", "100%"], "concurrency": 10}});
    let (status, campaign) = server.admin(Method::POST, "/api/v1/campaigns", Some(rollout)).await;
    assert_eq!(status, 201, "{campaign}");
    assert_eq!(
        (&campaign["state"], &campaign["devices"], &campaign["version"]),
        (&json!("running"), &json!(6), &json!("2.0.0")),
        "{campaign}"
    );
    let id = campaign["id"].as_str().expect("a campaign id").to_string();

    let (status, page) = server.admin(Method::GET, &format!("/api/v1/campaigns/{id}/devices"), None).await;
    assert_eq!(status, 200, "{page}");
    let in_wave = |wave: u64| -> Vec<String> {
        page["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["wave"] == wave)
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect()
    };
    let (first, second) = (in_wave(1), in_wave(2));
    assert_eq!((first.len(), second.len()), (3, 3), "{page}");
    let report = |state: &str, reason: &str| json!({"campaigns": {id.as_str(): {"state": state, "reason": reason}}});
    for (device, body) in [
        (&first[0], report("failed", "flash write error")),
        (&first[1], report("failed", "flash write error")),
        (&first[2], report("rolled-back", "<img src=x onerror=\"window.injected=1\">boot loop")),
    ] {
        let path = format!("/api/v1/devices/{device}/twin/reported");
        let (status, out) = server.call(Method::PATCH, &path, &tokens[device.as_str()], Some(body)).await;
        assert_eq!(status, 200, "{device}: {out}");
    }
    // The rollout hears the reports in its next round. The failure reasons and the wave's states
    // are written apart, so wait for both: waiting for the reasons alone raced the states.
    let mut progress = serde_json::Value::Null;
    let settled = json!({"failed": 2, "rolled-back": 1});
    for _ in 0..100 {
        progress = server.admin(Method::GET, &format!("/api/v1/campaigns/{id}"), None).await.1;
        if progress["failures"].as_array().is_some_and(|f| f.len() == 2) && progress["waves"][0]["states"] == settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(progress["failures"][0], json!({"reason": "flash write error", "devices": 2}), "{progress}");
    assert_eq!(progress["waves"][0]["states"], settled, "{progress}");
    // The newest campaign: a draft whose name looks like HTML.
    let draft = json!({"name": "<b>draft</b> interval", "configuration": {"interval_s": 30}, "target": {"profile": "reefer"}, "start": false});
    let (status, draft) = server.admin(Method::POST, "/api/v1/campaigns", Some(draft)).await;
    assert_eq!(status, 201, "{draft}");
    let draft = draft["id"].as_str().expect("a campaign id").to_string();
    let (status, out) = server.admin(Method::POST, "/api/v1/users", Some(json!({"name": "tess", "role": "viewer"}))).await;
    assert_eq!(status, 201, "{out}");
    let viewer_password = out["password"].as_str().expect("a generated password").to_string();

    let extra = [
        ("CAMPAIGN", id.clone()),
        ("DRAFT", draft.clone()),
        ("VIEWER_PASSWORD", viewer_password),
        ("SUCCEEDER", second[0].clone()),
        ("SUCCEEDER_TOKEN", tokens[second[0].as_str()].clone()),
    ];
    let shots = run_steps(&server, "campaigns.mjs", &extra).await;

    // What the console did, seen over REST: paused and resumed, so running; the draft cancelled.
    let (_, campaign) = server.admin(Method::GET, &format!("/api/v1/campaigns/{id}"), None).await;
    assert_eq!(campaign["state"], "running", "{campaign}");
    assert_eq!(campaign["states"]["succeeded"], 1, "{campaign}");
    let (_, draft) = server.admin(Method::GET, &format!("/api/v1/campaigns/{draft}"), None).await;
    assert_eq!((&draft["state"], &draft["reason"]), (&json!("cancelled"), &json!("cancelled by admin")), "{draft}");
    for page in ["campaigns", "campaign", "campaign-paused", "campaign-draft-cancelled", "campaign-viewer"] {
        assert!(shots.join(format!("{page}.png")).exists(), "screenshot {page}");
    }
}

/// The commands page lists commands newest first with their steps and answers, filters them by
/// state and device, and sends one: the device (polling over HTTP, in the script) answers while
/// the page waits, and the answer shows. A reason that looks like HTML stays text; a viewer gets
/// no form.
#[tokio::test]
async fn commands_are_followed_and_sent_in_chromium() {
    let server = TestServer::start(BIN).await;
    let valve1 = server.register_device("valve-1", json!({"profile": "valve"})).await;
    let valve2 = server.register_device("valve-2", json!({"profile": "valve"})).await;
    server.register_device("valve-3", json!({"profile": "valve"})).await;
    let create = |device: &'static str, name: &'static str| {
        let server = &server;
        async move {
            let body = json!({"name": name, "payload": {"position": 80}});
            let (status, out) = server.admin(Method::POST, &format!("/api/v1/devices/{device}/commands"), Some(body)).await;
            assert_eq!(status, 201, "{out}");
            out["id"].as_str().expect("a command id").to_string()
        }
    };
    let opened = create("valve-2", "valve/open").await;
    let refused = create("valve-2", "valve/close").await;
    let waiting = create("valve-3", "reboot").await;
    for (id, answer) in [
        (&opened, json!({"status": "succeeded", "payload": {"position": 80}})),
        (&refused, json!({"status": "failed", "reason": "<img src=x onerror=\"window.injected=1\">jammed"})),
    ] {
        let path = format!("/api/v1/devices/valve-2/commands/{id}/response");
        let (status, out) = server.call(Method::POST, &path, &valve2, Some(answer)).await;
        assert_eq!(status, 200, "{out}");
    }
    // A reading, so the device page the steps visit has telemetry to show.
    assert_eq!(server.ingest(&valve2, "telemetry", r#"{"position": 80}"#).await.0, 200);
    let (status, out) = server.admin(Method::POST, "/api/v1/users", Some(json!({"name": "tess", "role": "viewer"}))).await;
    assert_eq!(status, 201, "{out}");
    let viewer_password = out["password"].as_str().expect("a generated password").to_string();

    let extra = [
        ("OPENED", opened),
        ("REFUSED", refused),
        ("WAITING", waiting),
        ("DEVICE_TOKEN", valve1),
        ("VIEWER_PASSWORD", viewer_password),
    ];
    let shots = run_steps(&server, "commands.mjs", &extra).await;

    // What the console sent, seen over REST: by the admin, to valve-1, answered.
    let (_, list) = server.admin(Method::GET, "/api/v1/commands?device=valve-1", None).await;
    let sent = list["commands"].as_array().expect("a list");
    assert_eq!(sent.len(), 1, "one command sent from the console, none for the bad payload: {list}");
    assert_eq!(
        (&sent[0]["name"], &sent[0]["state"], &sent[0]["created_by"], &sent[0]["response"]),
        (&json!("valve/open"), &json!("succeeded"), &json!("admin"), &json!({"opened": true})),
        "{list}"
    );
    for page in ["commands", "commands-failed", "command-sent", "commands-viewer"] {
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
