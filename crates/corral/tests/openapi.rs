//! The OpenAPI document against the server that serves it: every operation it lists is a route
//! (not the console's fallback), `corral openapi` prints the same document, and schemathesis, fuzzing every operation with an API token of
//! each role, finds no 5xx and no answer the document does not describe. The fuzzed server runs
//! in a network namespace of its own with only a loopback interface (needs root, as CI has):
//! rules and exports the fuzzer invents may name any webhook or bucket, and nothing may leave.

use corral_testkit::TestServer;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const ROLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/schemathesis_roles.py");

/// A concrete path for a documented template: `{id}` becomes `no-such-thing` (or 0 for integers).
fn concrete(path: &str, operation: &Value) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let integer = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["schema"]["type"] == "integer");
                if integer { "0".to_string() } else { "no-such-thing".to_string() }
            }
            None => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_is_a_route() {
    let server = TestServer::start(BIN).await;
    let (status, document) = server.admin(reqwest::Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    // `corral openapi` prints the same document without a server.
    let printed = Command::new(BIN).arg("openapi").output().expect("corral openapi");
    assert!(printed.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&printed.stdout).unwrap(), document, "corral openapi differs from the served one");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() > 60, "only {} paths documented", paths.len());
    let client = reqwest::Client::new();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let url = server.url(&concrete(path, operation));
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            // No credential: every route answers (401, or its answer when open to anyone), and
            // nothing is changed. A path no route serves would reach the console's fallback.
            let response = client.request(method.clone(), &url).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(!body.contains("no route for"), "{method} {path}: documented, but not served: {status} {body}");
            assert_ne!(status, 405, "{method} {path}: documented, but not for this method");
            let documented = operation["responses"].as_object().unwrap();
            assert!(documented.contains_key(&status.to_string()), "{method} {path}: {status} is not documented: {body}");
        }
    }
}

/// `corral serve` in a namespace of its own, killed (and the namespace deleted) on drop.
struct Isolated {
    namespace: String,
    server: Child,
    base: String,
}

impl Isolated {
    fn start(admin_token: &str) -> Isolated {
        let namespace = format!("corral-openapi-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &namespace]).stderr(Stdio::null()).status();
        let made = Command::new("ip").args(["netns", "add", &namespace]).status().expect("run ip (iproute2)");
        assert!(made.success(), "creating a network namespace needs root; run this test as root (CI does)");
        let up = Command::new("ip").args(["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"]).status().unwrap();
        assert!(up.success());
        let data = std::env::temp_dir().join(&namespace);
        let _ = std::fs::remove_dir_all(&data);
        let mut server = Command::new("ip")
            .args(["netns", "exec", &namespace, BIN, "serve", "--data-dir"])
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--mqtt", "off", "--coap", "off", "--pg", "off"])
            .env("CORRAL_LOG", "info")
            .env("CORRAL_ADMIN_TOKEN", admin_token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corral");
        let stderr = server.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening proto=http addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_string());
                }
                // Server errors show in the test's output next to the request that caused them.
                if line.contains("ERROR") {
                    eprintln!("server: {line}");
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("corral serve did not listen within 60 s");
        Isolated { namespace, server, base: format!("http://{addr}") }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "delete", &self.namespace]).status();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.namespace));
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer_for_any_role() {
    let admin = "schemathesis-admin-token";
    let server = Isolated::start(admin);
    // schemathesis keeps its example database in the working directory: not in the source tree.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("ip")
        .current_dir(scratch.path())
        .args(["netns", "exec", &server.namespace, "python3", ROLES, &server.base, admin, "50"])
        .output()
        .expect("python3 (pip install schemathesis)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures (above)");
}
