//! The attack regressions of issue 16: one tenant (acme) against another (globex) on a shared
//! server, through every door. Each test replays an attack that once worked: SQL errors as an
//! oracle on another tenant's rows, MQTT session takeover by client id, forged alarm events,
//! filling the CoAP block-wise table, and an oversized MQTT 5 PUBLISH; the last test walks every
//! door with every role of the other tenant. MQTT scenarios are paho-mqtt
//! (clients/mqtt_attacks.py); CoAP is hand-made datagrams.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const ATTACKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_attacks.py");
const PATIENCE: Duration = Duration::from_secs(10);

/// (id, tenant, site, profile). globex uses acme's site and profile names too, so a leak through
/// a join or a filter on them would show.
const FLEET: [(&str, &str, &str, &str); 5] = [
    ("acme-d1", "acme", "north", "reefer"),
    ("acme-d2", "acme", "south", "reefer"),
    ("acme-d3", "acme", "north", "probe"),
    ("globex-d1", "globex", "north", "reefer"),
    ("globex-d2", "globex", "east", "probe"),
];
const READINGS_PER_DEVICE: usize = 5;
const ACME_ROWS: usize = 15;
const ALL_ROWS: usize = 25;

/// The readings of `FLEET[k]`, at fixed times so two servers hold identical rows. Multiples of
/// 0.5, so sums are exact in any order; globex-d1's newest is 77.0, what the oracle guesses at.
fn readings(k: usize) -> Value {
    let rows = (0..READINGS_PER_DEVICE).map(|i| {
        let temperature = if FLEET[k].0 == "globex-d1" && i == 4 { 77.0 } else { ((k * 7 + i * 11) % 60) as f64 * 0.5 - 3.0 };
        json!({"ts": 1_795_255_200_000i64 + i as i64 * 60_000 + k as i64, "temperature": temperature})
    });
    Value::Array(rows.collect())
}

async fn create_tenants(server: &TestServer, tenants: &[&str]) {
    for tenant in tenants {
        let (status, out) = server
            .admin(Method::POST, "/api/v1/tenants", Some(json!({"id": tenant})))
            .await;
        assert_eq!(status, 201, "tenant {tenant}: {out}");
    }
}

/// Creates `tenants` and registers their devices of the fleet, with their readings.
async fn populate(server: &TestServer, tenants: &[&str]) {
    create_tenants(server, tenants).await;
    for (k, (id, tenant, site, profile)) in FLEET
        .iter()
        .enumerate()
        .filter(|(_, d)| tenants.contains(&d.1))
    {
        let token = server
            .register_device(
                id,
                json!({"tenant": tenant, "site": site, "profile": profile}),
            )
            .await;
        let (status, out) = server
            .ingest(&token, "telemetry", &readings(k).to_string())
            .await;
        assert_eq!(status, 200, "{id}: {out}");
    }
}

async fn api_token(server: &TestServer, name: &str, role: &str, tenant: Option<&str>) -> String {
    let (status, out) = server
        .admin(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": name, "role": role, "tenant": tenant})),
        )
        .await;
    assert_eq!(status, 201, "token {name}: {out}");
    out["token"].as_str().expect("token secret").to_string()
}

/// SQL as `token`: (status, the rows when 200, else the error body).
async fn sql(server: &TestServer, token: &str, sql: &str) -> (u16, Value) {
    let (status, out) = server
        .call(
            Method::POST,
            "/api/v1/query",
            token,
            Some(json!({"sql": sql})),
        )
        .await;
    (
        status,
        if status == 200 {
            out["rows"].clone()
        } else {
            out
        },
    )
}

