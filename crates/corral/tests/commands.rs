//! Tracked commands over HTTP, end to end on a real server: an application creates a command,
//! an HTTP device long-polls for it and answers, and the command's whole life can be read back;
//! `wait` answers like a direct method; timeouts expire; roles and tenants are enforced; bulk
//! jobs select by profile or by SQL and count by state; and nothing is lost to `kill -9`.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A request with a JSON body; returns the status, the `Location` header and the body (`null`
/// when empty).
async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = server.http.request(method, server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = response.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, location, body)
}

/// `POST /api/v1/devices/{device}/commands` as `token`.
async fn create(server: &TestServer, token: &str, device: &str, body: Value) -> (u16, Value) {
    let (status, _, out) = request(server, Method::POST, &format!("/api/v1/devices/{device}/commands"), token, Some(body)).await;
    (status, out)
}

/// The device's long poll, with its own token.
async fn poll(server: &TestServer, device_token: &str, device: &str, wait_s: u64) -> (u16, Value) {
    let path = format!("/api/v1/devices/{device}/commands/next?wait={wait_s}");
    let (status, _, out) = request(server, Method::GET, &path, device_token, None).await;
    (status, out)
}

/// The device's answer to command `id`.
async fn answer(server: &TestServer, device_token: &str, device: &str, id: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/devices/{device}/commands/{id}/response");
    let (status, _, out) = request(server, Method::POST, &path, device_token, Some(body)).await;
    (status, out)
}

async fn command(server: &TestServer, token: &str, id: &str) -> (u16, Value) {
    server.call(Method::GET, &format!("/api/v1/commands/{id}"), token, None).await
}

async fn job_counts(server: &TestServer, job: &str) -> Value {
    let (status, out) = server.admin(Method::GET, &format!("/api/v1/command-jobs/{job}"), None).await;
    assert_eq!(status, 200, "{out}");
    out["counts"].clone()
}

/// Every command id of a job, walking the pages.
async fn job_devices(server: &TestServer, job: &str) -> Vec<String> {
    let (mut devices, mut after) = (Vec::new(), String::new());
    loop {
        let path = format!("/api/v1/commands?job={job}&limit=60&after={after}");
        let (status, out) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{out}");
        let page = out["commands"].as_array().unwrap();
        devices.extend(page.iter().map(|c| c["device"].as_str().unwrap().to_string()));
        match out["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    devices.sort();
    devices
}

#[tokio::test]
async fn a_command_is_queued_polled_answered_and_each_step_is_timestamped() {
    let server = TestServer::start(BIN).await;
    let valve = server.register_device("valve-1", json!({})).await;

    // Names may hold '/': the command id, not the name, is what paths and topics carry.
    let body = json!({"name": "valve/open", "payload": {"position": 80}, "timeout": 60});
    let (status, location, created) =
        request(&server, Method::POST, "/api/v1/devices/valve-1/commands", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(location.as_deref(), Some(format!("/api/v1/commands/{id}").as_str()));
    assert_eq!((created["state"].as_str(), created["created_by"].as_str()), (Some("queued"), Some("admin")));
    assert_eq!(created["expires_at_ms"].as_i64().unwrap() - created["created_at_ms"].as_i64().unwrap(), 60_000);

    // The device polls and gets the body every door carries; the poll is the delivery.
    let (status, got) = poll(&server, &valve, "valve-1", 5).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, json!({"id": id, "name": "valve/open", "payload": {"position": 80}}));
    let (_, now) = command(&server, ADMIN_TOKEN, &id).await;
    assert_eq!((now["state"].as_str(), now["door"].as_str()), (Some("delivered"), Some("http")), "{now}");

    // Nothing else waits: a second poll holds for its wait, then 204.
    let started = Instant::now();
    let (status, nothing) = poll(&server, &valve, "valve-1", 1).await;
    assert_eq!((status, &nothing), (204, &Value::Null));
    assert!(started.elapsed() >= Duration::from_millis(900), "the poll waited {:?}", started.elapsed());

    let (status, bad) = answer(&server, &valve, "valve-1", &id, json!({"status": "maybe"})).await;
    assert_eq!(status, 400, "an answer's status is succeeded, failed or rejected: {bad}");
    let (status, answered) =
        answer(&server, &valve, "valve-1", &id, json!({"status": "succeeded", "payload": {"position": 79}})).await;
    assert_eq!((status, answered["state"].as_str()), (200, Some("succeeded")), "{answered}");
    let (status, again) = answer(&server, &valve, "valve-1", &id, json!({"status": "failed"})).await;
    assert_eq!(status, 409, "a final command takes no second answer: {again}");

    let (status, done) = command(&server, ADMIN_TOKEN, &id).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["state"].as_str(), &done["response"]), (Some("succeeded"), &json!({"position": 79})));
    let at = |field: &str| done[field].as_i64().unwrap_or_else(|| panic!("{field} missing: {done}"));
    assert!(at("created_at_ms") <= at("delivered_at_ms") && at("delivered_at_ms") <= at("finished_at_ms"), "{done}");

    let (_, listed) = server.admin(Method::GET, "/api/v1/commands?device=valve-1&state=succeeded", None).await;
    assert_eq!(listed["commands"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    assert_eq!(listed["next"], Value::Null);
    let (status, bad) = server.admin(Method::GET, "/api/v1/commands?state=done", None).await;
    assert!(status == 400 && bad["error"].as_str().unwrap().contains("succeeded"), "{bad}");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("device.command") && audit.to_string().contains(&id), "{audit}");
}

#[tokio::test]
async fn a_long_poll_wakes_for_a_command_created_while_it_waits() {
    let server = TestServer::start(BIN).await;
    let lamp = server.register_device("lamp-1", json!({})).await;
    let started = Instant::now();
    let (polled, created) = tokio::join!(poll(&server, &lamp, "lamp-1", 20), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        create(&server, ADMIN_TOKEN, "lamp-1", json!({"name": "blink"})).await
    });
    assert_eq!(created.0, 201, "{}", created.1);
    assert_eq!((polled.0, &polled.1["id"]), (200, &created.1["id"]), "{}", polled.1);
    assert!(started.elapsed() < Duration::from_secs(10), "the poll returned when the command came");
}

