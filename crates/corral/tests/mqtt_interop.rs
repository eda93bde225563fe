//! The Eclipse Paho MQTT interoperability tests (an independent suite, vendored, with two lines fixed, in
//! `tests/third_party/paho.mqtt.testing`) against Corral in open mode, MQTT 3.1.1 and MQTT 5,
//! each on a server of its own. The suites expect the broker's keep-alive cap at 60 s, as Paho's
//! own test broker has it; the tests stricter than the specification are left out by name, and
//! `docs/mqtt.md` says why.

use corral_testkit::TestServer;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/third_party/paho.mqtt.testing/interoperability");
const RUNNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_interop.py");

/// Tests that need a broker configured to refuse one topic (`test/nosubscribe`): the
/// specification allows a refusal but requires none.
const STRICTER_THAN_THE_SPEC: &[&str] = &["test_subscribe_failure"];

/// Runs one suite; `at_least` of its tests must have run (so a suite that silently found no
/// tests cannot pass).
async fn run_suite(version: &'static str, at_least: usize) {
    let server = TestServer::start_with(BIN, &["--mqtt-allow-anonymous", "--set", "mqtt.max_keep_alive_secs=60"]).await;
    let (host, port) = server.mqtt.rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(RUNNER).args([SUITE, version, &host, &port]).args(STRICTER_THAN_THE_SPEC).output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "Paho interoperability tests, MQTT {version}:\n{report}\nserver log:\n{}", server.log_text());
    let summary = report.lines().find(|l| l.starts_with("ran ")).unwrap_or_default().to_string();
    let ran: usize = summary.split_whitespace().nth(1).and_then(|n| n.trim_end_matches(',').parse().ok()).unwrap_or(0);
    assert!(ran >= at_least, "the suite ran only {ran} tests: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_interoperability_tests_pass_on_mqtt_3_1_1() {
    run_suite("3", 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_interoperability_tests_pass_on_mqtt_5() {
    run_suite("5", 26).await;
}