/// Error oracles: each query fails exactly when its guess about globex's data is true. Unscoped,
/// the true guess must fail (else the oracle proves nothing); acme's viewer must get the same
/// answer, its own rows counted, whether the guess is true or false.
async fn assert_oracles_closed(server: &TestServer, viewer: &str) {
    let temperature = (
        "device = 'globex-d1' AND temperature > 50",
        "device = 'globex-d1' AND temperature > 500",
    );
    let cases = [
        ("telemetry", temperature, ACME_ROWS, ALL_ROWS),
        ("latest.telemetry", temperature, 3, 5),
        (
            "devices",
            ("device = 'globex-d1'", "device = 'globex-d9'"),
            3,
            5,
        ),
    ];
    for (table, (true_guess, false_guess), acme, all) in cases {
        let query = |guess: &str| {
            format!(
                "SELECT count(*) AS n FROM {table} WHERE CAST(CASE WHEN {guess} THEN 'x' ELSE '1' END AS INT) = 1"
            )
        };
        let (status, out) = sql(server, ADMIN_TOKEN, &query(true_guess)).await;
        assert_ne!(
            status, 200,
            "unscoped, the true guess must fail on {table} or this oracle tests nothing: {out}"
        );
        assert_eq!(
            sql(server, ADMIN_TOKEN, &query(false_guess)).await,
            (200, json!([[all]])),
            "{table}"
        );
        for guess in [true_guess, false_guess] {
            let answer = sql(server, viewer, &query(guess)).await;
            assert_eq!(
                answer,
                (200, json!([[acme]])),
                "acme's answer on {table} must not depend on globex's data ({guess})"
            );
        }
    }
}

#[tokio::test]
async fn an_sql_error_never_reveals_another_tenants_rows() {
    let mut server = TestServer::start(BIN).await;
    populate(&server, &["acme", "globex"]).await;
    let viewer = api_token(&server, "acme-viewer", "viewer", Some("acme")).await;
    // From the write buffer...
    assert_oracles_closed(&server, &viewer).await;
    // ...and from Parquet, where user filters are pushed into decoding and statistics pruning.
    assert_eq!(
        server.terminate(),
        Some(0),
        "SIGTERM persists to Parquet; log:\n{}",
        server.log_text()
    );
    assert!(
        server.data_dir().join("store/tables/telemetry").is_dir(),
        "telemetry was persisted to Parquet"
    );
    server.restart();
    assert_oracles_closed(&server, &viewer).await;
}

/// A small deterministic generator (no dependency): Knuth's MMIX LCG, high bits.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    /// -10.0..=80.0 in steps of 0.5: often exactly a stored value, to probe the boundaries.
    fn temperature(&mut self) -> f64 {
        self.below(181) as f64 * 0.5 - 10.0
    }
}

fn random_query(lcg: &mut Lcg) -> String {
    const SITES: [&str; 4] = ["north", "south", "east", "west"];
    const PREFIXES: [&str; 7] = ["", "a", "acme", "acme-d1", "g", "globex", "globex-d1"];
    let c = format!("{:.1}", lcg.temperature());
    let (x, y) = (lcg.temperature(), lcg.temperature());
    let (a, b) = (format!("{:.1}", x.min(y)), format!("{:.1}", x.max(y)));
    let site = SITES[lcg.below(SITES.len() as u64) as usize];
    let prefix = PREFIXES[lcg.below(PREFIXES.len() as u64) as usize];
    match lcg.below(8) {
        0 => format!(
            "SELECT device, count(*), sum(temperature) FROM telemetry WHERE temperature > {c} GROUP BY device ORDER BY device"
        ),
        1 => format!(
            "SELECT t.device, d.site, t.temperature FROM telemetry t JOIN devices d USING (device) WHERE t.temperature < {c} ORDER BY 1, 3"
        ),
        2 => format!("SELECT count(*) FROM latest.telemetry WHERE temperature BETWEEN {a} AND {b}"),
        3 => format!("SELECT device FROM devices WHERE site = '{site}' ORDER BY device"),
        4 => format!("SELECT max(temperature) FROM telemetry WHERE device LIKE '{prefix}%'"),
        5 => format!(
            "SELECT count(*) FROM telemetry WHERE CAST(CASE WHEN temperature > {c} THEN 'x' ELSE '1' END AS INT) = 1"
        ),
        6 => format!(
            "SELECT l.device, d.profile, l.temperature FROM latest.telemetry l JOIN devices d USING (device) WHERE d.site = '{site}' ORDER BY 1"
        ),
        _ => format!(
            "SELECT count(*) FROM devices WHERE CAST(CASE WHEN device LIKE '{prefix}%' THEN 'x' ELSE '1' END AS INT) = 1"
        ),
    }
}

