//! Rules, alarms and actions against the real binary: conditions over fields and device
//! attributes with hysteresis, `for` held on the rows' own timestamps, absence, the alarm
//! lifecycle under roles and tenants, definitions refused with the place of the mistake, and
//! every action kind delivered to a real receiver — signed webhooks (retried, dead-lettered,
//! revived, resumed after `kill -9`), MQTT republish, device commands and NATS. Also: a rule
//! edited from what GET shows keeps its webhook secret, tenant-scoped MQTT applications hear
//! their tenant's alarm events, the per-rule metrics count only rows in the rule's scope, and
//! every device has one online status from its MQTT connection, its data and absence rules.
//!
//! Rule evaluation runs after the data is durable, asynchronously, so tests poll for its effects
//! (or for the per-rule evaluated-rows counter, as a barrier) rather than sleeping fixed times.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use corral_testkit::{ADMIN_TOKEN, TestServer};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const SECRET: &str = "test-secret-0123456789";
/// How long an asynchronous effect (evaluation, delivery) may take before a test gives up.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers: polling, the REST calls every test repeats, metrics.
// ---------------------------------------------------------------------------------------------

/// Calls `check` every 50 ms until it returns `Some`; panics after `timeout` with `what` and the
/// server's log (the log is where a rule or a delivery says why it did not happen).
async fn poll_until<T>(server: &TestServer, what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; server log:\n{}", server.log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_rule(server: &TestServer, spec: Value) -> i64 {
    let (status, out) = server.admin(Method::POST, "/api/v1/rules", Some(spec)).await;
    assert_eq!(status, 201, "create rule: {out}");
    out["rule"]["id"].as_i64().expect("rule id")
}

/// `GET /api/v1/alarms?<query>` as admin.
async fn alarms(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, out) = server.admin(Method::GET, &format!("/api/v1/alarms?{query}"), None).await;
    assert_eq!(status, 200, "alarms?{query}: {out}");
    out["alarms"].as_array().expect("alarms").clone()
}

/// Waits until the alarms matching `query` satisfy `done`; returns them.
async fn wait_for_alarms(server: &TestServer, query: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    poll_until(server, what, PATIENCE, async || {
        let found = alarms(server, query).await;
        done(&found).then_some(found)
    })
    .await
}

