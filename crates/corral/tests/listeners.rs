//! Which ports `corral serve` binds when the user names none: HTTP, MQTT and CoAP on their
//! well-known ports, and nothing that needs keys (HTTPS, MQTTS, CoAP over DTLS) unless asked for;
//! `off` means off, with or without a certificate. The server runs on its real default ports, so
//! each case runs in a network namespace of its own (needs root, as CI has); nothing leaves it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A network namespace with only a loopback interface, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn new(tag: &str) -> Namespace {
        let name = format!("corral-{tag}-{}", std::process::id());
        // A namespace left by a killed earlier run of this test.
        let _ = Command::new("ip").args(["netns", "delete", &name]).stderr(Stdio::null()).status();
        let made = Command::new("ip").args(["netns", "add", &name]).status().expect("run ip (iproute2)");
        assert!(made.success(), "creating a network namespace needs root; run this test as root (CI does)");
        run(&name, &["ip", "link", "set", "lo", "up"]);
        Namespace(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0, program]);
        command
    }

    /// `proto/port` of every listening TCP socket and bound UDP socket in the namespace.
    fn bound(&self) -> Vec<String> {
        let out = self.command("ss").args(["-Hlntu"]).output().expect("run ss");
        let mut bound: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields.get(4)?.rsplit(':').next()?;
                Some(format!("{}/{port}", fields[0]))
            })
            .collect();
        bound.sort();
        bound.dedup();
        bound
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn run(namespace: &str, args: &[&str]) {
    let status = Command::new("ip").args(["netns", "exec", namespace]).args(args).status().unwrap();
    assert!(status.success(), "{args:?} in {namespace}");
}

/// `corral serve` in the namespace, killed on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `corral serve ARGS` with a fresh data directory and waits until HTTP listens (the
/// other listeners are up by then); fails with the log if it exits instead.
fn serve(namespace: &Namespace, data: &std::path::Path, args: &[&str]) -> Serving {
    let mut child = namespace
        .command(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("CORRAL_LOG", "info")
        .env("CORRAL_ADMIN_TOKEN", "admin-token-for-listener-tests")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start corral");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if line.contains("listening proto=http ") {
                let _ = tx.send(Ok(()));
            }
        }
        let _ = tx.send(Err(log));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => Serving(child),
        Ok(Err(log)) => panic!("corral serve {args:?} exited:\n{log}"),
        Err(_) => panic!("corral serve {args:?} did not listen within 60 s"),
    }
}

#[test]
fn only_the_listeners_that_need_no_keys_are_on_by_default() {
    let ns = Namespace::new("defaults");
    let data = tempfile::tempdir().unwrap();
    let _server = serve(&ns, data.path(), &[]);
    assert_eq!(ns.bound(), ["tcp/1883", "tcp/5433", "tcp/8080", "udp/5683"]);
}

#[test]
fn off_means_off_even_without_a_certificate() {
    let ns = Namespace::new("off");
    let data = tempfile::tempdir().unwrap();
    let _server = serve(&ns, data.path(), &["--https", "off", "--mqtts", "off", "--coap", "off", "--mqtt", "off", "--pg", "off"]);
    assert_eq!(ns.bound(), ["tcp/8080"]);
}

#[test]
fn coap_over_dtls_listens_when_asked_for() {
    let ns = Namespace::new("coaps");
    let data = tempfile::tempdir().unwrap();
    let _server = serve(&ns, data.path(), &["--coaps", "0.0.0.0:5684"]);
    assert_eq!(ns.bound(), ["tcp/1883", "tcp/5433", "tcp/8080", "udp/5683", "udp/5684"]);
}

#[test]
fn asking_for_https_without_a_certificate_is_refused_with_the_fix() {
    let out = Command::new(BIN).args(["serve", "--https", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--https needs a certificate: --tls-cert and --tls-key"), "{err}");
}