/// Differential: whatever acme's viewer asks of a shared server, it must get exactly what an
/// admin gets from a server that never held globex's data: the same status and the same rows.
#[tokio::test]
async fn a_tenants_sql_answers_are_those_of_a_server_holding_only_its_data() {
    let shared = TestServer::start(BIN).await;
    populate(&shared, &["acme", "globex"]).await;
    let viewer = api_token(&shared, "acme-viewer", "viewer", Some("acme")).await;
    let alone = TestServer::start(BIN).await;
    populate(&alone, &["acme"]).await;

    let mut lcg = Lcg(16);
    let mut answered = 0;
    for n in 0..60 {
        let query = random_query(&mut lcg);
        let (scoped, reference) = (
            sql(&shared, &viewer, &query).await,
            sql(&alone, ADMIN_TOKEN, &query).await,
        );
        assert_eq!(
            scoped.0, reference.0,
            "query {n}, status: {query}\nshared, acme viewer: {}\nacme alone: {}",
            scoped.1, reference.1
        );
        if scoped.0 == 200 {
            assert_eq!(scoped.1, reference.1, "query {n}, rows: {query}");
            answered += 1;
        }
    }
    assert!(
        answered >= 30,
        "only {answered} of 60 queries answered: the comparison is mostly of errors"
    );
}

fn host_port(server: &TestServer) -> (String, String) {
    let (host, port) = server.mqtt.rsplit_once(':').expect("MQTT address");
    (host.to_string(), port.to_string())
}

fn attacks(server: &TestServer, args: &[&str]) -> Command {
    let (host, port) = host_port(server);
    let mut command = Command::new("python3");
    command
        .arg(ATTACKS)
        .arg(args[0])
        .args([&host, &port])
        .args(&args[1..]);
    command
}