/// `GET /api/v1/outbox[?state=...]` as admin.
async fn outbox(server: &TestServer, state: Option<&str>) -> Vec<Value> {
    let path = match state {
        Some(s) => format!("/api/v1/outbox?state={s}"),
        None => "/api/v1/outbox".to_string(),
    };
    let (status, out) = server.admin(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{path}: {out}");
    out["entries"].as_array().expect("entries").clone()
}

/// Waits until an outbox entry for `event` (raised, cleared...) satisfies `done`; returns it.
async fn wait_for_entry(server: &TestServer, event: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_until(server, what, PATIENCE, async || outbox(server, None).await.into_iter().find(|e| e["event"] == event && done(e)))
        .await
}

async fn metrics(server: &TestServer) -> String {
    server.http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("metrics text")
}

/// The value of the sample whose name and labels start with `prefix` (e.g.
/// `corral_outbox_dead_total{action="webhook"}`), or `None` when there is no such line.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

/// Waits until rule `id` has evaluated `rows` rows: then every row ingested so far was seen by
/// the rule, so "nothing happened" can be asserted without sleeping.
async fn wait_evaluated(server: &TestServer, id: i64, rows: u64) {
    let prefix = format!("corral_rule_evaluated_rows_total{{rule_id=\"{id}\"");
    poll_until(server, &format!("rule {id} to evaluate {rows} rows"), PATIENCE, async || {
        (sample(&metrics(server).await, &prefix) == Some(rows as f64)).then_some(())
    })
    .await
}

async fn ingest_ok(server: &TestServer, token: &str, body: Value) {
    let (status, out) = server.ingest(token, "telemetry", &body.to_string()).await;
    assert_eq!(status, 200, "ingest {body}: {out}");
}

fn rfc3339_ms(epoch_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver in the test process: answers 500 while `failures_left` > 0, then 200, and
// records every request.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Delivery {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers)).to_str().unwrap().to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Debug, Default)]
struct Hook {
    failures_left: AtomicUsize,
    received: Mutex<Vec<Delivery>>,
}

impl Hook {
    fn with_failures(n: usize) -> Arc<Hook> {
        Arc::new(Hook { failures_left: AtomicUsize::new(n), received: Mutex::default() })
    }
    fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}

struct Receiver {
    port: u16,
    hook: Arc<Hook>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves `POST /hook` on 127.0.0.1:`port` (0: any free port).
async fn start_receiver(port: u16, hook: Arc<Hook>) -> Receiver {
    async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let failing = hook.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let status = if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
        hook.received.lock().unwrap().push(Delivery { status: status.as_u16(), headers, body });
        status
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the webhook receiver");
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().route("/hook", post(receive)).with_state(hook.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("receiver");
    });
    Receiver { port, hook, stop: Some(stop), task }
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Stops accepting and closes every connection (idle keep-alive ones included), so the port
    /// refuses connections afterwards, as a receiver that is down would.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.expect("receiver stops").expect("receiver task");
    }
}

/// Checks `X-Corral-Signature` the way a receiver would: HMAC-SHA256 over "<timestamp>.<body>",
/// written here independently of the server's code, and a timestamp close to now.
fn verify_signature(secret: &str, delivery: &Delivery) {
    let timestamp = delivery.header("x-corral-timestamp");
    let signature = delivery.header("x-corral-signature");
    let digest = hex::decode(signature.strip_prefix("v1=").expect("v1= scheme")).expect("hex signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&delivery.body);
    mac.verify_slice(&digest).unwrap_or_else(|_| panic!("signature {signature} does not verify"));
    let now = chrono::Utc::now().timestamp();
    assert!((now - timestamp.parse::<i64>().expect("timestamp in seconds")).abs() < 120, "stale timestamp {timestamp}");
}

// ---------------------------------------------------------------------------------------------
// MQTT subscribers (mosquitto_sub) and a NATS server with a minimal subscriber.
// ---------------------------------------------------------------------------------------------

/// A running `mosquitto_sub -d -v`, subscribed (SUBACK seen) when `start` returns. Killed on drop.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    /// `client` is the client id (a device must use its id); `None` lets mosquitto pick one.
    fn start(server: &TestServer, client: Option<&str>, user: &str, password: &str, topics: &[&str]) -> Subscriber {
        let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
        let mut command = Command::new("stdbuf");
        // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe; we read it line by line.
        command.args([
            "-oL",
            "mosquitto_sub",
            "-d",
            "-v",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-h",
            host,
            "-p",
            port,
            "-u",
            user,
            "-P",
            password,
        ]);
        if let Some(id) = client {
            command.args(["-i", id]);
        }
        for topic in topics {
            command.args(["-t", topic]);
        }
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("mosquitto_sub is installed (mosquitto-clients)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = Subscriber { child, lines };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = subscriber
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("mosquitto_sub got no SUBACK");
            if line.contains("received SUBACK") {
                return subscriber;
            }
        }
    }

    /// The payload of the next message on a topic starting with `prefix` (the `-d` debug lines
    /// and other topics are skipped), as (topic, payload).
    fn next(&self, prefix: &str) -> (String, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no MQTT message on {prefix}* within {PATIENCE:?}"));
            if line.starts_with(prefix)
                && let Some((topic, payload)) = line.split_once(' ')
            {
                return (topic.to_string(), payload.to_string());
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` on a free loopback port; killed on drop, also when the test panics.
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    async fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server must be installed for this test (e.g. apt-get install nats-server): {e}"));
        let nats = NatsServer { child, port };
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nats
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message a NATS subscriber received.
#[derive(Debug)]
struct NatsMessage {
    subject: String,
    headers: String,
    payload: Vec<u8>,
}

/// The smallest NATS subscriber that does the job, in the core text protocol: CONNECT (with
/// headers, so HPUB arrives as HMSG), SUB, and a PING whose PONG says the SUB is in place.
struct NatsSubscriber {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl NatsSubscriber {
    async fn subscribe(port: u16, subject: &str) -> NatsSubscriber {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to nats-server");
        let (reader, writer) = stream.into_split();
        let mut sub = NatsSubscriber { reader: tokio::io::BufReader::new(reader), writer };
        assert!(sub.line().await.starts_with("INFO "), "NATS greets with INFO");
        let hello = format!("CONNECT {{\"verbose\":false,\"headers\":true,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n");
        sub.writer.write_all(hello.as_bytes()).await.unwrap();
        loop {
            match sub.line().await.as_str() {
                "PONG" => return sub,
                line if line.starts_with("INFO ") => {}
                line => panic!("NATS answered {line:?} to CONNECT/SUB"),
            }
        }
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("read from nats-server");
        assert!(!line.is_empty(), "nats-server closed the connection");
        line.trim_end().to_string()
    }

    /// The next message (MSG or HMSG), answering the server's PINGs meanwhile.
    async fn next(&mut self) -> NatsMessage {
        loop {
            let line = self.line().await;
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "PING" => self.writer.write_all(b"PONG\r\n").await.unwrap(),
                // HMSG <subject> <sid> [reply-to] <header bytes> <total bytes>
                "HMSG" => {
                    let total: usize = parts[parts.len() - 1].parse().unwrap();
                    let header_len: usize = parts[parts.len() - 2].parse().unwrap();
                    let mut data = vec![0; total + 2];
                    self.reader.read_exact(&mut data).await.unwrap();
                    let headers = String::from_utf8_lossy(&data[..header_len]).to_string();
                    return NatsMessage { subject: parts[1].to_string(), headers, payload: data[header_len..total].to_vec() };
                }
                // MSG <subject> <sid> [reply-to] <bytes>
                "MSG" => {
                    let total: usize = parts[parts.len() - 1].parse().unwrap();
                    let mut data = vec![0; total + 2];
                    self.reader.read_exact(&mut data).await.unwrap();
                    return NatsMessage {
                        subject: parts[1].to_string(),
                        headers: String::new(),
                        payload: data[..total].to_vec(),
                    };
                }
                _ => {} // INFO updates, +OK
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rule_raises_repeats_and_clears_with_hysteresis() {
    let server = TestServer::start(BIN).await;
    let vaccines = server.register_device("truck-1", json!({"attributes": {"cargo": "vaccines"}})).await;
    let bananas = server.register_device("truck-2", json!({"attributes": {"cargo": "bananas"}})).await;
    let rule = create_rule(
        &server,
        json!({"name": "vaccines too warm", "condition": "temperature > 8 AND attributes.cargo = 'vaccines'",
               "clear": "temperature < 7", "severity": "critical"}),
    )
    .await;

    // Bananas may be warm: the attribute keeps the rule quiet for that truck.
    ingest_ok(&server, &bananas, json!({"temperature": 20})).await;
    wait_evaluated(&server, rule, 1).await;
    assert!(alarms(&server, "").await.is_empty(), "no alarm for bananas");

    ingest_ok(&server, &vaccines, json!({"temperature": 9})).await;
    let raised = wait_for_alarms(&server, "device=truck-1", "the alarm for truck-1", |a| a.len() == 1).await;
    let alarm = &raised[0];
    let id = alarm["id"].as_i64().unwrap();
    assert_eq!((alarm["status"].as_str(), alarm["count"].as_i64()), (Some("active"), Some(1)), "{alarm}");
    assert_eq!((alarm["rule_id"].as_i64(), alarm["severity"].as_str()), (Some(rule), Some("critical")), "{alarm}");
    assert_eq!(alarm["last_values"]["temperature"], 9.0, "{alarm}");

    // 7.5: no longer above 8, but not below 7 either: hysteresis keeps the alarm as it is.
    ingest_ok(&server, &vaccines, json!({"temperature": 7.5})).await;
    wait_evaluated(&server, rule, 3).await;
    let still = alarms(&server, "").await;
    assert_eq!(still.len(), 1, "{still:?}");
    assert_eq!((still[0]["status"].as_str(), still[0]["count"].as_i64()), (Some("active"), Some(1)), "{still:?}");

    // Above 8 again: the same alarm counts a repeat; no second alarm.
    ingest_ok(&server, &vaccines, json!({"temperature": 9.5})).await;
    let repeated = wait_for_alarms(&server, "", "the repeat to be counted", |a| a.first().is_some_and(|a| a["count"] == 2)).await;
    assert_eq!(repeated.len(), 1, "one open alarm per (rule, device): {repeated:?}");
    assert_eq!(repeated[0]["id"].as_i64(), Some(id));
    assert_eq!(repeated[0]["last_values"]["temperature"], 9.5);

    // Below 7: the clear condition clears it, and the rule is recorded as who cleared it.
    ingest_ok(&server, &vaccines, json!({"temperature": 6.5})).await;
    let cleared =
        wait_for_alarms(&server, "", "the alarm to clear", |a| a.first().is_some_and(|a| a["status"] == "cleared")).await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!((cleared[0]["id"].as_i64(), cleared[0]["cleared_by"].as_str()), (Some(id), Some("rule")), "{cleared:?}");
    assert!(cleared[0]["cleared_at"].is_string(), "{cleared:?}");
    assert!(alarms(&server, "open=true").await.is_empty());

    // SQL sees the same alarm, and can join it to the registry.
    let rows = server
        .query("SELECT a.device, a.status, a.count, a.cleared_by, d.attributes FROM alarms a JOIN devices d USING (device)")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0][0], &rows[0][1], rows[0][2].as_f64(), &rows[0][3]),
        (&json!("truck-1"), &json!("cleared"), Some(2.0), &json!("rule"))
    );

    // Five rows in scope were evaluated; two matched (9 and 9.5); one alarm raised.
    let text = metrics(&server).await;
    assert_eq!(sample(&text, &format!("corral_rule_evaluated_rows_total{{rule_id=\"{rule}\"")), Some(5.0), "{text}");
    assert_eq!(sample(&text, &format!("corral_rule_matched_rows_total{{rule_id=\"{rule}\"")), Some(2.0), "{text}");
    assert_eq!(sample(&text, "corral_alarms_raised_total "), Some(1.0), "{text}");
    assert_eq!(sample(&text, "corral_alarms_open "), Some(0.0), "{text}");
}

#[tokio::test]
async fn for_holds_the_condition_with_injected_time() {
    let server = TestServer::start(BIN).await;
    let steady = server.register_device("fridge-1", json!({})).await;
    let flapping = server.register_device("fridge-2", json!({})).await;
    let rule = create_rule(&server, json!({"name": "warm for 5 minutes", "condition": "temperature > 8", "for": "5m"})).await;

    // An hour ago, on a whole minute: the rows carry their own time; nobody waits 5 minutes.
    let t = (chrono::Utc::now().timestamp_millis() / 60_000 - 60) * 60_000;
    let (min, s) = (60_000, 1_000);
    for at in [t, t + 2 * min, t + 4 * min + 59 * s] {
        ingest_ok(&server, &steady, json!({"ts": at, "temperature": 9})).await;
    }
    // fridge-2 dips below 8 at +3 min: the clock starts again, so +6 min is only 1 min of warmth.
    for (at, temperature) in [(t, 9), (t + 3 * min, 5), (t + 5 * min, 9), (t + 6 * min, 9)] {
        ingest_ok(&server, &flapping, json!({"ts": at, "temperature": temperature})).await;
    }
    wait_evaluated(&server, rule, 7).await;
    assert!(alarms(&server, "").await.is_empty(), "4 min 59 s is not 5 min");

    ingest_ok(&server, &steady, json!({"ts": rfc3339_ms(t + 5 * min), "temperature": 9.5})).await;
    let raised = wait_for_alarms(&server, "", "the alarm after 5 minutes", |a| !a.is_empty()).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["device"], "fridge-1");
    assert_eq!(raised[0]["first_at"], rfc3339_ms(t + 5 * min), "raised at the row that completed the 5 minutes");
    assert_eq!(raised[0]["count"], 1);
}

#[tokio::test]
async fn absence_raises_when_a_device_goes_silent_and_data_clears_it() {
    let server = TestServer::start_with(BIN, &["--absence-check-ms", "100"]).await;
    let beacon = server.register_device("beacon-1", json!({})).await;
    let other = server.register_device("beacon-2", json!({})).await;
    create_rule(&server, json!({"name": "beacon silent", "absence": "1s", "scope": {"device": "beacon-1"}, "severity": "major"}))
        .await;

    ingest_ok(&server, &beacon, json!({"rssi": -60})).await;
    ingest_ok(&server, &other, json!({"rssi": -70})).await;
    let started = Instant::now();
    let raised = wait_for_alarms(&server, "", "the absence alarm", |a| !a.is_empty()).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "raised after {:?}, before 1 s of silence", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "raised after {:?}", started.elapsed());
    assert_eq!(raised.len(), 1, "only the scoped device: {raised:?}");
    let alarm = &raised[0];
    assert_eq!((alarm["device"].as_str(), alarm["status"].as_str()), (Some("beacon-1"), Some("active")), "{alarm}");
    assert!(alarm["message"].as_str().unwrap().contains("no data for 1s"), "{alarm}");
    assert!(alarm["last_values"]["last_seen"].is_string(), "{alarm}");

    // Data again: the absence is over.
    ingest_ok(&server, &beacon, json!({"rssi": -61})).await;
    let id = alarm["id"].clone();
    let cleared = wait_for_alarms(&server, "device=beacon-1", "the absence alarm to clear", |a| {
        a.iter().any(|a| a["id"] == id && a["status"] == "cleared")
    })
    .await;
    let cleared = cleared.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(cleared["cleared_by"], "rule", "{cleared}");
}

#[tokio::test]
async fn alarm_lifecycle_by_role() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("press-1", json!({})).await;
    create_rule(&server, json!({"name": "hot press", "condition": "temperature > 8"})).await;
    let viewer = server.api_token("night-viewer", "viewer", None).await;
    let operator = server.api_token("night-ops", "operator", None).await;
    let stranger = server.api_token("beta-ops", "operator", Some("beta")).await;

    ingest_ok(&server, &token, json!({"temperature": 9})).await;
    let id = wait_for_alarms(&server, "", "the alarm", |a| !a.is_empty()).await[0]["id"].as_i64().unwrap();
    let path = |action: &str| format!("/api/v1/alarms/{id}{action}");

    // A viewer reads, and writes nothing.
    let (status, list) = server.call(Method::GET, "/api/v1/alarms", &viewer, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["alarms"][0]["id"].as_i64(), Some(id), "{list}");
    assert_eq!(server.call(Method::GET, &path(""), &viewer, None).await.0, 200);
    for (action, body) in [("/ack", None), ("/clear", None), ("/comments", Some(json!({"text": "looking"})))] {
        let (status, out) = server.call(Method::POST, &path(action), &viewer, body).await;
        assert_eq!(status, 403, "viewer POST {action}: {out}");
    }
    let (_, unchanged) = server.call(Method::GET, &path(""), &viewer, None).await;
    assert_eq!(unchanged["alarm"]["status"], "active", "{unchanged}");
    assert_eq!(unchanged["comments"], json!([]), "{unchanged}");

    // Another tenant's token: the alarm does not exist for it, in the API or in SQL.
    for (method, action) in [(Method::GET, ""), (Method::POST, "/ack"), (Method::POST, "/clear")] {
        let (status, out) = server.call(method.clone(), &path(action), &stranger, None).await;
        assert_eq!(status, 404, "other tenant {method} {action}: {out}");
    }
    let (status, out) = server.call(Method::POST, &path("/comments"), &stranger, Some(json!({"text": "mine?"}))).await;
    assert_eq!(status, 404, "{out}");
    let (status, list) = server.call(Method::GET, "/api/v1/alarms", &stranger, None).await;
    assert_eq!((status, &list["alarms"]), (200, &json!([])), "{list}");
    let (status, out) =
        server.call(Method::POST, "/api/v1/query", &stranger, Some(json!({"sql": "SELECT count(*) FROM alarms"}))).await;
    assert_eq!((status, &out["rows"]), (200, &json!([[0]])), "{out}");

    // An operator acknowledges, comments and clears; each step records who.
    let (status, out) = server.call(Method::POST, &path("/ack"), &operator, None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["alarm"]["status"].as_str(), out["alarm"]["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("night-ops")),
        "{out}"
    );
    assert!(out["alarm"]["acknowledged_at"].is_string(), "{out}");
    let (status, out) =
        server.call(Method::POST, &path("/comments"), &operator, Some(json!({"text": "door was open, closed it"}))).await;
    assert_eq!(status, 201, "{out}");
    let (_, shown) = server.call(Method::GET, &path(""), &viewer, None).await;
    assert_eq!(shown["alarm"]["status"], "acknowledged", "{shown}");
    let comments = shown["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 1, "{shown}");
    assert_eq!(
        (comments[0]["author"].as_str(), comments[0]["text"].as_str()),
        (Some("night-ops"), Some("door was open, closed it"))
    );

    let (status, out) = server.call(Method::POST, &path("/clear"), &operator, None).await;
    assert_eq!(status, 200, "{out}");
    let alarm = &out["alarm"];
    assert_eq!((alarm["status"].as_str(), alarm["cleared_by"].as_str()), (Some("cleared"), Some("night-ops")), "{out}");
    assert_eq!(alarm["acknowledged_by"], "night-ops", "the acknowledgement is kept: {out}");
    let (status, out) = server.call(Method::POST, &path("/clear"), &operator, None).await;
    assert_eq!(status, 409, "clearing twice: {out}");

    let (_, shown) = server.admin(Method::GET, &path(""), None).await;
    assert_eq!(
        (shown["alarm"]["status"].as_str(), shown["alarm"]["cleared_by"].as_str()),
        (Some("cleared"), Some("night-ops")),
        "{shown}"
    );
    assert_eq!(alarms(&server, "status=cleared").await.len(), 1);
    assert!(alarms(&server, "open=true").await.is_empty());
}

#[tokio::test]
async fn bad_rule_definitions_are_rejected_with_the_place_of_the_error() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("probe-1", json!({})).await;
    // The table must exist for a misspelt field to be caught at definition time.
    ingest_ok(&server, &token, json!({"temperature": 1})).await;

    let base = json!({"name": "bad", "condition": "temperature > 8"});
    let with = |changes: Value| {
        let mut spec = base.clone();
        spec.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        spec
    };
    // (spec, what the message must say)
    let cases = [
        (with(json!({"condition": "temprature > 8"})), "temprature"),
        (with(json!({"condition": "temperature > > 8"})), "column"),
        (with(json!({"condition": "avg(temperature) > 6"})), "over"),
        (with(json!({"clear": "temprature < 7"})), "temprature"),
        (with(json!({"for": "5 minutes"})), "for:"),
        (with(json!({"actions": [{"type": "webhook", "url": "ftp://hooks.example.com/x"}]})), "actions[0]"),
        (with(json!({"actions": [{"type": "webhook", "url": "https://hooks.example.com/x", "secret": "short"}]})), "actions[0]"),
        (with(json!({"actions": [{"type": "mqtt", "topic": "ops/#"}]})), "actions[0]"),
        (json!({"name": "bad", "conditon": "temperature > 8"}), "conditon"),
        (json!({"name": "bad"}), "condition"),
        (json!({"name": "bad", "absence": "15m", "clear": "temperature < 7"}), "absence"),
    ];
    for (spec, expected) in cases {
        let (status, out) = server.admin(Method::POST, "/api/v1/rules", Some(spec.clone())).await;
        assert_eq!(status, 400, "{spec}: {out}");
        let error = out["error"].as_str().unwrap_or_else(|| panic!("{spec}: no error message: {out}"));
        assert!(error.to_lowercase().contains(&expected.to_lowercase()), "{spec}: `{error}` does not mention `{expected}`");
        if expected == "for:" {
            assert!(error.starts_with("for:"), "{error}");
        }
    }
    let (status, out) = server.admin(Method::GET, "/api/v1/rules", None).await;
    assert_eq!((status, &out["rules"]), (200, &json!([])), "nothing was stored: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_delivery_is_signed_retried_and_survives_a_crash() {
    let receiver = start_receiver(0, Hook::with_failures(2)).await;
    let mut server = TestServer::start_with(BIN, &["--webhook-allow", "127.0.0.1", "--outbox-retry-base-ms", "100"]).await;
    let token = server.register_device("reefer-9", json!({})).await;
    create_rule(
        &server,
        json!({"name": "reefer warm", "condition": "temperature > 8", "severity": "major",
               "actions": [{"type": "webhook", "url": receiver.url(), "secret": SECRET, "on": ["raised", "cleared"]}]}),
    )
    .await;

    // Raised: two 500s, then a 200 on the third attempt.
    ingest_ok(&server, &token, json!({"temperature": 9})).await;
    let entry = wait_for_entry(&server, "raised", "the raised webhook to be delivered", |e| e["state"] == "delivered").await;
    assert_eq!(entry["attempts"], 3, "{entry}");
    assert_eq!(entry["action"]["secret"], "********", "the secret is not shown: {entry}");
    let deliveries = receiver.hook.deliveries();
    assert_eq!(deliveries.iter().map(|d| d.status).collect::<Vec<_>>(), [500, 500, 200], "{deliveries:?}");
    for d in &deliveries {
        verify_signature(SECRET, d);
        assert_eq!(d.header("idempotency-key"), entry["idempotency_key"].as_str().unwrap(), "every attempt carries the same key");
        assert_eq!(d.header("x-corral-event"), "alarm.raised");
    }
    let body = deliveries[2].json();
    assert_eq!((body["event"].as_str(), body["alarm"]["device"].as_str()), (Some("alarm.raised"), Some("reefer-9")), "{body}");
    assert_eq!(body["alarm"]["id"], entry["alarm_id"], "{body}");
    let text = metrics(&server).await;
    assert_eq!(sample(&text, "corral_outbox_delivered_total{action=\"webhook\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "corral_outbox_delivery_seconds_count"), Some(1.0), "{text}");

    // The receiver goes down; the clear is attempted, fails, and waits in the outbox.
    let port = receiver.port;
    receiver.stop().await;
    ingest_ok(&server, &token, json!({"temperature": 5})).await;
    let pending = poll_until(&server, "the cleared delivery to be attempted and pending", PATIENCE, async || {
        outbox(&server, Some("pending")).await.into_iter().find(|e| e["event"] == "cleared" && e["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert!(pending["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{pending}");

    // Crash with the delivery pending; the receiver comes back on the same port; so does Corral.
    server.kill9();
    let receiver = start_receiver(port, Hook::with_failures(0)).await;
    server.restart();
    let delivered = poll_until(&server, "the cleared event after the restart", PATIENCE, async || {
        receiver.hook.deliveries().into_iter().find(|d| d.header("x-corral-event") == "alarm.cleared")
    })
    .await;
    verify_signature(SECRET, &delivered);
    assert_eq!(delivered.header("idempotency-key"), pending["idempotency_key"].as_str().unwrap(), "same key as before the crash");
    let body = delivered.json();
    assert_eq!(
        (body["alarm"]["status"].as_str(), body["alarm"]["cleared_by"].as_str()),
        (Some("cleared"), Some("rule")),
        "{body}"
    );
    assert_eq!(body["alarm"]["device"], "reefer-9", "{body}");
    let entry =
        wait_for_entry(&server, "cleared", "the cleared entry to be recorded delivered", |e| e["state"] == "delivered").await;
    assert_eq!(entry["id"], pending["id"], "{entry}");
    assert!(outbox(&server, Some("pending")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_the_attempt_limit_and_retry_revives() {
    let receiver = start_receiver(0, Hook::with_failures(usize::MAX)).await;
    let server = TestServer::start_with(
        BIN,
        &["--webhook-allow", "127.0.0.1", "--outbox-max-attempts", "3", "--outbox-retry-base-ms", "50"],
    )
    .await;
    let token = server.register_device("boiler-1", json!({})).await;
    create_rule(
        &server,
        json!({"name": "boiler hot", "condition": "pressure > 3",
        "actions": [{"type": "webhook", "url": receiver.url(), "secret": SECRET}]}),
    )
    .await;

    ingest_ok(&server, &token, json!({"pressure": 4})).await;
    let dead =
        poll_until(&server, "the delivery to go dead", PATIENCE, async || outbox(&server, Some("dead")).await.into_iter().next())
            .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(dead["last_error"].as_str().is_some_and(|e| e.contains("500")), "{dead}");
    assert_eq!(receiver.hook.deliveries().len(), 3, "exactly the attempt limit");
    assert!(outbox(&server, Some("pending")).await.is_empty());
    let text = metrics(&server).await;
    assert!(sample(&text, "corral_outbox_dead_total{action=\"webhook\"}") >= Some(1.0), "{text}");
    assert_eq!(sample(&text, "corral_outbox_pending "), Some(0.0), "{text}");

    // Only writers may retry. The receiver recovers; a retry delivers with the same key.
    let viewer = server.api_token("viewer", "viewer", None).await;
    let retry = format!("/api/v1/outbox/{}/retry", dead["id"]);
    assert_eq!(server.call(Method::POST, &retry, &viewer, None).await.0, 403);
    receiver.hook.failures_left.store(0, Ordering::SeqCst);
    let (status, out) = server.admin(Method::POST, &retry, None).await;
    assert_eq!(status, 200, "{out}");
    let delivered = wait_for_entry(&server, "raised", "the retried delivery", |e| e["state"] == "delivered").await;
    assert_eq!(delivered["id"], dead["id"]);
    let deliveries = receiver.hook.deliveries();
    assert_eq!(deliveries.last().map(|d| d.status), Some(200), "{deliveries:?}");
    assert_eq!(deliveries.last().unwrap().header("idempotency-key"), dead["idempotency_key"].as_str().unwrap());
    verify_signature(SECRET, deliveries.last().unwrap());
    let (status, out) = server.admin(Method::POST, &retry, None).await;
    assert_eq!(status, 409, "a delivered entry is not retried: {out}");
    assert_eq!(sample(&metrics(&server).await, "corral_outbox_pending "), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_webhooks_are_refused_without_an_allow_entry() {
    let receiver = start_receiver(0, Hook::with_failures(0)).await;
    let server = TestServer::start(BIN).await;
    let token = server.register_device("tank-1", json!({})).await;
    create_rule(
        &server,
        json!({"name": "tank low", "condition": "level < 10",
        "actions": [{"type": "webhook", "url": receiver.url(), "secret": SECRET}]}),
    )
    .await;

    ingest_ok(&server, &token, json!({"level": 3})).await;
    let dead = poll_until(&server, "the loopback delivery to be refused", PATIENCE, async || {
        outbox(&server, Some("dead")).await.into_iter().next()
    })
    .await;
    assert_eq!(dead["attempts"], 1, "a refused target is not retried: {dead}");
    assert!(dead["last_error"].as_str().is_some_and(|e| e.contains("loopback")), "{dead}");
    assert!(receiver.hook.deliveries().is_empty(), "nothing reached the receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_events_reach_mqtt_subscribers_and_commands_reach_the_device() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("chiller-1", json!({})).await;
    create_rule(
        &server,
        json!({"name": "chiller hot", "condition": "temperature > 8", "severity": "major",
               "actions": [{"type": "command", "name": "cool-down", "payload": {"setpoint": 4}},
                           {"type": "mqtt", "topic": "ops/{tenant}/{device}/{event}"}]}),
    )
    .await;
    // An application (the admin token; user name `token`) and the device itself, subscribed first.
    let app = Subscriber::start(&server, None, "token", ADMIN_TOKEN, &["alarms/#", "ops/#"]);
    let device = Subscriber::start(&server, Some("chiller-1"), "chiller-1", &token, &["devices/chiller-1/commands/#"]);

    ingest_ok(&server, &token, json!({"temperature": 12})).await;
    let (topic, payload) = app.next("alarms/");
    assert_eq!(topic, "alarms/default/chiller-1");
    let event: Value = serde_json::from_str(&payload).expect("alarm event JSON");
    assert_eq!(event["event"], "alarm.raised", "{event}");
    assert_eq!(
        (event["alarm"]["device"].as_str(), event["alarm"]["status"].as_str()),
        (Some("chiller-1"), Some("active")),
        "{event}"
    );
    assert!(event["event_id"].is_string() && event["time"].is_string(), "{event}");

    // A tracked command: its id is the topic's last level, and it is in the body with the name.
    let (topic, payload) = device.next("devices/chiller-1/commands/");
    let body: Value = serde_json::from_str(&payload).unwrap();
    let id = body["id"].as_str().expect("a command id").to_string();
    assert_eq!(topic, format!("devices/chiller-1/commands/{id}"));
    assert_eq!(body, json!({"id": id, "name": "cool-down", "payload": {"setpoint": 4}}));
    let (_, command) = server.admin(Method::GET, &format!("/api/v1/commands/{id}"), None).await;
    assert_eq!(command["created_by"], format!("rule:{}", event["alarm"]["rule"].as_str().unwrap()), "{command}");

    let (topic, payload) = app.next("ops/");
    assert_eq!(topic, "ops/default/chiller-1/raised", "the template expanded");
    let republished: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (republished["event"].as_str(), republished["alarm"]["id"].clone()),
        (Some("alarm.raised"), event["alarm"]["id"].clone())
    );

    let entries = poll_until(&server, "both actions recorded delivered", PATIENCE, async || {
        let entries = outbox(&server, Some("delivered")).await;
        (entries.len() == 2).then_some(entries)
    })
    .await;
    let mut kinds: Vec<&str> = entries.iter().map(|e| e["action"]["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["command", "mqtt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_action_publishes_to_a_real_nats_server() {
    let nats = NatsServer::start().await;
    let mut subscriber = NatsSubscriber::subscribe(nats.port, "corral.>").await;
    let server = TestServer::start(BIN).await;
    let token = server.register_device("silo-1", json!({})).await;
    create_rule(
        &server,
        json!({"name": "silo full", "condition": "fill > 90",
               "actions": [{"type": "nats", "url": format!("nats://127.0.0.1:{}", nats.port), "subject": "corral.{tenant}.{device}"}]}),
    )
    .await;

    ingest_ok(&server, &token, json!({"fill": 95})).await;
    let message = tokio::time::timeout(PATIENCE, subscriber.next())
        .await
        .unwrap_or_else(|_| panic!("no NATS message within {PATIENCE:?}; server log:\n{}", server.log_text()));
    assert_eq!(message.subject, "corral.default.silo-1");
    let entry = wait_for_entry(&server, "raised", "the NATS entry recorded delivered", |e| e["state"] == "delivered").await;
    let key = entry["idempotency_key"].as_str().unwrap();
    assert!(message.headers.starts_with("NATS/1.0\r\n"), "{:?}", message.headers);
    assert!(message.headers.contains(&format!("Nats-Msg-Id: {key}\r\n")), "{:?}", message.headers);
    let event: Value = serde_json::from_slice(&message.payload).expect("alarm JSON");
    assert_eq!((event["event"].as_str(), event["alarm"]["device"].as_str()), (Some("alarm.raised"), Some("silo-1")), "{event}");
    assert_eq!(event["alarm"]["id"], entry["alarm_id"]);
}

/// The API redacts secrets to `********`; editing a rule means PUTting back what GET returned,
/// and that must keep the secret receivers verify with, not reject or replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_rule_keeps_its_webhook_secret() {
    let receiver = start_receiver(0, Hook::with_failures(0)).await;
    let server = TestServer::start_with(BIN, &["--webhook-allow", "127.0.0.1"]).await;
    let token = server.register_device("oven-1", json!({})).await;
    let id = create_rule(
        &server,
        json!({"name": "oven hot", "condition": "temperature > 250",
        "actions": [{"type": "webhook", "url": receiver.url(), "secret": SECRET}]}),
    )
    .await;
    let path = format!("/api/v1/rules/{id}");
    // The rule as GET shows it (secret redacted), minus what the server adds: a spec to PUT back.
    let editable = async || {
        let (status, out) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{out}");
        let mut spec = out["rule"].clone();
        for key in ["id", "created_at", "updated_at", "created_by"] {
            spec.as_object_mut().unwrap().remove(key);
        }
        spec
    };

    // Leaving the secret out keeps it.
    let mut spec = editable().await;
    assert_eq!(spec["actions"][0]["secret"], "********", "{spec}");
    spec["actions"][0].as_object_mut().unwrap().remove("secret");
    spec["condition"] = json!("temperature > 200");
    let (status, out) = server.admin(Method::PUT, &path, Some(spec)).await;
    assert_eq!(status, 200, "PUT without the secret: {out}");

    // So does sending back the redacted placeholder, i.e. editing exactly what GET returned.
    let mut spec = editable().await;
    spec["condition"] = json!("temperature > 180");
    let (status, out) = server.admin(Method::PUT, &path, Some(spec)).await;
    assert_eq!(status, 200, "PUT of the rule as GET shows it (secret \"********\"): {out}");

    ingest_ok(&server, &token, json!({"temperature": 190})).await;
    let delivery =
        poll_until(&server, "the webhook of the edited rule", PATIENCE, async || receiver.hook.deliveries().into_iter().next())
            .await;
    verify_signature(SECRET, &delivery);
}

/// Alarm events go to `alarms/<tenant>/<device>`; an application token scoped to that tenant (a
/// customer's dashboard) must receive them, and never another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_scoped_applications_receive_their_tenants_alarm_events() {
    let server = TestServer::start(BIN).await;
    let acme = server.register_device("acme-1", json!({"tenant": "acme"})).await;
    let beta = server.register_device("beta-1", json!({"tenant": "beta"})).await;
    let dashboard = server.api_token("acme-dashboard", "viewer", Some("acme")).await;
    create_rule(&server, json!({"name": "hot", "condition": "temperature > 8"})).await;
    let app = Subscriber::start(&server, None, "acme-dashboard", &dashboard, &["alarms/#"]);

    // beta's alarm is published first and must not reach acme's dashboard; acme's must.
    ingest_ok(&server, &beta, json!({"temperature": 9})).await;
    wait_for_alarms(&server, "device=beta-1", "beta's alarm", |a| !a.is_empty()).await;
    ingest_ok(&server, &acme, json!({"temperature": 9})).await;
    let (topic, payload) = app.next("alarms/");
    assert_eq!(topic, "alarms/acme/acme-1", "{payload}");
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["alarm"]["tenant"], "acme", "{event}");
}

/// `corral_rule_matched_rows_total` counts rows on which the rule's condition was true; rows of
/// devices outside the rule's scope are not evaluated for it, so they cannot match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_metrics_count_only_rows_in_the_rules_scope() {
    let server = TestServer::start(BIN).await;
    let inside = server.register_device("in-1", json!({})).await;
    let outside = server.register_device("out-1", json!({})).await;
    let rule =
        create_rule(&server, json!({"name": "hot in-1", "condition": "temperature > 8", "scope": {"device": "in-1"}})).await;

    // Concurrent writers, so one evaluation pass often holds rows of both devices.
    let mut writers = Vec::new();
    for i in 0..200 {
        let token = if i % 2 == 0 { inside.clone() } else { outside.clone() };
        let (http, url) = (server.http.clone(), server.url("/api/v1/ingest/telemetry"));
        writers.push(tokio::spawn(async move {
            let response = http.post(&url).bearer_auth(&token).json(&json!({"temperature": 9})).send().await.expect("ingest");
            assert_eq!(response.status(), 200);
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    wait_evaluated(&server, rule, 100).await;
    let text = metrics(&server).await;
    let matched = sample(&text, &format!("corral_rule_matched_rows_total{{rule_id=\"{rule}\""));
    // More matches than rows evaluated would count out-1's rows, which the rule never watches.
    assert_eq!(matched, Some(100.0), "all 100 rows of in-1 matched, out-1 is outside the rule's scope");
}

/// `online` of a device as REST and SQL report it: the two must agree. A device can cross its
/// absence window between two calls, so SQL, asked between two REST reads, must match one of
/// them; the later REST answer is returned.
async fn online(server: &TestServer, device: &str) -> bool {
    let rest = async || {
        let (status, out) = server.admin(Method::GET, &format!("/api/v1/devices/{device}"), None).await;
        assert_eq!(status, 200, "{out}");
        out["online"].as_bool().unwrap_or_else(|| panic!("no `online` in {out}"))
    };
    let before = rest().await;
    let sql = server.query(&format!("SELECT online FROM devices WHERE device = '{device}'")).await;
    let after = rest().await;
    assert!(
        sql == vec![vec![json!(before)]] || sql == vec![vec![json!(after)]],
        "SQL ({sql:?}) and REST ({before}, then {after}) disagree about {device}"
    );
    after
}

#[tokio::test]
async fn online_status_follows_connections_data_and_absence_rules() {
    let server = TestServer::start_with(BIN, &["--absence-check-ms", "100"]).await;
    // Over HTTP: one covered by a 1 s absence rule, one on the default window (10 minutes).
    let beacon = server.register_device("beacon-1", json!({})).await;
    let logger = server.register_device("logger-1", json!({})).await;
    let chiller = server.register_device("chiller-1", json!({})).await;
    server.register_device("spare-1", json!({})).await;
    create_rule(&server, json!({"name": "beacon silent", "absence": "1s", "scope": {"device": "beacon-1"}})).await;
    for device in ["beacon-1", "logger-1", "chiller-1", "spare-1"] {
        assert!(!online(&server, device).await, "{device} was never heard from");
    }

    ingest_ok(&server, &beacon, json!({"rssi": -60})).await;
    ingest_ok(&server, &logger, json!({"temp": 4.5})).await;
    assert!(online(&server, "beacon-1").await && online(&server, "logger-1").await, "data makes a device online");
    // The absence rule's second passes: the beacon is offline, as its alarm says; the logger,
    // covered by no absence rule, stays online.
    poll_until(&server, "the beacon to go offline", PATIENCE, async || (!online(&server, "beacon-1").await).then_some(())).await;
    wait_for_alarms(&server, "device=beacon-1", "the absence alarm", |a| !a.is_empty()).await;
    assert!(online(&server, "logger-1").await);

    // MQTT: a connection is online even while silent; its end is offline at once.
    let connection = Subscriber::start(&server, Some("chiller-1"), "chiller-1", &chiller, &["devices/chiller-1/commands/#"]);
    assert!(online(&server, "chiller-1").await, "connected");
    drop(connection);
    poll_until(&server, "the chiller to go offline on disconnect", PATIENCE, async || {
        (!online(&server, "chiller-1").await).then_some(())
    })
    .await;

    // The inventory listing carries the status too.
    let (_, page) = server.admin(Method::GET, "/api/v1/devices", None).await;
    let listed: Vec<(String, bool)> = page["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["online"].as_bool().unwrap()))
        .collect();
    assert!(listed.contains(&("logger-1".into(), true)) && listed.contains(&("beacon-1".into(), false)), "{listed:?}");
}