#[tokio::test]
async fn wait_answers_with_the_devices_answer_like_a_direct_method() {
    let server = TestServer::start(BIN).await;
    let door = server.register_device("door-1", json!({})).await;

    // Nobody answers: the wait runs out and the command is 202, as it is.
    let (status, pending) = create(&server, ADMIN_TOKEN, "door-1", json!({"name": "lock", "wait": 1})).await;
    assert_eq!((status, pending["state"].as_str()), (202, Some("queued")), "{pending}");

    // A device that takes the oldest first: it answers "lock", then the command we wait on.
    let device = async {
        for _ in 0..2 {
            let (status, got) = poll(&server, &door, "door-1", 20).await;
            assert_eq!(status, 200, "{got}");
            let id = got["id"].as_str().unwrap();
            let reply = json!({"status": "failed", "reason": "jammed", "payload": {"name": got["name"]}});
            assert_eq!(answer(&server, &door, "door-1", id, reply).await.0, 200);
        }
    };
    let ((status, out), ()) = tokio::join!(create(&server, ADMIN_TOKEN, "door-1", json!({"name": "unlock", "wait": 30})), device);
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["state"].as_str(), out["reason"].as_str()), (Some("failed"), Some("jammed")), "{out}");
    assert_eq!(out["response"], json!({"name": "unlock"}));
    assert_eq!(create(&server, ADMIN_TOKEN, "door-1", json!({"name": "x", "wait": 61})).await.0, 400);
}

