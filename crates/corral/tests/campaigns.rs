//! Firmware campaigns end to end on a real server, with a fleet of real HTTP devices
//! (`tests/clients/firmware_agent.py`: 200 devices in one process that long-poll their commands,
//! download the artifact in `Range` pieces, verify it with the tenant's key and report each step
//! in their reported twin): a healthy rollout goes wave after wave to every device, once each;
//! failures past the threshold abort it in their wave; pause, resume and cancel hold; a cut
//! download resumes with `curl -C -`; a tampered artifact is refused by the devices; `kill -9`
//! mid-campaign loses nothing and sends nothing twice; bad input is refused and leaves nothing.

use corral_testkit::{ADMIN_TOKEN, Script, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/firmware_agent.py");
/// The artifacts' size: four 64 KiB ranges per download.
const IMAGE_BYTES: usize = 256 << 10;

/// Registers `n` devices `<prefix>-000`... of `profile` (concurrently) and returns (id, token).
async fn fleet(server: &TestServer, prefix: &str, n: usize, profile: &str) -> Vec<(String, String)> {
    let mut registering = tokio::task::JoinSet::new();
    for i in 0..n {
        let (url, http) = (server.url("/api/v1/devices"), server.http.clone());
        let (id, profile) = (format!("{prefix}-{i:03}"), profile.to_string());
        registering.spawn(async move {
            let body = json!({"id": id, "profile": profile});
            let response = http.post(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.expect("register");
            assert_eq!(response.status().as_u16(), 201, "register {id}");
            let created: Value = response.json().await.expect("created device");
            (id, created["token"].as_str().expect("token").to_string())
        });
    }
    let mut devices = registering.join_all().await;
    devices.sort();
    devices
}

/// A firmware image: `len` pseudo-random bytes from `seed`.
fn image(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(format!("{seed}:{i}")));
        i += 1;
    }
    out.truncate(len);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `POST /api/v1/artifacts?<query>` with `body` as `token`.
async fn upload(server: &TestServer, token: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/api/v1/artifacts?{query}")))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Uploads `body` as admin (Corral signs it); the artifact.
async fn artifact(server: &TestServer, name: &str, version: &str, body: Vec<u8>) -> Value {
    let (status, out) = upload(server, ADMIN_TOKEN, &format!("name={name}&version={version}"), body).await;
    assert_eq!(status, 201, "upload {name} {version}: {out}");
    assert_eq!(out["signed_by"], "corral", "{out}");
    out
}

/// The default tenant's public key: what the devices trust.
async fn signing_key(server: &TestServer) -> String {
    let (status, out) = server.admin(Method::GET, "/api/v1/artifacts/signing-key", None).await;
    assert_eq!(status, 200, "{out}");
    out["public_key"].as_str().expect("public_key").to_string()
}

/// `POST /api/v1/campaigns` as admin; asserts 201 and returns the progress.
async fn campaign(server: &TestServer, body: Value) -> Value {
    let (status, out) = server.admin(Method::POST, "/api/v1/campaigns", Some(body.clone())).await;
    assert_eq!(status, 201, "{body}: {out}");
    out
}

async fn progress(server: &TestServer, id: &str) -> Value {
    let (status, out) = server.admin(Method::GET, &format!("/api/v1/campaigns/{id}"), None).await;
    assert_eq!(status, 200, "{out}");
    out
}

async fn act(server: &TestServer, id: &str, action: &str) -> (u16, Value) {
    server.admin(Method::POST, &format!("/api/v1/campaigns/{id}/{action}"), None).await
}

/// How many of a campaign's devices are in `state` (from its progress).
fn count(progress: &Value, state: &str) -> u64 {
    progress["states"][state].as_u64().unwrap_or(0)
}

/// The campaign's progress once `done` holds; panics after `within`.
async fn wait_until(server: &TestServer, id: &str, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let now = progress(server, id).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "campaign {id}: not {what} within {within:?}: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every device of a campaign (all pages), by device id.
async fn campaign_devices(server: &TestServer, id: &str) -> BTreeMap<String, Value> {
    let (mut devices, mut after) = (BTreeMap::new(), String::new());
    loop {
        let from = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let path = format!("/api/v1/campaigns/{id}/devices?limit=1000{from}");
        let (status, out) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{out}");
        for device in out["devices"].as_array().expect("devices") {
            devices.insert(device["device"].as_str().unwrap().to_string(), device.clone());
        }
        match out["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => return devices,
        }
    }
}

/// Not pending and not final: told, and not done yet.
fn in_flight(device: &Value) -> bool {
    !matches!(device["state"].as_str(), Some("pending" | "succeeded" | "failed" | "rolled-back" | "timed-out"))
}

/// Waits until none of the campaign's devices is in flight (the agent answered every command it
/// took), and returns them.
async fn settled(server: &TestServer, id: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let devices = campaign_devices(server, id).await;
        let busy: Vec<&Value> = devices.values().filter(|d| in_flight(d)).collect();
        if busy.is_empty() {
            return devices;
        }
        assert!(Instant::now() < deadline, "campaign {id}: devices still in flight: {busy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `firmware.update` commands the ledger holds for a campaign, per device (SQL).
async fn firmware_commands(server: &TestServer, campaign: &str) -> BTreeMap<String, u64> {
    let sql = format!(
        "SELECT device, count(*) FROM commands WHERE name = 'firmware.update' AND created_by = 'campaign:{campaign}' \
         GROUP BY device"
    );
    server.query(&sql).await.iter().map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap())).collect()
}

/// The device agent, running over `devices` until stopped.
struct Agent {
    script: Script,
    stop: PathBuf,
    _dir: tempfile::TempDir,
}

/// What the agent says at the end.
struct Summary {
    /// `devices` of the summary: per device, its commands and updates.
    devices: Value,
    whole: Value,
    /// Its "error ..." lines.
    errors: Vec<String>,
}

impl Summary {
    /// How many `firmware.update` commands of `campaign` the device received.
    fn commands(&self, device: &str, campaign: &str) -> u64 {
        self.devices[device]["commands"][campaign].as_u64().unwrap_or(0)
    }

    fn update<'a>(&'a self, device: &str, campaign: &str) -> &'a Value {
        &self.devices[device]["campaigns"][campaign]
    }
}

impl Agent {
    fn start(server: &TestServer, devices: &[(String, String)], trusted_key: &str, args: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let list: String = devices.iter().map(|(id, token)| format!("{id} {token}\n")).collect();
        std::fs::write(dir.path().join("devices"), list).expect("devices file");
        let stop = dir.path().join("stop");
        let mut command = Command::new("python3");
        command
            .arg(AGENT)
            .arg("run")
            .args(["--base", &server.base, "--trusted-key", trusted_key, "--poll-wait", "5"])
            .arg("--devices")
            .arg(dir.path().join("devices"))
            .arg("--stop-file")
            .arg(&stop)
            .args(args);
        let mut script = Script::spawn(command, &["error", "unexpected", "Traceback"]);
        assert_eq!(script.wait_for("ready"), format!("ready {}", devices.len()));
        Agent { script, stop, _dir: dir }
    }

    /// Tells the agent to stop; its summary.
    fn stop(self) -> Summary {
        std::fs::write(&self.stop, b"").expect("stop file");
        let Agent { script, stop: _, _dir } = self;
        let lines = script.finish();
        let summary = lines
            .iter()
            .find_map(|l| l.strip_prefix("summary "))
            .unwrap_or_else(|| panic!("the agent printed no summary: {lines:?}"));
        let whole: Value = serde_json::from_str(summary).expect("summary JSON");
        assert_eq!(whole["busy_at_exit"], 0, "the agent stopped in the middle of an update");
        let errors = lines.iter().filter(|l| l.starts_with("error") || l.starts_with("unexpected")).cloned().collect();
        Summary { devices: whole["devices"].clone(), whole, errors }
    }
}

fn plan(waves: Value, concurrency: u64) -> Value {
    json!({
        "waves": waves, "concurrency": concurrency, "min_success_ratio": 0.8,
        "abort": {"failure_ratio": 0.1}, "device_timeout_s": 60,
    })
}

/// For each wave after the first, no device was notified before every device of the one before
/// was final (its last change): the waves really ran one after the other.
fn assert_sequential(devices: &BTreeMap<String, Value>, waves: usize) {
    let at = |d: &Value, field: &str| d[field].as_i64().unwrap_or_else(|| panic!("{field} missing: {d}"));
    for wave in 1..waves {
        let done: Vec<&Value> = devices.values().filter(|d| d["wave"] == wave && d["state"] != "pending").collect();
        let next: Vec<&Value> = devices.values().filter(|d| d["wave"] == wave + 1 && d["state"] != "pending").collect();
        let (Some(last_final), Some(first_next)) =
            (done.iter().map(|d| at(d, "updated_at_ms")).max(), next.iter().map(|d| at(d, "notified_at_ms")).min())
        else {
            continue;
        };
        assert!(
            first_next >= last_final,
            "wave {} started at {first_next} before wave {wave} was final at {last_final}",
            wave + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_campaign_reaches_every_device_wave_after_wave_once_each() {
    let server = TestServer::start(BIN).await;
    let meters = fleet(&server, "meter", 200, "meter").await;
    server.register_device("pump-1", json!({"profile": "pump"})).await;
    let image = image("healthy", IMAGE_BYTES);
    let art = artifact(&server, "meter-fw", "2.0.0", image.clone()).await;
    assert_eq!((art["size"].as_u64(), art["sha256"].as_str()), (Some(IMAGE_BYTES as u64), Some(sha256_hex(&image).as_str())));
    let key = signing_key(&server).await;
    assert_eq!(art["public_key"].as_str(), Some(key.as_str()), "Corral signs with the tenant's key");
    let agent = Agent::start(&server, &meters, &key, &[]);

    let started = Instant::now();
    let body = json!({"name": "meters to 2.0.0", "artifact": art["id"], "target": {"profile": "meter"},
        "plan": plan(json!(["10%", "50%", "100%"]), 50)});
    let created = campaign(&server, body).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!((created["state"].as_str(), created["devices"].as_u64()), (Some("running"), Some(200)), "{created}");
    assert_eq!(created["version"], "2.0.0");
    let done = wait_until(&server, &id, Duration::from_secs(60), "completed", |p| p["state"] != "running").await;
    assert_eq!(done["state"], "completed", "{done}");
    eprintln!("200 devices updated in {:?}", started.elapsed());
    assert_eq!(done["states"], json!({"succeeded": 200}), "{done}");
    let waves: Vec<(u64, Value)> =
        done["waves"].as_array().unwrap().iter().map(|w| (w["devices"].as_u64().unwrap(), w["states"].clone())).collect();
    assert_eq!(
        waves,
        vec![(20, json!({"succeeded": 20})), (80, json!({"succeeded": 80})), (100, json!({"succeeded": 100}))],
        "cumulative waves: 10 % of 200, then up to 50 %, then the rest"
    );
    assert!(done["finished_at_ms"].as_i64().is_some() && done["reason"].is_null(), "{done}");

    let devices = settled(&server, &id).await;
    let summary = agent.stop();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.whole["expectation_met"], true);
    assert_sequential(&devices, 3);

    // Each device received exactly one command, verified the image and succeeded; the listing,
    // the ledger and the agent agree on which command it was.
    let ledger = firmware_commands(&server, &id).await;
    assert_eq!(ledger.len(), 200, "{ledger:?}");
    for (device, _) in &meters {
        assert_eq!(summary.commands(device, &id), 1, "{device}: {}", summary.devices[device]);
        assert_eq!(ledger.get(device), Some(&1), "{device}");
        let update = summary.update(device, &id);
        assert_eq!((update["final"].as_str(), update["verification"].as_str()), (Some("succeeded"), Some("ok")), "{update}");
        assert_eq!(update["states"], json!(["downloading", "downloaded", "installing", "succeeded"]));
        let listed = &devices[device];
        assert_eq!(listed["state"], "succeeded");
        assert_eq!(summary.devices[device]["command_ids"], json!([listed["command"]]), "{device}");
    }
    assert!(summary.devices.get("pump-1").is_none());
    let (_, pump) = server.admin(Method::GET, "/api/v1/commands?device=pump-1", None).await;
    assert_eq!(pump["commands"], json!([]), "another profile is not in the campaign");

    // The installed version: on every device, in its reported twin, and SQL counts the same.
    for (device, _) in &meters {
        let (status, shown) = server.admin(Method::GET, &format!("/api/v1/devices/{device}"), None).await;
        assert_eq!((status, shown["attributes"]["firmware_version"].as_str()), (200, Some("2.0.0")), "{shown}");
    }
    assert_eq!(server.twin("meter-007").await["reported"]["document"]["firmware_version"], "2.0.0");
    let (status, by_state) = server
        .admin(Method::POST, "/api/v1/query", Some(json!({"sql": "SELECT state, count(*) FROM campaign_devices GROUP BY state"})))
        .await;
    assert_eq!(status, 200, "{by_state}");
    assert_eq!(by_state["rows"], json!([["succeeded", 200]]));
    let installed = server
        .query(&format!(
            "SELECT count(*) FROM campaign_devices c JOIN devices d ON d.device = c.device \
             WHERE c.campaign = '{id}' AND c.state = 'succeeded' AND json_get_str(d.attributes, 'firmware_version') = '2.0.0'"
        ))
        .await;
    assert_eq!(installed, vec![vec![json!(200)]]);
    let waves_sql = server.query("SELECT wave, count(*) FROM campaign_devices GROUP BY wave ORDER BY wave").await;
    assert_eq!(waves_sql, vec![vec![json!(1), json!(20)], vec![json!(2), json!(80)], vec![json!(3), json!(100)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_threshold_abort_the_campaign_in_their_wave() {
    let server = TestServer::start(BIN).await;
    let meters = fleet(&server, "m", 200, "meter").await;
    let art = artifact(&server, "meter-fw", "2.1.0", image("failing", IMAGE_BYTES)).await;
    let key = signing_key(&server).await;

    // A draft first: its waves are drawn, so 20 % of the devices can be chosen to fail where
    // it matters: 1 of wave 1's 20 (5 %, under the 10 % threshold), a quarter of wave 2, the
    // rest in wave 3, which must never be reached.
    let body = json!({"name": "risky", "artifact": art["id"], "target": {"profile": "meter"}, "start": false,
        "plan": plan(json!(["10%", "50%", "100%"]), 50)});
    let draft = campaign(&server, body).await;
    let id = draft["id"].as_str().unwrap().to_string();
    assert_eq!((draft["state"].as_str(), count(&draft, "pending")), (Some("draft"), 200), "{draft}");
    let drawn = campaign_devices(&server, &id).await;
    let in_wave = |w: u64| drawn.values().filter(move |d| d["wave"] == w).map(|d| d["device"].as_str().unwrap().to_string());
    let wave3: Vec<String> = in_wave(3).collect();
    let failing: Vec<String> = in_wave(1).take(1).chain(in_wave(2).take(20)).chain(wave3.iter().take(19).cloned()).collect();
    assert_eq!((failing.len(), wave3.len()), (40, 100));
    let agent = Agent::start(&server, &meters, &key, &["--fail", &failing.join(",")]);

    let (status, started) = act(&server, &id, "start").await;
    assert_eq!((status, started["state"].as_str()), (200, Some("running")), "{started}");
    let done = wait_until(&server, &id, Duration::from_secs(60), "stopped", |p| p["state"] != "running").await;
    assert_eq!(done["state"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.starts_with("wave 2: ") && reason.contains("more than 10 %"), "{reason}");
    let devices = settled(&server, &id).await;
    let summary = agent.stop();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    // Wave 1 is done (one failure, within its thresholds), wave 2 failed past 8 of its 80.
    let states = |w: u64| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for d in devices.values().filter(|d| d["wave"] == w) {
            *out.entry(d["state"].as_str().unwrap().to_string()).or_default() += 1;
        }
        out
    };
    assert_eq!(states(1), BTreeMap::from([("failed".to_string(), 1), ("succeeded".to_string(), 19)]));
    let wave2 = states(2);
    assert!(wave2.get("failed").copied().unwrap_or(0) > 8, "{wave2:?}");
    assert_eq!(wave2.keys().filter(|s| !["failed", "succeeded", "pending"].contains(&s.as_str())).count(), 0, "{wave2:?}");
    assert_eq!(states(3), BTreeMap::from([("pending".to_string(), 100)]), "nothing past the aborting wave");
    for d in devices.values().filter(|d| d["state"] == "failed") {
        assert_eq!(d["reason"], "flash write error", "{d}");
        assert!(failing.contains(&d["device"].as_str().unwrap().to_string()), "{d}");
    }
    assert!(done["failures"].to_string().contains("flash write error"), "{done}");

    // Wave 3 heard nothing: no command in the ledger, none received.
    let ledger = firmware_commands(&server, &id).await;
    for device in &wave3 {
        assert_eq!(summary.commands(device, &id), 0, "{device}");
        assert!(!ledger.contains_key(device), "{device} was sent a command");
        let listed = &devices[device];
        assert!(listed["notified_at_ms"].is_null() && listed["command"].is_null(), "{listed}");
    }
    for device in wave3.iter().take(10) {
        let (_, commands) = server.admin(Method::GET, &format!("/api/v1/commands?device={device}"), None).await;
        assert_eq!(commands["commands"], json!([]), "{device}");
    }
    // Every notified device got its one command and ended as it was told to.
    for d in devices.values().filter(|d| d["state"] != "pending") {
        let device = d["device"].as_str().unwrap();
        assert_eq!((summary.commands(device, &id), ledger.get(device)), (1, Some(&1)), "{device}");
    }
    let (status, again) = act(&server, &id, "resume").await;
    assert_eq!(status, 409, "an aborted campaign stays aborted: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_notifications_resume_goes_on_and_cancel_leaves_the_rest_pending() {
    let server = TestServer::start(BIN).await;
    let valves = fleet(&server, "valve", 60, "valve").await;
    let art = artifact(&server, "valve-fw", "3.0.0", image("valves", IMAGE_BYTES)).await;
    let key = signing_key(&server).await;
    // Slow devices, few at once: the campaign is still going when it is paused.
    let agent = Agent::start(&server, &valves, &key, &["--step-delay", "0.15"]);
    let body = json!({"name": "valves", "artifact": art["id"], "target": {"profile": "valve"},
        "plan": {"concurrency": 4, "device_timeout_s": 60}});
    let id = campaign(&server, body).await["id"].as_str().unwrap().to_string();
    wait_until(&server, &id, Duration::from_secs(30), "8 done", |p| count(p, "succeeded") >= 8).await;

    let (status, paused) = act(&server, &id, "pause").await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    let pending = count(&paused, "pending");
    let sent = firmware_commands(&server, &id).await.len();
    assert!(pending > 0 && pending < 60, "{paused}");
    assert_eq!(sent as u64, 60 - pending, "one command per notified device");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = progress(&server, &id).await;
    assert_eq!((still["state"].as_str(), count(&still, "pending")), (Some("paused"), pending), "{still}");
    assert_eq!(firmware_commands(&server, &id).await.len(), sent, "no command while paused");
    // The devices told before the pause still finish, and their reports are recorded.
    let devices = settled(&server, &id).await;
    assert_eq!(devices.values().filter(|d| d["state"] == "pending").count() as u64, pending);
    assert_eq!(act(&server, &id, "start").await.0, 409, "a paused campaign is resumed, not started");

    let (status, resumed) = act(&server, &id, "resume").await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("running")), "{resumed}");
    let moving = wait_until(&server, &id, Duration::from_secs(30), "going on", |p| count(p, "pending") + 4 <= pending).await;
    assert_eq!(moving["state"], "running");

    let (status, cancelled) = act(&server, &id, "cancel").await;
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled by admin");
    let left = count(&cancelled, "pending");
    assert!(left > 0, "the campaign ended before it was cancelled: {cancelled}");
    let sent = firmware_commands(&server, &id).await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = progress(&server, &id).await;
    assert_eq!((after["state"].as_str(), count(&after, "pending")), (Some("cancelled"), left), "{after}");
    assert_eq!(firmware_commands(&server, &id).await.len(), sent, "no command after the cancel");
    for action in ["resume", "start", "pause", "cancel"] {
        let (status, out) = act(&server, &id, action).await;
        assert_eq!(status, 409, "{action} a cancelled campaign: {out}");
    }

    let devices = settled(&server, &id).await;
    let summary = agent.stop();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    for (device, _) in &valves {
        let listed = &devices[device];
        let told = u64::from(listed["state"] != "pending");
        assert_eq!(summary.commands(device, &id), told, "{listed}");
        if told == 1 {
            assert_eq!(listed["state"], "succeeded", "{listed}");
        }
    }
    assert_eq!(devices.values().filter(|d| d["state"] == "pending").count() as u64, left);
}

/// `curl` with `args`; (HTTP status, stderr).
fn curl(args: &[&str]) -> (u16, String) {
    let out =
        Command::new("curl").args(["-sS", "-o"]).args(args).args(["-w", "%{http_code}"]).output().expect("curl is installed");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Downloads `url` in two goes: the first `half` bytes only (`-r`), then the rest with
/// `curl -C -`, which asks for the range from where the file ends. Returns the file.
fn download_in_two(url: &str, auth: &[&str], file: &Path, half: usize) -> Vec<u8> {
    let name = file.to_str().unwrap();
    let first = format!("0-{}", half - 1);
    let (status, err) = curl(&[&[name, "-r", first.as_str()][..], auth, &[url]].concat());
    assert_eq!(status, 206, "{err}");
    assert_eq!(std::fs::metadata(file).unwrap().len(), half as u64, "the first half only");
    let (status, err) = curl(&[&[name, "-C", "-"][..], auth, &[url]].concat());
    assert_eq!(status, 206, "the rest as a range: {err}");
    std::fs::read(file).unwrap()
}

#[tokio::test]
async fn a_download_cut_half_way_resumes_with_curl_and_a_range_past_the_end_is_416() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("gw-1", json!({"profile": "gateway"})).await;
    let image = image("resume", IMAGE_BYTES);
    let art = artifact(&server, "gw-fw", "1.2.3", image.clone()).await;
    let art_id = art["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");

    // The API's content route, with an API token.
    let content = server.url(&format!("/api/v1/artifacts/{art_id}/content"));
    let got = download_in_two(&content, &["-H", &auth], &dir.path().join("content.bin"), 100_000);
    assert_eq!(sha256_hex(&got), sha256_hex(&image));
    assert_eq!(sha256_hex(&got), art["sha256"].as_str().unwrap());

    // The short-lived per-device URL a campaign hands out, without credentials.
    let body = json!({"name": "gw", "artifact": art_id, "target": {"profile": "gateway"}});
    let id = campaign(&server, body).await["id"].as_str().unwrap().to_string();
    let (status, command) = server.call(Method::GET, "/api/v1/devices/gw-1/commands/next?wait=10", &token, None).await;
    assert_eq!((status, command["name"].as_str()), (200, Some("firmware.update")), "{command}");
    assert_eq!(command["payload"]["campaign"], id.as_str());
    assert_eq!(command["payload"]["artifact"], art["manifest"]);
    assert_eq!(command["payload"]["coap"], format!("devices/gw-1/artifacts/{art_id}"));
    let url = server.url(command["payload"]["url"].as_str().unwrap());
    let got = download_in_two(&url, &[], &dir.path().join("granted.bin"), IMAGE_BYTES / 2 + 1);
    assert_eq!(sha256_hex(&got), sha256_hex(&image));

    // A range that starts at or past the end: 416 with the size, for both routes.
    for (url, auth) in [(content.as_str(), vec!["-H", auth.as_str()]), (url.as_str(), vec![])] {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-D", "-", "-r", &format!("{IMAGE_BYTES}-")])
            .args(&auth)
            .arg(url)
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(head.starts_with("http/1.1 416"), "{head}");
        assert!(head.contains(&format!("content-range: bytes */{IMAGE_BYTES}")), "{head}");
    }
    // A resumed download of a file that is already whole is 416 too, and curl says it is done.
    let whole = dir.path().join("granted.bin");
    let (status, _) = curl(&[whole.to_str().unwrap(), "-C", "-", &url]);
    assert_eq!(status, 416);
    assert_eq!(sha256_hex(&std::fs::read(&whole).unwrap()), sha256_hex(&image));
    // A tampered grant, or one for another device, is refused.
    let forged = url.replace("/gw-1/", "/gw-2/");
    assert_eq!(curl(&["/dev/null", &forged]).0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_artifact_is_refused_by_the_devices_and_never_installed() {
    let server = TestServer::start(BIN).await;
    let signed_elsewhere = fleet(&server, "sig", 5, "sig").await;
    let altered = fleet(&server, "disk", 5, "disk").await;
    let key = signing_key(&server).await;

    // An operator signature made with a key the devices do not trust: the upload verifies it
    // (so it is a good signature, for the wrong key), the devices refuse it.
    let dir = tempfile::tempdir().unwrap();
    let rogue_image = image("rogue", IMAGE_BYTES);
    let rogue_file = dir.path().join("rogue.bin");
    std::fs::write(&rogue_file, &rogue_image).unwrap();
    let out = Command::new("python3").args([AGENT, "sign", "sig-fw", "6.6.6"]).arg(&rogue_file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let encode = |s: &Value| s.as_str().unwrap().replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let (signature, public) = (encode(&signed["signature"]), encode(&signed["public_key"]));
    // Signed for another version: refused on upload, nothing kept.
    let (status, out) = upload(
        &server,
        ADMIN_TOKEN,
        &format!("name=sig-fw&version=6.6.7&signature={signature}&public_key={public}"),
        rogue_image.clone(),
    )
    .await;
    assert_eq!(status, 403, "{out}");
    let (status, rogue) = upload(
        &server,
        ADMIN_TOKEN,
        &format!("name=sig-fw&version=6.6.6&signature={signature}&public_key={public}"),
        rogue_image,
    )
    .await;
    assert_eq!((status, rogue["signed_by"].as_str()), (201, Some("operator")), "{rogue}");
    assert_ne!(rogue["public_key"].as_str(), Some(key.as_str()));

    // A Corral-signed artifact whose content is changed on disk after the upload.
    let genuine = image("genuine", IMAGE_BYTES);
    let art = artifact(&server, "disk-fw", "7.0.0", genuine.clone()).await;
    let stored = server.data_dir().join("artifacts/sha256").join(art["sha256"].as_str().unwrap());
    assert_eq!(std::fs::read(&stored).unwrap(), genuine);
    let mut bad = genuine;
    bad[IMAGE_BYTES / 2] ^= 0xff;
    std::fs::write(&stored, &bad).unwrap();

    let devices: Vec<(String, String)> = signed_elsewhere.iter().chain(&altered).cloned().collect();
    let agent = Agent::start(&server, &devices, &key, &["--expect", "tampered"]);
    let plan = json!({"device_timeout_s": 60});
    let by_key =
        campaign(&server, json!({"name": "rogue", "artifact": rogue["id"], "target": {"profile": "sig"}, "plan": plan.clone()}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
    let on_disk = campaign(
        &server,
        json!({"name": "altered", "artifact": art["id"], "target": {"profile": "disk"}, "plan": plan}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&by_key, &on_disk] {
        // No threshold in the plan: the campaign runs to its end, every device refusing.
        let done = wait_until(&server, id, Duration::from_secs(30), "completed", |p| p["state"] != "running").await;
        assert_eq!((done["state"].as_str(), &done["states"]), (Some("completed"), &json!({"failed": 5})), "{done}");
    }
    let summary = agent.stop();
    assert_eq!(summary.whole["expectation_met"], true, "{:?}", summary.errors);
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    for (group, id, why) in [(&signed_elsewhere, &by_key, "bad signature"), (&altered, &on_disk, "sha256 mismatch")] {
        let listed = campaign_devices(&server, id).await;
        for (device, _) in group {
            let update = summary.update(device, id);
            assert_eq!(update["final"], "failed", "{device}: {update}");
            assert!(update["verification"].as_str().unwrap().starts_with(why), "{device}: {update}");
            assert!(!update["states"].as_array().unwrap().contains(&json!("succeeded")), "{update}");
            assert_eq!(update["states"], json!(["downloading", "failed"]), "nothing installed: {update}");
            let reason = listed[device]["reason"].as_str().unwrap();
            assert!(reason.starts_with("verification failed: ") && reason.contains(why), "{reason}");
            let twin = server.twin(device).await;
            assert_eq!(twin["reported"]["document"]["campaigns"][id.as_str()]["state"], "failed", "{twin}");
            assert!(twin["reported"]["document"].get("firmware_version").is_none(), "{twin}");
            let (_, shown) = server.admin(Method::GET, &format!("/api/v1/devices/{device}"), None).await;
            assert!(shown["attributes"].get("firmware_version").is_none(), "{shown}");
        }
    }
}

/// A free TCP port on the loopback (so a restarted server can listen where the devices look).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_campaign_and_the_campaign_completes_without_a_second_command() {
    let http = format!("127.0.0.1:{}", free_port());
    let mut server = TestServer::start_with(BIN, &["--http", &http]).await;
    let sensors = fleet(&server, "s", 200, "sensor").await;
    let art = artifact(&server, "sensor-fw", "5.0.0", image("crash", IMAGE_BYTES)).await;
    let key = signing_key(&server).await;
    let agent = Agent::start(&server, &sensors, &key, &["--step-delay", "0.05"]);
    let body = json!({"name": "through a crash", "artifact": art["id"], "target": {"profile": "sensor"},
        "plan": plan(json!(["10%", "50%", "100%"]), 20)});
    let id = campaign(&server, body).await["id"].as_str().unwrap().to_string();
    let before = wait_until(&server, &id, Duration::from_secs(60), "under way", |p| count(p, "succeeded") >= 50).await;
    assert_eq!(before["state"], "running", "{before}");

    server.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    assert_eq!(server.base, format!("http://{http}"), "back where the devices look");

    let done = wait_until(&server, &id, Duration::from_secs(60), "completed", |p| p["state"] != "running").await;
    assert_eq!((done["state"].as_str(), &done["states"]), (Some("completed"), &json!({"succeeded": 200})), "{done}");
    let devices = settled(&server, &id).await;
    let summary = agent.stop();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert!(summary.whole["retries"].as_u64().unwrap() > 0, "the devices never noticed the server was gone");
    assert_sequential(&devices, 3);

    let ledger = firmware_commands(&server, &id).await;
    assert_eq!(ledger.len(), 200);
    for (device, _) in &sensors {
        assert_eq!(summary.commands(device, &id), 1, "{device}: {}", summary.devices[device]);
        assert_eq!(ledger.get(device), Some(&1), "{device}: one command in the ledger");
        assert_eq!(summary.update(device, &id)["final"], "succeeded");
        assert_eq!(devices[device]["state"], "succeeded");
    }
    let (status, shown) = server.admin(Method::GET, "/api/v1/devices/s-123", None).await;
    assert_eq!((status, shown["attributes"]["firmware_version"].as_str()), (200, Some("5.0.0")), "{shown}");
}

/// Files in `dir` (0 when it does not exist).
fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

async fn artifact_count(server: &TestServer) -> usize {
    let (status, out) = server.admin(Method::GET, "/api/v1/artifacts?limit=1000", None).await;
    assert_eq!(status, 200, "{out}");
    out["artifacts"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_behind() {
    let server = TestServer::start_with(BIN, &["--set", "campaigns.max_artifact_mb=1"]).await;
    server.register_device("a-1", json!({"tenant": "alpha", "profile": "meter"})).await;
    server.register_device("o-1", json!({"tenant": "other", "profile": "meter"})).await;
    let alpha = server.api_token("alpha-ops", "operator", Some("alpha")).await;
    let viewer = server.api_token("viewer", "viewer", None).await;
    let theirs = upload(&server, ADMIN_TOKEN, "name=o-fw&version=1.0.0&tenant=other", image("other", 4096)).await;
    assert_eq!(theirs.0, 201, "{}", theirs.1);
    let (status, ours) = upload(&server, &alpha, "name=a-fw&version=1.0.0", image("alpha", 4096)).await;
    assert_eq!((status, ours["tenant"].as_str()), (201, Some("alpha")), "{ours}");

    // A scoped token cannot reach another tenant: not its devices, not its artifacts.
    let create = |body: Value| server.call(Method::POST, "/api/v1/campaigns", &alpha, Some(body));
    let (status, out) = create(json!({"name": "x", "artifact": ours["id"], "target": {"tenant": "other"}})).await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = create(json!({"name": "x", "artifact": theirs.1["id"], "target": {"profile": "meter"}})).await;
    assert_eq!(status, 404, "another tenant's artifact does not exist for alpha: {out}");
    assert_eq!(upload(&server, &alpha, "name=z&version=1&tenant=other", vec![1; 10]).await.0, 403);
    assert_eq!(upload(&server, &viewer, "name=z&version=1", vec![1; 10]).await.0, 403, "viewers read only");
    assert_eq!(
        server.call(Method::GET, &format!("/api/v1/artifacts/{}", theirs.1["id"].as_str().unwrap()), &alpha, None).await.0,
        404
    );
    // Alpha's own campaign selects alpha's meter only.
    let (status, out) =
        create(json!({"name": "ours", "artifact": ours["id"], "target": {"profile": "meter"}, "start": false})).await;
    assert_eq!((status, out["devices"].as_u64()), (201, Some(1)), "{out}");
    let (status, out) =
        create(json!({"name": "x", "artifact": ours["id"], "target": {"profile": "meter"}, "plan": {"waves": ["0%"]}})).await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = create(json!({"name": "x", "artifact": ours["id"], "target": {"profile": "nothing"}})).await;
    assert_eq!(status, 400, "{out}");

    let sha_dir = server.data_dir().join("artifacts/sha256");
    let incoming = server.data_dir().join("artifacts/incoming");
    let (files_before, listed_before) = (files_in(&sha_dir), artifact_count(&server).await);
    assert_eq!(files_before.len(), 2);

    // An upload cut mid-stream: half of a declared 512 KiB, then the connection closes.
    let addr = server.base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /api/v1/artifacts?name=cut&version=1.0.0 HTTP/1.1\r\nHost: corral\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            512 << 10
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&image("cut", 256 << 10)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Dropped: the body ends half-way.
    })
    .await
    .unwrap();
    // Over the limit of 1 MiB (a little over, so the client has sent it all when the answer comes).
    let (status, out) = upload(&server, ADMIN_TOKEN, "name=big&version=1.0.0", image("big", (1 << 20) + (64 << 10))).await;
    assert_eq!(status, 413, "{out}");
    assert!(out["error"].as_str().unwrap().contains("limited to"), "{out}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_in(&incoming).is_empty() {
        assert!(Instant::now() < deadline, "a refused upload left {:?} behind", files_in(&incoming));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files_in(&sha_dir), files_before, "no new content kept");
    assert_eq!(artifact_count(&server).await, listed_before, "no artifact listed");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(!audit.to_string().contains("\"cut\"") && !audit.to_string().contains("\"big\""), "{audit}");

    // Exactly the limit is allowed.
    let (status, out) = upload(&server, ADMIN_TOKEN, "name=edge&version=1.0.0", image("edge", 1 << 20)).await;
    assert_eq!((status, out["size"].as_u64()), (201, Some(1 << 20)), "{out}");
    // Bad names and versions, an empty body, the same name and version twice.
    for query in ["name=a%20b&version=1", "name=ok&version=", "name=ok"] {
        let (status, out) = upload(&server, ADMIN_TOKEN, query, vec![1; 16]).await;
        assert_eq!(status, 400, "{query}: {out}");
    }
    assert_eq!(upload(&server, ADMIN_TOKEN, "name=empty&version=1", Vec::new()).await.0, 400);
    let files_before = files_in(&sha_dir);
    assert_eq!(upload(&server, ADMIN_TOKEN, "name=edge&version=1.0.0", vec![2; 16]).await.0, 409);
    assert!(files_in(&incoming).is_empty());
    assert_eq!(files_in(&sha_dir), files_before, "a refused duplicate keeps no content");
}
