//! Every door tried by every role of the other tenant.

use super::coap::{exchange, post, udp};
use super::mqtt::{paho, scenario};
use super::*;
use corral_testkit::browser::Browser;
use reqwest::StatusCode;

/// An SSE stream's status (its headers; the stream itself is dropped unread).
async fn live_status(server: &TestServer, token: &str, device: &str) -> u16 {
    let url = server.url(&format!("/api/v1/devices/{device}/live"));
    let response = server.http.get(url).bearer_auth(token).timeout(PATIENCE).send().await.expect("live request");
    response.status().as_u16()
}

/// Every door, with every role of the other tenant: REST, SQL, live stream, the console (a
/// signed-in user of that tenant), MQTT subscription, and a device token on CoAP. Each has its own-tenant control, so a closed door is not merely
/// a broken one.
#[tokio::test]
async fn every_door_is_closed_to_every_role_of_another_tenant() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    let acme = server.register_device("acme-d1", json!({"tenant": "acme"})).await;
    let globex = server.register_device("globex-d1", json!({"tenant": "globex"})).await;
    assert_eq!(server.ingest(&acme, "telemetry", r#"{"temperature": 4.5}"#).await.0, 200);
    assert_eq!(server.ingest(&globex, "telemetry", r#"{"temperature": 77.0}"#).await.0, 200);

    let mut listeners = Vec::new();
    for role in ["viewer", "operator", "admin"] {
        let token = server.api_token(&format!("acme-{role}"), role, Some("acme")).await;
        let (status, out) = server.call(Method::GET, "/api/v1/devices/globex-d1", &token, None).await;
        assert_eq!(status, 404, "{role} REST: {out}");
        assert_eq!(server.call(Method::GET, "/api/v1/devices/acme-d1", &token, None).await.0, 200, "{role} REST, own device");
        let answer = sql(&server, &token, "SELECT * FROM telemetry WHERE device = 'globex-d1'").await;
        assert_eq!(answer, (200, json!([])), "{role} SQL");
        assert_eq!(
            sql(&server, &token, "SELECT device FROM telemetry").await,
            (200, json!([["acme-d1"]])),
            "{role} SQL, own rows"
        );
        assert_eq!(live_status(&server, &token, "globex-d1").await, 404, "{role} live stream");
        assert_eq!(live_status(&server, &token, "acme-d1").await, 200, "{role} live stream, own device");

        console_is_closed(&server, role).await;

        // Subscribing to the other tenant's topic is allowed; its messages are filtered out.
        let client = format!("acme-{role}-watch");
        let mut listener = scenario(
            &server,
            &["listen", &client, "token", &token, "6", "devices/globex-d1/telemetry", "devices/acme-d1/telemetry"],
        );
        assert_eq!(listener.wait_for("subscribed"), "subscribed 1 1", "{role}");
        listeners.push((role, listener));
    }
    let publish = |id: &str, token: &str, payload: &str| {
        paho(&server, &["publish", id, id, token, "5", &format!("devices/{id}/telemetry"), payload, "-"])
    };
    // globex's first, so acme's arriving proves globex's had its chance.
    assert_eq!(publish("globex-d1", &globex, r#"{"temperature": 78.0}"#), "puback 0");
    assert_eq!(publish("acme-d1", &acme, r#"{"temperature": 5.5}"#), "puback 0");
    for (role, listener) in listeners {
        assert_eq!(listener.finish(), [r#"message devices/acme-d1/telemetry {"temperature": 5.5}"#, "done"], "{role} MQTT");
    }

    // CoAP: acme's device token does not speak for globex's device.
    let socket = udp(&server);
    let request = post(0x3000, &["devices", "globex-d1", "telemetry"], &acme, None, br#"{"temperature": 99.0}"#);
    assert_eq!(exchange(&socket, &request), 0x83, "4.03 forbidden");
    let rows = server.query("SELECT device, count(*) FROM telemetry GROUP BY device ORDER BY device").await;
    assert_eq!(
        rows,
        vec![vec![json!("acme-d1"), json!(2)], vec![json!("globex-d1"), json!(2)]],
        "the refused request stored nothing"
    );
}

/// The console door: an acme user of `role` signed in with a session cookie reaches the same API
/// as a token, with the same scope.
async fn console_is_closed(server: &TestServer, role: &str) {
    let (name, password) = (format!("acme-{role}-user"), "a long enough password");
    let user = json!({"name": name, "role": role, "tenant": "acme", "password": password});
    let (status, out) = server.admin(Method::POST, "/api/v1/users", Some(user)).await;
    assert_eq!(status, 201, "{out}");
    let mut browser = Browser::new(server);
    assert_eq!(browser.sign_in(&name, password).await.0, StatusCode::SEE_OTHER, "{role} signs in");
    let (status, _) = browser.api(Method::GET, "/api/v1/devices/globex-d1", None, false).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{role} console: the other tenant's device");
    let (status, _) = browser.api(Method::GET, "/api/v1/devices/acme-d1", None, false).await;
    assert_eq!(status, StatusCode::OK, "{role} console: its own device");
    let (status, _) = browser.api(Method::GET, "/api/v1/devices/globex-d1/live", None, false).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{role} console: the other tenant's live stream");
    let oracle = "SELECT device FROM telemetry WHERE CAST(CASE WHEN device = 'globex-d1' THEN 'x' ELSE '1' END AS INT) = 1";
    let (status, out) = browser.api(Method::POST, "/api/v1/query", Some(json!({"sql": oracle})), true).await;
    assert_eq!((status, &out["rows"]), (StatusCode::OK, &json!([["acme-d1"]])), "{role} console SQL: {out}");
}