/// A one-shot scenario of mqtt_attacks.py: its whole output, trimmed.
fn paho(server: &TestServer, args: &[&str]) -> String {
    let out = attacks(server, args).output().expect("python3");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The admin commands a device over MQTT (QoS 1); the PUBACK line.
fn command(server: &TestServer, device: &str, id: &str, payload: &str) -> String {
    paho(
        server,
        &[
            "publish",
            "ops-1",
            "token",
            ADMIN_TOKEN,
            "5",
            &format!("devices/{device}/commands/{id}"),
            payload,
            "-",
        ],
    )
}

/// A running scenario (`hold`, `listen`): its lines as they come; stdin stays open until
/// `finish`, which is what ends a `hold`.
struct Scenario {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Scenario {
    fn spawn(server: &TestServer, args: &[&str]) -> Scenario {
        let mut child = attacks(server, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Scenario {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line starting with `prefix`; a disconnect, refusal or timeout before it fails.
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Ok(line) = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                panic!(
                    "no line starting with {prefix:?} within {PATIENCE:?}; seen {:?}",
                    self.seen
                );
            };
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
            let fatal = ["disconnected", "refused", "timeout"]
                .iter()
                .any(|p| line.starts_with(p));
            assert!(
                !fatal,
                "{line:?} while waiting for {prefix:?}; seen {:?}",
                self.seen
            );
        }
    }

    /// Closes stdin and returns the lines that follow until the scenario ends.
    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client id = device id, so a credential of another tenant that names a device's session must
/// neither take it over (disconnecting the device) nor resume it to read its queued commands.
#[tokio::test]
async fn a_foreign_credential_can_neither_take_over_nor_drain_a_devices_mqtt_session() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    server
        .register_device("acme-d1", json!({"tenant": "acme"}))
        .await;
    let device = server
        .register_device("globex-d2", json!({"tenant": "globex"}))
        .await;
    let viewer = api_token(&server, "acme-viewer", "viewer", Some("acme")).await;
    let hold = [
        "hold",
        "globex-d2",
        "globex-d2",
        device.as_str(),
        "5",
        "devices/globex-d2/commands/#",
    ];
    let door = r#"{"door":"open","pin":"4711"}"#;

    let mut online = Scenario::spawn(&server, &hold);
    online.wait_for("connected 0");
    assert_eq!(online.wait_for("subscribed"), "subscribed 1");
    for version in ["5", "311"] {
        // 0x85 Client Identifier not valid (3.1.1: return code 2, which paho reports as 133).
        assert_eq!(
            paho(&server, &["attack", "globex-d2", "token", &viewer, version]),
            "refused 133",
            "MQTT {version}"
        );
    }
    // The device was not disconnected: the next command still reaches it.
    assert_eq!(command(&server, "globex-d2", "c1", door), "puback 0");
    assert_eq!(
        online.wait_for("message"),
        format!("message devices/globex-d2/commands/c1 {door}")
    );
    assert_eq!(online.finish(), ["still-connected"]);

    // Offline, its session queues commands; the attacker cannot resume it to read them...
    assert_eq!(command(&server, "globex-d2", "c2", door), "puback 0");
    assert_eq!(
        paho(&server, &["attack", "globex-d2", "token", &viewer, "5"]),
        "refused 133",
        "and receives nothing"
    );
    // ...and the device, back, finds its queued command.
    let mut back = Scenario::spawn(&server, &hold);
    back.wait_for("connected 0");
    assert_eq!(
        back.wait_for("message"),
        format!("message devices/globex-d2/commands/c2 {door}")
    );
    assert_eq!(
        back.finish().last().map(String::as_str),
        Some("still-connected")
    );
}

/// A client id that names no device is free to choose, but the session it opens belongs to the
/// token that opened it: another tenant's app using the same id is refused, not handed it.
#[tokio::test]
async fn an_applications_mqtt_session_belongs_to_the_token_that_created_it() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    let acme = api_token(&server, "acme-ops", "operator", Some("acme")).await;
    let globex = api_token(&server, "globex-ops", "operator", Some("globex")).await;

    let mut dashboard = Scenario::spawn(&server, &["hold", "dashboard-1", "token", &acme, "5"]);
    dashboard.wait_for("connected 0");
    for version in ["5", "311"] {
        assert_eq!(
            paho(
                &server,
                &["attack", "dashboard-1", "token", &globex, version]
            ),
            "refused 133",
            "MQTT {version}"
        );
    }
    assert_eq!(
        dashboard.finish(),
        ["still-connected"],
        "the owner stayed connected"
    );
    // Offline the session is still acme's: globex is refused, acme resumes it.
    assert_eq!(
        paho(&server, &["attack", "dashboard-1", "token", &globex, "5"]),
        "refused 133"
    );
    assert_eq!(
        paho(&server, &["attack", "dashboard-1", "token", &acme, "5"]),
        "connected 0"
    );
}

/// `alarms/<tenant>/<device>` is where the server publishes alarm events; an app that could
/// publish (and retain) there could forge another tenant's alarms. Scoped apps publish only to
/// their tenant's devices and under `tenants/<tenant>/`.
#[tokio::test]
async fn applications_cannot_forge_alarm_events_or_publish_outside_their_tenant() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    server
        .register_device("acme-d1", json!({"tenant": "acme"}))
        .await;
    server
        .register_device("globex-d1", json!({"tenant": "globex"}))
        .await;
    let acme = api_token(&server, "acme-ops", "operator", Some("acme")).await;
    let forged = r#"{"event":"alarm.raised","alarm":{"device":"globex-d1","tenant":"globex","status":"active"}}"#;
    let publish = |client: &str, token: &str, topic: &str, retain: &str| {
        paho(
            &server,
            &[
                "publish", client, "token", token, "5", topic, forged, retain,
            ],
        )
    };

    assert_eq!(
        publish("acme-ops-1", &acme, "alarms/globex/globex-d1", "retain"),
        "puback 135",
        "0x87 not authorized"
    );
    assert_eq!(
        publish("acme-ops-1", &acme, "alarms/acme/acme-d1", "retain"),
        "puback 135",
        "alarm events are the server's alone"
    );
    assert_eq!(
        publish("admin-1", ADMIN_TOKEN, "alarms/globex/globex-d1", "retain"),
        "puback 135",
        "even for an unscoped admin"
    );
    // Nothing was retained for a subscriber that comes later.
    assert_eq!(
        paho(
            &server,
            &[
                "listen",
                "alarm-watch",
                "token",
                ADMIN_TOKEN,
                "1",
                "alarms/#"
            ]
        ),
        "subscribed 1\ndone"
    );

    for (topic, expected) in [
        ("tenants/acme/dispatch", "puback 0"),
        ("tenants/globex/dispatch", "puback 135"),
        ("ops/anything", "puback 135"),
    ] {
        assert_eq!(
            publish("acme-ops-1", &acme, topic, "-"),
            expected,
            "{topic}"
        );
    }
}

