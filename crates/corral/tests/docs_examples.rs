//! Every `curl` example in the README and `docs/` runs, as printed, against a server: users copy
//! them first, and an example the API refuses (a JSON body sent as `curl -d` sends it, with a
//! form Content-Type, say) is a broken promise. Only the address is changed (`localhost:8080`
//! becomes the test server's); `$CORRAL_TOKEN` is the admin token and `$DEVICE_TOKEN` the token
//! of the device the URL names. The files the examples read (a firmware image, a CA, a CSR) are
//! made beforehand with openssl.

use corral_testkit::{ADMIN_TOKEN, TestServer};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// One `curl …` command line from a fenced shell block (continuation lines joined).
struct Example {
    source: String,
    command: String,
}

/// The shell commands in ```sh blocks of `text` that start with `curl`, in order.
fn curl_examples(file: &str, text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut in_shell = false;
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(fence.trim(), "sh" | "bash" | "shell");
            continue;
        }
        if !in_shell {
            continue;
        }
        let (start, command) = match pending.take() {
            Some((start, so_far)) => (start, so_far + "\n" + trimmed),
            None if trimmed.starts_with("curl ") => (n + 1, trimmed.to_string()),
            None => continue,
        };
        // A quoted JSON body may span lines; so does a trailing backslash (bash reads both).
        let open_quotes = command.matches('\'').count() % 2 == 1;
        if command.ends_with('\\') || open_quotes {
            pending = Some((start, command));
        } else {
            examples.push(Example { source: format!("{file}:{start}"), command });
        }
    }
    examples
}

/// What an example that cannot succeed as printed must answer instead, and why.
fn expected_failure(command: &str) -> Option<(u16, &'static str)> {
    let placeholders = [
        ("cmd_4f0c2a9e1b7d35a86c21", 404, "the command id printed in the example's answer"),
        ("/command-jobs/job_9a41c0…", 404, "the job id printed in the example's answer"),
        ("auto_register: {profile", 409, "it registers the CA of the example above again, which is refused"),
        ("/meter-0042/approve", 409, "meter-0042 waits only once it connected with a certificate (certificates.rs)"),
        ("/meter-0042/reject", 409, "meter-0042 waits only once it connected with a certificate (certificates.rs)"),
        ("art_5f0c…", 404, "the artifact id printed in the upload's answer"),
        ("/alarms/7", 404, "an alarm id from the list's answer"),
        ("/outbox/12", 404, "an outbox entry from the list's answer"),
    ];
    placeholders.into_iter().find(|(p, ..)| command.contains(p)).map(|(_, status, why)| (status, why))
}

/// Why an example is not run here, if it is not.
fn not_run_here(command: &str) -> Option<&'static str> {
    if command.contains("corral.example.com") {
        return Some("it talks to a remote server over HTTPS with a client certificate (tested in certificates.rs)");
    }
    if command.contains('<') && command.contains('>') {
        return Some("it has a <placeholder> for the reader to fill in");
    }
    None
}

/// The files the examples read, made in `dir`.
fn make_example_files(dir: &Path) {
    std::fs::write(dir.join("meter-fw-2.1.0.bin"), vec![0x5a; 4096]).unwrap();
    let openssl = |args: &[&str]| corral_testkit::openssl(dir, args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-keyout",
        "factory-ca.key",
        "-out",
        "factory-ca.pem",
        "-subj",
        "/CN=Factory CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "pump-7.key",
        "-out",
        "pump-7.csr",
        "-subj",
        "/CN=pump-7",
    ]);
}

/// Runs one example through bash in `dir`; returns the HTTP status, then what it printed on
/// stdout and on stderr.
fn run(example: &Example, server: &TestServer, dir: &Path, device_token: &str) -> (u16, String, String) {
    let address = server.url("").trim_start_matches("http://").to_string();
    let command = example.command.replace("localhost:8080", &address);
    // The status goes to stderr, so examples that pipe the answer into jq still work.
    let script = format!(
        "set -o pipefail\ncurl() {{ command curl --max-time 60 -w '%{{stderr}}status=%{{http_code}}\\n' \"$@\"; }}\n{command}\n"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("CORRAL_TOKEN", ADMIN_TOKEN)
        .env("DEVICE_TOKEN", device_token)
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = stderr.lines().filter_map(|l| l.strip_prefix("status=")).next_back().and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, String::from_utf8_lossy(&out.stdout).into_owned(), stderr.into_owned())
}

