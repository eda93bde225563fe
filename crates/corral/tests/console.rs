//! The web console's server side, as a browser speaks to it: sign-in (double-submit CSRF,
//! throttling, the bootstrap administrator), session cookies on the API with their CSRF token,
//! roles, CSV export and import, the live stream of a device's readings, sign-out.

use corral_testkit::browser::{Browser, hidden, meta, serde_urlencoded};
use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::header::{COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

#[tokio::test]
async fn sign_in_sessions_csrf_roles_and_sign_out() {
    let server = TestServer::start(BIN).await;
    let mut browser = Browser::new(&server);
    // A visitor is sent to sign in, and back afterwards.
    let response = browser.request(Method::GET, "/devices?site=roof", None, false).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login?next=/devices%3Fsite%3Droof");
    let (status, body) = browser.get("/api/v1/devices").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The sign-in form only counts when posted with its own cookie (double submit).
    let (_, form) = browser.get("/login").await;
    let token = hidden(&form, "csrf");
    browser.cookies.clear();
    let body = serde_urlencoded(&[("name", "admin"), ("password", ADMIN_TOKEN), ("csrf", &token)]);
    let response = browser.request(Method::POST, "/login", Some(("application/x-www-form-urlencoded", body)), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The first administrator signs in with the bootstrap token as password.
    let (status, location) = browser.sign_in("admin", ADMIN_TOKEN).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/devices"));
    let session = browser.cookies.iter().find(|(n, _)| n == "corral_session").expect("session cookie").1.clone();
    assert!(session.starts_with("cus_"));
    let (status, page) = browser.get("/devices").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<title>Inventory · Corral</title>") && page.contains(r#"data-role="admin""#), "{page}");

    // Every page, with its title, script and the session's CSRF token for the script.
    for (path, title, script) in [
        ("/", "Overview", "overview"),
        ("/devices", "Inventory", "inventory"),
        ("/devices/pump-9", "Device", "device"),
        ("/alarms", "Alarms", "alarms"),
        ("/sql", "SQL", "sql"),
        ("/account", "Account", "account"),
    ] {
        let (status, page) = browser.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            page.contains(&format!("<title>{title} · Corral</title>"))
                && page.contains(&format!(r#"<script src="/assets/{script}.js">"#)),
            "{path}: {page}"
        );
        assert_eq!(meta(&page, "csrf-token"), browser.csrf, "{path}");
    }
    // The connection snippets name the ports this server bound (port 0 here), not the defaults.
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    for (proto, addr) in [("mqtt", &server.mqtt), ("coap", &server.coap), ("coaps", &server.coaps)] {
        assert!(page.contains(&format!(r#"data-{proto}-port="{}""#, port(addr))), "{proto} port {addr} in the shell");
    }
    for (asset, kind) in [
        ("console.css", "text/css"),
        ("app.js", "text/javascript"),
        ("inventory.js", "text/javascript"),
        ("account.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = browser.request(Method::GET, &format!("/assets/{asset}"), None, false).await;
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
    }
    let (status, _) = browser.get("/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The API takes the session; a change needs the CSRF token too.
    let (status, _) = browser.api(Method::GET, "/api/v1/devices", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = browser.api(Method::POST, "/api/v1/devices", Some(json!({"id": "pump-1"})), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("CSRF"), "{refused}");
    let (status, created) =
        browser.api(Method::POST, "/api/v1/devices", Some(json!({"id": "pump-1", "site": "roof"})), true).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // Users: the admin adds a viewer, who may read but not write.
    let (status, added) = browser.api(Method::POST, "/api/v1/users", Some(json!({"name": "vera", "role": "viewer"})), true).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let password = added["password"].as_str().unwrap().to_string();
    let mut viewer = Browser::new(&server);
    assert_eq!(viewer.sign_in("vera", &password).await.0, StatusCode::SEE_OTHER);
    let (_, page) = viewer.get("/").await;
    assert!(page.contains(r#"data-role="viewer""#));
    let (status, _) = viewer.api(Method::GET, "/api/v1/devices/pump-1", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = viewer.api(Method::PATCH, "/api/v1/devices/pump-1", Some(json!({"site": "cellar"})), true).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer.api(Method::GET, "/api/v1/users", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Users change their own password with the current one, which ends their sessions.
    let own = "/api/v1/users/vera/password";
    let (status, refused) = viewer.api(Method::PUT, own, Some(json!({"password": "vera's new passphrase"})), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, refused) = viewer
        .api(Method::PUT, own, Some(json!({"password": "vera's new passphrase", "current_password": "a guess at it"})), true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("current password is wrong"), "{refused}");
    let (status, _) = viewer
        .api(
            Method::PUT,
            "/api/v1/users/admin/password",
            Some(json!({"password": "taking over admin", "current_password": password})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nobody else's password");
    let (status, changed) = viewer
        .api(Method::PUT, own, Some(json!({"password": "vera's new passphrase", "current_password": password})), true)
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let (status, _) = viewer.api(Method::GET, "/api/v1/devices/pump-1", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the change ended the session");
    let (_, form) = viewer.get("/login?changed=1").await;
    assert!(form.contains("Password changed"), "{form}");
    assert_eq!(viewer.sign_in("vera", "vera's new passphrase").await.0, StatusCode::SEE_OTHER);

    // Sign-out needs the session's CSRF token; afterwards the cookie is worthless.
    let response =
        browser.request(Method::POST, "/logout", Some(("application/x-www-form-urlencoded", "csrf=wrong".into())), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let csrf = browser.csrf.clone();
    let response = browser
        .request(Method::POST, "/logout", Some(("application/x-www-form-urlencoded", format!("csrf={csrf}"))), false)
        .await;
    assert_eq!((response.status(), response.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    browser.cookies.push(("corral_session".into(), session));
    let (status, _) = browser.api(Method::GET, "/api/v1/devices", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_user_name() {
    let server = TestServer::start(BIN).await;
    let mut browser = Browser::new(&server);
    for _ in 0..5 {
        assert_eq!(browser.sign_in("admin", "not the password").await.0, StatusCode::UNAUTHORIZED);
    }
    let (_, form) = browser.get("/login").await;
    let token = hidden(&form, "csrf");
    let body = serde_urlencoded(&[("name", "admin"), ("password", ADMIN_TOKEN), ("csrf", &token)]);
    let response = browser.request(Method::POST, "/login", Some(("application/x-www-form-urlencoded", body)), false).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 60);
    assert!(response.text().await.unwrap().contains("Too many failed sign-ins"));
    // The warning is logged (the log is read on another thread: give it a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_text().contains("console sign-in throttled") {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn inventory_csv_export_and_import_with_a_report_of_rejected_lines() {
    let server = TestServer::start(BIN).await;
    let mut browser = Browser::new(&server);
    browser.sign_in("admin", ADMIN_TOKEN).await;
    server.register_device("existing-1", json!({"site": "roof", "tags": ["cold"]})).await;
    let csv = "id,profile,site,tenant,tags,attributes\n\
               meter-1,meter,roof,,a;b,\"{\"\"model\"\": \"\"X\"\"}\"\n\
               bad id,meter,roof,,,\n\
               existing-1,meter,roof,,,\n\
               meter-2,meter,cellar,acme,,[1]\n\
               meter-3,meter,cellar,acme,,\n";
    let import = |dry: bool| format!("/api/v1/devices/import{}", if dry { "?dry_run=true" } else { "" });
    let response = browser.request(Method::POST, &import(true), Some(("text/csv", csv.into())), true).await;
    let preview: Value = response.json().await.unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&preview["accepted"]), ["meter-1", "meter-3"], "{preview}");
    assert_eq!(server.query("SELECT count(*) FROM devices").await, vec![vec![json!(1)]], "a preview registers nothing");
    let response = browser.request(Method::POST, &import(false), Some(("text/csv", csv.into())), true).await;
    let report: Value = response.json().await.unwrap();
    assert_eq!(ids(&report["accepted"]), ["meter-1", "meter-3"]);
    assert!(report["accepted"][0]["token"].as_str().unwrap().starts_with("cdt_"), "tokens shown once");
    let rejected: Vec<(i64, String)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_i64().unwrap(), r["error"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rejected.len(), 3, "{report}");
    assert_eq!(rejected[0].0, 3);
    assert!(rejected[0].1.starts_with("id:"), "{rejected:?}");
    assert!(rejected[1].1.contains("already exists"), "{rejected:?}");
    assert_eq!(rejected[2], (5, "attributes: not a JSON object".to_string()));

    // Export of the current filter: every page, CSV-quoted.
    let response = browser.request(Method::GET, "/api/v1/devices?site=roof&sort=id", None, false).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut request = browser.http.get(format!("{}/api/v1/devices?site=roof", server.base)).header("accept", "text/csv");
    request = request.header(COOKIE, browser.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "));
    let text = request.send().await.unwrap().text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,profile,site,tenant,tags,attributes,status,last_seen");
    assert!(lines[1].starts_with("existing-1,,roof,default,cold,,active,"), "{text}");
    assert_eq!(lines[2], r#"meter-1,meter,roof,default,a;b,"{""model"":""X""}",active,"#);
    assert_eq!(lines.len(), 3);
}

#[tokio::test]
async fn a_device_page_hears_each_reading_once_it_is_durable() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("reefer-7", json!({})).await;
    let mut browser = Browser::new(&server);
    browser.sign_in("admin", ADMIN_TOKEN).await;
    let (status, page) = browser.get("/devices/reefer-7").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"<script src="/assets/device.js">"#));
    let mut live = browser.request(Method::GET, "/api/v1/devices/reefer-7/live", None, false).await;
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let sent = Instant::now();
    let (status, _) = server.ingest(&token, "telemetry", r#"{"temperature": 4.5}"#).await;
    assert_eq!(status, 200);
    let acknowledged = sent.elapsed();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(5), live.chunk()).await.expect("a reading within 5 s").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let arrived = sent.elapsed();
    assert!(text.starts_with("event: reading\ndata: "), "{text}");
    let reading: Value = serde_json::from_str(text.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(
        (reading["device"].as_str(), reading["table"].as_str(), &reading["values"]),
        (Some("reefer-7"), Some("telemetry"), &json!({"temperature": 4.5}))
    );
    eprintln!("acknowledged after {acknowledged:?}, live event after {arrived:?}");
    // Another tenant's user cannot listen to it.
    let (status, added) = browser
        .api(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "acme-ops", "role": "operator", "tenant": "acme", "password": "acme operator pass"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let mut other = Browser::new(&server);
    other.sign_in("acme-ops", "acme operator pass").await;
    let (status, _) = other.api(Method::GET, "/api/v1/devices/reefer-7/live", None, false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Assets are embedded and typed.
    let response = browser.request(Method::GET, "/assets/chart.js", None, false).await;
    assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
}