/// An MQTT 5 client over the server's maximum packet size learns why it is cut off: DISCONNECT
/// 0x95, not a reset that paho reports as 128 (unspecified error).
#[tokio::test]
async fn an_oversized_mqtt5_publish_is_told_packet_too_large() {
    let server = TestServer::start_with(BIN, &["--mqtt-max-packet-bytes", "2048"]).await;
    let token = server.register_device("acme-d1", json!({})).await;
    let publish = |payload: &str| {
        paho(
            &server,
            &[
                "publish",
                "acme-d1",
                "acme-d1",
                &token,
                "5",
                "devices/acme-d1/telemetry",
                payload,
                "-",
            ],
        )
    };
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(10_000));
    // paho 2.1.0 reads a DISCONNECT's reason code only when its remaining length is over 2
    // (eclipse-paho/paho.mqtt.python#860): a bare reason code shows as 0 (Success), so the
    // server's DISCONNECT must carry a property (a Reason String) for clients like it to see why.
    assert_eq!(
        publish(&big),
        "disconnected 149",
        "log:\n{}",
        server.log_text()
    );
    assert_eq!(
        publish(r#"{"temperature": 1}"#),
        "puback 0",
        "the device may go on with smaller packets"
    );
    assert_eq!(server.count("telemetry").await, 1);
}