/// The device an example acts as: the one its URL names, else the README's reefer.
fn device_of(command: &str) -> &str {
    command.split("/api/v1/devices/").nth(1).and_then(|rest| rest.split(['/', ' ', '?', '\'']).next()).unwrap_or("reefer-42")
}

/// A device that long-polls for its commands and reports each one succeeded.
async fn answer_commands(base: String, token: String) {
    let http = reqwest::Client::new();
    let device = "valve-1";
    loop {
        let next = http.get(format!("{base}/api/v1/devices/{device}/commands/next?wait=5")).bearer_auth(&token).send().await;
        let Ok(next) = next else { continue };
        if next.status() != 200 {
            continue;
        }
        let command: serde_json::Value = next.json().await.unwrap();
        let id = command["id"].as_str().unwrap();
        http.post(format!("{base}/api/v1/devices/{device}/commands/{id}/response"))
            .bearer_auth(&token)
            .json(&json!({"status": "succeeded", "payload": {"position": 79}}))
            .send()
            .await
            .unwrap();
    }
}

// Several threads: the device that answers commands runs while an example waits in curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_the_docs_works_as_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.sort();
    files.extend(docs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    let examples: Vec<Example> = files
        .iter()
        .flat_map(|path| {
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            curl_examples(&name, &std::fs::read_to_string(path).unwrap())
        })
        .collect();
    assert!(examples.len() >= 40, "found only {} curl examples; is the extraction broken?", examples.len());

    let server = TestServer::start(BIN).await;
    let dir = tempfile::tempdir().unwrap();
    make_example_files(dir.path());
    // The devices the examples act on. valve-1 is a north-zone meter, so the command job example
    // queues a command that its `commands/next` example then receives at once.
    let mut tokens = HashMap::new();
    for (id, body) in [
        ("valve-1", json!({"profile": "meter", "attributes": {"zone": "north", "region": "north"}})),
        ("truck-7", json!({"profile": "thermostat"})),
        ("pump-7", json!({"tenant": "acme"})),
        ("meter-0042", json!({"profile": "meter"})),
    ] {
        tokens.insert(id.to_string(), server.register_device(id, body).await);
    }

    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for example in &examples {
        if let Some(why) = not_run_here(&example.command) {
            skipped.push(format!("{}: {why}", example.source));
            continue;
        }
        let device = device_of(&example.command).to_string();
        let token = tokens.get(&device).cloned().unwrap_or_default();
        // An example that waits for the device's answer gets one: valve-1 answers what it is sent.
        let answering =
            example.command.contains("\"wait\"").then(|| tokio::spawn(answer_commands(server.url(""), token.clone())));
        let (status, stdout, stderr) = run(example, &server, dir.path(), &token);
        if let Some(device) = answering {
            device.abort();
        }
        // The README registers reefer-42 and uses its token from then on.
        if let Some(token) =
            serde_json::from_str::<serde_json::Value>(&stdout).ok().and_then(|v| v["token"].as_str().map(String::from))
        {
            tokens.entry(device).or_insert(token);
        }
        let output = format!("{stdout}\n{stderr}");
        let ok = match expected_failure(&example.command) {
            Some((expected, _)) => status == expected,
            None => (200..300).contains(&status),
        };
        if !ok {
            let expected = expected_failure(&example.command).map_or("2xx".into(), |(s, why)| format!("{s} ({why})"));
            failures.push(format!(
                "{}: got {status}, expected {expected}\n  {}\n  -> {}",
                example.source,
                example.command,
                output.trim()
            ));
        }
    }
    assert!(skipped.len() <= 4, "too many examples are not run: {skipped:#?}");
    assert!(failures.is_empty(), "{} of {} examples fail as printed:\n{}", failures.len(), examples.len(), failures.join("\n"));
}