#[tokio::test]
async fn a_command_expires_when_its_timeout_passes() {
    let server = TestServer::start(BIN).await;
    let sleepy = server.register_device("sleepy-1", json!({})).await;
    let (status, created) = create(&server, ADMIN_TOKEN, "sleepy-1", json!({"name": "wake", "timeout": 1})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, now) = command(&server, ADMIN_TOKEN, id).await;
        if now["state"] == "expired" {
            assert!(now["finished_at_ms"].as_i64().is_some(), "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Too late for it: not handed over, and an answer changes nothing.
    assert_eq!(poll(&server, &sleepy, "sleepy-1", 0).await.0, 204);
    assert_eq!(answer(&server, &sleepy, "sleepy-1", id, json!({})).await.0, 409);
    for bad in [json!({"name": "x", "timeout": 0}), json!({"name": "x", "timeout": 604_801}), json!({"name": "x", "retries": 3})]
    {
        assert_eq!(create(&server, ADMIN_TOKEN, "sleepy-1", bad.clone()).await.0, 400, "{bad}");
    }
    assert_eq!(create(&server, ADMIN_TOKEN, "sleepy-1", json!({"name": "a\nb"})).await.0, 400);
}

#[tokio::test]
async fn viewers_read_and_scoped_tokens_see_only_their_tenant() {
    let server = TestServer::start(BIN).await;
    let a = server.register_device("a-1", json!({"tenant": "alpha"})).await;
    let b = server.register_device("b-1", json!({"tenant": "beta"})).await;
    let viewer = server.api_token("watcher", "viewer", None).await;
    let alpha = server.api_token("alpha-ops", "operator", Some("alpha")).await;

    assert_eq!(create(&server, &viewer, "a-1", json!({"name": "reboot"})).await.0, 403);
    let job = json!({"name": "reboot", "target": {"tenant": "alpha"}});
    assert_eq!(server.call(Method::POST, "/api/v1/command-jobs", &viewer, Some(job)).await.0, 403);
    assert_eq!(server.call(Method::GET, "/api/v1/commands", &viewer, None).await.0, 200, "a viewer reads");

    let (_, for_b) = create(&server, ADMIN_TOKEN, "b-1", json!({"name": "reboot"})).await;
    let b_id = for_b["id"].as_str().unwrap();
    let (status, for_a) = create(&server, &alpha, "a-1", json!({"name": "reboot"})).await;
    assert_eq!(status, 201, "{for_a}");
    assert_eq!(create(&server, &alpha, "b-1", json!({"name": "reboot"})).await.0, 404, "another tenant's device");

    let (_, listed) = server.call(Method::GET, "/api/v1/commands", &alpha, None).await;
    let devices: Vec<_> = listed["commands"].as_array().unwrap().iter().map(|c| c["device"].clone()).collect();
    assert_eq!(devices, [json!("a-1")], "{listed}");
    assert_eq!(command(&server, &alpha, b_id).await.0, 404);
    assert_eq!(command(&server, &viewer, b_id).await.0, 200);
    // A scoped job reaches its own tenant only, whatever the target says.
    let beta_job = json!({"name": "reboot", "target": {"tenant": "beta"}});
    assert_eq!(server.call(Method::POST, "/api/v1/command-jobs", &alpha, Some(beta_job)).await.0, 400);

    // A device polls and answers its own commands only.
    assert_eq!(poll(&server, &a, "b-1", 0).await.0, 403);
    assert_eq!(answer(&server, &a, "a-1", b_id, json!({})).await.0, 404, "not a-1's command");
    assert_eq!(poll(&server, &alpha, "a-1", 0).await.0, 401, "an API token is not a device");
    assert_eq!(poll(&server, &b, "b-1", 0).await.1["id"].as_str(), Some(b_id));
}

#[tokio::test]
async fn a_bulk_job_over_a_profile_counts_its_commands_by_state() {
    let server = TestServer::start(BIN).await;
    let mut registering = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (base, http) = (server.base.clone(), server.http.clone());
        registering.spawn(async move {
            let id = format!("meter-{i:03}");
            let body = json!({"id": id, "profile": "meter"});
            let response = http.post(format!("{base}/api/v1/devices")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 201);
            let created: Value = response.json().await.unwrap();
            (id, created["token"].as_str().unwrap().to_string())
        });
    }
    let mut meters = registering.join_all().await;
    meters.sort();
    // Neither another profile nor a quarantined meter is selected.
    server.register_device("pump-1", json!({"profile": "pump"})).await;
    server.register_device("meter-off", json!({"profile": "meter"})).await;
    let (status, _) = server.admin(Method::PATCH, "/api/v1/devices/meter-off", Some(json!({"status": "quarantined"}))).await;
    assert_eq!(status, 200);

    let body =
        json!({"name": "firmware/check", "payload": {"channel": "stable"}, "timeout": 600, "target": {"profile": "meter"}});
    let (status, location, job) = request(&server, Method::POST, "/api/v1/command-jobs", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{job}");
    let id = job["job"].as_str().unwrap().to_string();
    assert_eq!(location, Some(format!("/api/v1/command-jobs/{id}")));
    assert_eq!((job["devices"].as_u64(), &job["counts"]), (Some(100), &json!({"queued": 100})), "{job}");
    let expected: Vec<String> = meters.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(job_devices(&server, &id).await, expected);

    // Half the meters poll: 40 answer succeeded, 10 rejected; the other half are still away.
    for (i, (meter, token)) in meters.iter().take(50).enumerate() {
        let (status, got) = poll(&server, token, meter, 0).await;
        assert_eq!((status, got["name"].as_str()), (200, Some("firmware/check")), "{got}");
        let reply = if i < 40 { json!({"status": "succeeded"}) } else { json!({"status": "rejected", "reason": "busy"}) };
        assert_eq!(answer(&server, token, meter, got["id"].as_str().unwrap(), reply).await.0, 200);
    }
    assert_eq!(job_counts(&server, &id).await, json!({"queued": 50, "succeeded": 40, "rejected": 10}));
    let (_, shown) = server.admin(Method::GET, &format!("/api/v1/command-jobs/{id}"), None).await;
    assert_eq!(shown["total"], 100);
    assert_eq!(server.admin(Method::GET, "/api/v1/command-jobs/job_00000000000000000000", None).await.0, 404);
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("command.job"), "{audit}");
}

#[tokio::test]
async fn a_job_selects_devices_with_an_sql_condition() {
    let server = TestServer::start(BIN).await;
    for (id, zone) in [("n-1", "north"), ("n-2", "north"), ("s-1", "south"), ("x-1", "")] {
        let attributes = if zone.is_empty() { json!({}) } else { json!({"zone": zone}) };
        server.register_device(id, json!({"attributes": attributes, "tags": ["field"]})).await;
    }
    let job = |target: Value| json!({"name": "calibrate", "target": target});
    let (status, out) = server
        .admin(Method::POST, "/api/v1/command-jobs", Some(job(json!({"where": "json_get_str(attributes, 'zone') = 'north'"}))))
        .await;
    assert_eq!((status, out["devices"].as_u64()), (201, Some(2)), "{out}");
    assert_eq!(job_devices(&server, out["job"].as_str().unwrap()).await, ["n-1", "n-2"]);

    // Every target field narrows: a tag and a condition together.
    let both = json!({"tag": "field", "where": "json_get_str(attributes, 'zone') = 'south' OR device = 'x-1'"});
    let (status, out) = server.admin(Method::POST, "/api/v1/command-jobs", Some(job(both))).await;
    assert_eq!((status, out["devices"].as_u64()), (201, Some(2)), "{out}");

    for (target, why) in [
        (json!({}), "needs at least one"),
        (json!({"where": "json_get_str(attributes, 'zone') = 'east'"}), "selects no device"),
        (json!({"where": "1=1; SELECT 1"}), "';'"),
        (json!({"where": "1=1) OR (1=1"}), "without its"),
        (json!({"zone": "north"}), "unknown field"),
    ] {
        let (status, out) = server.admin(Method::POST, "/api/v1/command-jobs", Some(job(target.clone()))).await;
        assert_eq!(status, 400, "{target}: {out}");
        assert!(out["error"].as_str().unwrap().contains(why), "{target}: {out}");
    }
}

#[tokio::test]
async fn a_queued_command_survives_kill_9_and_reaches_its_device_after() {
    let mut server = TestServer::start(BIN).await;
    let buoy = server.register_device("buoy-1", json!({})).await;
    let (status, created) = create(&server, ADMIN_TOKEN, "buoy-1", json!({"name": "report", "payload": [1, 2]})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    server.kill9();
    server.restart();

    let (status, after) = command(&server, ADMIN_TOKEN, &id).await;
    assert_eq!((status, after["state"].as_str()), (200, Some("queued")), "{after}");
    let (status, got) = poll(&server, &buoy, "buoy-1", 5).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, json!({"id": id, "name": "report", "payload": [1, 2]}));
}