/// A request datagram, built by hand: `kind` 0 = CON, 1 = NON; options in ascending order.
fn datagram(
    kind: u8,
    code: u8,
    message_id: u16,
    token: &[u8],
    options: &[(u16, &[u8])],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![0x40 | kind << 4 | token.len() as u8, code];
    out.extend_from_slice(&message_id.to_be_bytes());
    out.extend_from_slice(token);
    let mut previous = 0;
    for (number, value) in options {
        let ext = |n: usize| -> (u8, Vec<u8>) {
            match n {
                0..=12 => (n as u8, vec![]),
                13..=268 => (13, vec![(n - 13) as u8]),
                _ => (14, ((n - 269) as u16).to_be_bytes().to_vec()),
            }
        };
        let (d, d_ext) = ext(usize::from(number - previous));
        let (l, l_ext) = ext(value.len());
        previous = *number;
        out.push(d << 4 | l);
        out.extend(d_ext);
        out.extend(l_ext);
        out.extend_from_slice(value);
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

const JSON_FORMAT: &[u8] = &[50];

/// A Confirmable POST to `path` as the device of `token`, with a Block1 option when `block` is
/// `Some((num, more))` (SZX 0: 16-byte blocks).
fn post(
    message_id: u16,
    path: &[&str],
    token: &str,
    block: Option<(u8, bool)>,
    payload: &[u8],
) -> Vec<u8> {
    let query = format!("t={token}");
    let block1 = block.map(|(num, more)| [num << 4 | u8::from(more) << 3]);
    let mut options: Vec<(u16, &[u8])> = path.iter().map(|s| (11, s.as_bytes())).collect();
    options.extend([(12, JSON_FORMAT), (15, query.as_bytes())]);
    if let Some(value) = &block1 {
        options.push((27, &value[..]));
    }
    datagram(0, 2, message_id, &[0x7a], &options, payload)
}

fn udp(server: &TestServer) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(&server.coap).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket
}

/// One datagram (blocking: the server is another process, so the test runtime may wait).
fn receive(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Sends a Confirmable request and returns the response code, piggybacked or separate.
fn exchange(socket: &UdpSocket, request: &[u8]) -> u8 {
    socket.send(request).unwrap();
    let answer = receive(socket).expect("an answer");
    if (answer[0] >> 4) & 0x3 == 2 && answer[1] == 0 {
        // An empty ACK: the response follows as a Confirmable message of its own; acknowledge it.
        let separate = receive(socket).expect("the separate response");
        socket
            .send(&[0x60, 0x00, separate[2], separate[3]])
            .unwrap();
        return separate[1];
    }
    assert_eq!(&answer[2..4], &request[2..4], "the answer to this request");
    answer[1]
}

/// The block-wise upload table is shared by every tenant: 1,100 unfinished uploads of one acme
/// device once filled it, and every other device got 5.03 until they timed out.
#[tokio::test]
async fn one_device_cannot_fill_the_coap_block_wise_upload_table() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    let acme = server
        .register_device("acme-d1", json!({"tenant": "acme"}))
        .await;
    let globex = server
        .register_device("globex-d1", json!({"tenant": "globex"}))
        .await;
    let socket = udp(&server);
    let body = br#"{"temperature": 21.5, "pad": "xxxxx"}"#;

    for i in 0..1100u16 {
        // A table per request: each is an upload of its own, never finished.
        let table = format!("t{i}");
        let request = post(
            0x1000 + i,
            &["devices", "acme-d1", "telemetry", &table],
            &acme,
            Some((0, true)),
            &body[..16],
        );
        // 2.31 Continue while within the device's 8 uploads; 5.03 after.
        let expected = if i < 8 { 0x5f } else { 0xa3 };
        assert_eq!(
            exchange(&socket, &request),
            expected,
            "block 0 of acme upload {i}"
        );
    }

    // globex's device still uploads, block by block.
    let blocks: Vec<&[u8]> = body.chunks(16).collect();
    for (num, block) in blocks.iter().enumerate() {
        let last = num + 1 == blocks.len();
        let request = post(
            0x2000 + num as u16,
            &["devices", "globex-d1", "telemetry"],
            &globex,
            Some((num as u8, !last)),
            block,
        );
        let expected = if last { 0x44 } else { 0x5f };
        assert_eq!(exchange(&socket, &request), expected, "globex block {num}");
    }
    assert_eq!(
        server
            .query("SELECT device, temperature, pad FROM telemetry")
            .await,
        vec![vec![json!("globex-d1"), json!(21.5), json!("xxxxx")]]
    );
}

/// An SSE stream's status (its headers; the stream itself is dropped unread).
async fn live_status(server: &TestServer, token: &str, device: &str) -> u16 {
    let url = server.url(&format!("/api/v1/devices/{device}/live"));
    let response = server
        .http
        .get(url)
        .bearer_auth(token)
        .timeout(PATIENCE)
        .send()
        .await
        .expect("live request");
    response.status().as_u16()
}

/// Every door, with every role of the other tenant: REST, SQL, live stream, MQTT subscription,
/// and a device token on CoAP. Each has its own-tenant control, so a closed door is not merely
/// a broken one.
#[tokio::test]
async fn every_door_is_closed_to_every_role_of_another_tenant() {
    let server = TestServer::start(BIN).await;
    create_tenants(&server, &["acme", "globex"]).await;
    let acme = server
        .register_device("acme-d1", json!({"tenant": "acme"}))
        .await;
    let globex = server
        .register_device("globex-d1", json!({"tenant": "globex"}))
        .await;
    assert_eq!(
        server
            .ingest(&acme, "telemetry", r#"{"temperature": 4.5}"#)
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .ingest(&globex, "telemetry", r#"{"temperature": 77.0}"#)
            .await
            .0,
        200
    );

    let mut listeners = Vec::new();
    for role in ["viewer", "operator", "admin"] {
        let token = api_token(&server, &format!("acme-{role}"), role, Some("acme")).await;
        let (status, out) = server
            .call(Method::GET, "/api/v1/devices/globex-d1", &token, None)
            .await;
        assert_eq!(status, 404, "{role} REST: {out}");
        assert_eq!(
            server
                .call(Method::GET, "/api/v1/devices/acme-d1", &token, None)
                .await
                .0,
            200,
            "{role} REST, own device"
        );
        let answer = sql(
            &server,
            &token,
            "SELECT * FROM telemetry WHERE device = 'globex-d1'",
        )
        .await;
        assert_eq!(answer, (200, json!([])), "{role} SQL");
        assert_eq!(
            sql(&server, &token, "SELECT device FROM telemetry").await,
            (200, json!([["acme-d1"]])),
            "{role} SQL, own rows"
        );
        assert_eq!(
            live_status(&server, &token, "globex-d1").await,
            404,
            "{role} live stream"
        );
        assert_eq!(
            live_status(&server, &token, "acme-d1").await,
            200,
            "{role} live stream, own device"
        );

        // Subscribing to the other tenant's topic is allowed; its messages are filtered out.
        let client = format!("acme-{role}-watch");
        let mut listener = Scenario::spawn(
            &server,
            &[
                "listen",
                &client,
                "token",
                &token,
                "6",
                "devices/globex-d1/telemetry",
                "devices/acme-d1/telemetry",
            ],
        );
        assert_eq!(listener.wait_for("subscribed"), "subscribed 1 1", "{role}");
        listeners.push((role, listener));
    }
    let publish = |id: &str, token: &str, payload: &str| {
        paho(
            &server,
            &[
                "publish",
                id,
                id,
                token,
                "5",
                &format!("devices/{id}/telemetry"),
                payload,
                "-",
            ],
        )
    };
    // globex's first, so acme's arriving proves globex's had its chance.
    assert_eq!(
        publish("globex-d1", &globex, r#"{"temperature": 78.0}"#),
        "puback 0"
    );
    assert_eq!(
        publish("acme-d1", &acme, r#"{"temperature": 5.5}"#),
        "puback 0"
    );
    for (role, listener) in listeners {
        assert_eq!(
            listener.finish(),
            [
                r#"message devices/acme-d1/telemetry {"temperature": 5.5}"#,
                "done"
            ],
            "{role} MQTT"
        );
    }

    // CoAP: acme's device token does not speak for globex's device.
    let socket = udp(&server);
    let request = post(
        0x3000,
        &["devices", "globex-d1", "telemetry"],
        &acme,
        None,
        br#"{"temperature": 99.0}"#,
    );
    assert_eq!(exchange(&socket, &request), 0x83, "4.03 forbidden");
    let rows = server
        .query("SELECT device, count(*) FROM telemetry GROUP BY device ORDER BY device")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![json!("acme-d1"), json!(2)],
            vec![json!("globex-d1"), json!(2)]
        ],
        "the refused request stored nothing"
    );
}
