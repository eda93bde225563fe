//! Test-only (a dev-dependency): [`TestServer`] starts the real `corral` binary on port 0 in a
//! temporary data directory (every listener on port 0: HTTP, MQTT, CoAP, CoAP over DTLS, and
//! MQTTS and HTTPS when given a certificate), reads the bound addresses from its
//! `listening proto=... addr=...` log lines, and offers the few calls whole-server tests repeat
//! (register a device, ingest, SQL).
//! Tests talk to it over real HTTP; nothing is mocked. [`browser::Browser`] signs in to the
//! console as a person would; [`coap_datagram`] builds the CoAP requests no client would send.
//!
//! ```no_run
//! # async fn t() {
//! let server = corral_testkit::TestServer::start("target/debug/corral").await;
//! let token = server.register_device("sensor-1", serde_json::json!({})).await;
//! server.ingest(&token, "telemetry", r#"{"temperature": 21.5}"#).await;
//! let rows = server.query("SELECT temperature FROM telemetry").await;
//! # }
//! ```

pub mod browser;
mod script;

pub use script::{PATIENCE, Script};

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// reqwest is built with rustls but no crypto provider of its own (the workspace picks ring), so
/// a process must install it before building a client. `TestServer` does; tests that build
/// clients first call this.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CoAP request datagram built by hand, for tests that send what no client library would:
/// `kind` 0 = CON, 1 = NON; `options` as (number, value) in ascending order of number.
pub fn coap_datagram(kind: u8, code: u8, message_id: u16, token: &[u8], options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
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

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A running `corral serve`. Killed (SIGKILL) when dropped.
pub struct TestServer {
    binary: PathBuf,
    _temp: tempfile::TempDir,
    data_dir: PathBuf,
    child: Option<Child>,
    pub base: String,
    /// `host:port` of the MQTT listener.
    pub mqtt: String,
    /// `host:port` of the MQTTS listener, when started with a certificate.
    pub mqtts: String,
    /// `host:port` of the CoAP listener (UDP).
    pub coap: String,
    /// `host:port` of the CoAP over DTLS listener (UDP).
    pub coaps: String,
    /// `https://host:port` of the HTTPS listener, when started with a certificate.
    pub https: String,
    /// `host:port` of the PostgreSQL wire listener.
    pub pg: String,
    pub http: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
    /// Environment variables the server process gets (credentials for an S3 endpoint, say).
    extra_env: Vec<(String, String)>,
}

impl TestServer {
    pub async fn start(binary: &str) -> TestServer {
        Self::start_with(binary, &[]).await
    }

    /// Starts with extra `corral serve` flags (e.g. `--max-body-bytes 2048`).
    pub async fn start_with(binary: &str, extra_args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        Self::start_in(binary, temp, dir, extra_args)
    }

    /// Starts with extra flags and environment variables (kept across restarts).
    pub async fn start_with_env(binary: &str, extra_args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut server = Self::new(binary, temp, dir, extra_args);
        server.extra_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        server.spawn();
        server
    }

    /// Starts with its data in `data_dir` (e.g. a small filesystem for disk-full tests).
    pub async fn start_in_dir(binary: &str, data_dir: &Path, extra_args: &[&str]) -> TestServer {
        Self::start_in(binary, tempfile::tempdir().expect("temp dir"), data_dir.to_path_buf(), extra_args)
    }

    fn start_in(binary: &str, temp: tempfile::TempDir, data_dir: PathBuf, extra_args: &[&str]) -> TestServer {
        let mut server = Self::new(binary, temp, data_dir, extra_args);
        server.spawn();
        server
    }

    fn new(binary: &str, temp: tempfile::TempDir, data_dir: PathBuf, extra_args: &[&str]) -> TestServer {
        install_tls_provider();
        TestServer {
            binary: PathBuf::from(binary),
            _temp: temp,
            data_dir,
            child: None,
            base: String::new(),
            mqtt: String::new(),
            mqtts: String::new(),
            coap: String::new(),
            coaps: String::new(),
            https: String::new(),
            pg: String::new(),
            http: reqwest::Client::new(),
            log: Arc::default(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn spawn(&mut self) {
        // Every listener on port 0, unless the test sets it (`--mqtt off`).
        let listeners = ["--http", "--mqtt", "--coap", "--coaps", "--pg"]
            .into_iter()
            .filter(|flag| !self.extra_args.iter().any(|a| a == flag))
            .flat_map(|flag| [flag, "127.0.0.1:0"]);
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .args(listeners)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("CORRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CORRAL_LOG", "info")
            .env_remove("CORRAL_HTTP")
            .env_remove("CORRAL_MQTT")
            .env_remove("CORRAL_COAP")
            .env_remove("CORRAL_COAPS")
            .env_remove("CORRAL_HTTPS")
            .env_remove("CORRAL_PG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corral");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for proto in ["http", "https", "mqtt", "mqtts", "coap", "coaps", "pg"] {
                    if let Some(rest) = line.split(&format!("listening proto={proto} addr=")).nth(1) {
                        let _ = tx.send((proto, rest.split_whitespace().next().unwrap_or("").to_string()));
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
        // Held before waiting, so a failed start is still killed when the test panics.
        self.child = Some(child);
        // The MQTT, CoAP and PostgreSQL listeners (unless `off`) are logged before the HTTP one.
        loop {
            let (proto, addr) = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("corral did not report its HTTP address; log:\n{}", self.log_text()));
            if proto == "mqtt" {
                self.mqtt = addr;
            } else if proto == "mqtts" {
                self.mqtts = addr;
            } else if proto == "coap" {
                self.coap = addr;
            } else if proto == "coaps" {
                self.coaps = addr;
            } else if proto == "pg" {
                self.pg = addr;
            } else if proto == "https" {
                self.https = format!("https://{addr}");
            } else {
                self.base = format!("http://{addr}");
                break;
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no flush, no goodbye. What a power cut looks like to the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("corral did not exit within 60 s of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same data directory (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs the `corral` command line against this server as the admin; returns whether it
    /// succeeded, its stdout and its stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.binary)
            .args(args)
            .env("CORRAL_URL", &self.base)
            .env("CORRAL_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run corral");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, ADMIN_TOKEN, body).await
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Registers a device (as admin) and returns its token. `extra` adds fields (site, tenant...).
    pub async fn register_device(&self, id: &str, extra: Value) -> String {
        let mut body = json!({ "id": id });
        if let Value::Object(map) = extra {
            body.as_object_mut().unwrap().extend(map);
        }
        let (status, created) = self.admin(reqwest::Method::POST, "/api/v1/devices", Some(body)).await;
        assert_eq!(status, 201, "register {id}: {created}");
        created["token"].as_str().expect("token").to_string()
    }

    /// Creates an API token (as admin) of `role` (`admin`, `operator`, `viewer`), scoped to
    /// `tenant` when given, and returns its secret.
    pub async fn api_token(&self, name: &str, role: &str, tenant: Option<&str>) -> String {
        let body = json!({"name": name, "role": role, "tenant": tenant});
        let (status, out) = self.admin(reqwest::Method::POST, "/api/v1/tokens", Some(body)).await;
        assert_eq!(status, 201, "token {name}: {out}");
        out["token"].as_str().expect("token secret").to_string()
    }

    /// Merges `patch` into a device's desired twin (as admin); the new desired version.
    pub async fn patch_desired(&self, device: &str, patch: Value) -> u64 {
        let path = format!("/api/v1/devices/{device}/twin/desired");
        let (status, out) = self.admin(reqwest::Method::PATCH, &path, Some(patch)).await;
        assert_eq!(status, 200, "desired of {device}: {out}");
        out["version"].as_u64().expect("a version")
    }

    /// A device's whole twin (as admin).
    pub async fn twin(&self, device: &str) -> Value {
        let (status, out) = self.admin(reqwest::Method::GET, &format!("/api/v1/devices/{device}/twin"), None).await;
        assert_eq!(status, 200, "twin of {device}: {out}");
        out
    }

    /// Posts a raw JSON body to `/api/v1/ingest/<table>` with a device token.
    pub async fn ingest(&self, token: &str, table: &str, body: &str) -> (u16, Value) {
        self.ingest_as(token, table, body, "application/json").await
    }

    pub async fn ingest_as(&self, token: &str, table: &str, body: &str, content_type: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(&format!("/api/v1/ingest/{table}")))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("ingest request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Runs SQL as admin; panics on error. Returns the rows.
    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, out) = self.admin(reqwest::Method::POST, "/api/v1/query", Some(json!({ "sql": sql }))).await;
        assert_eq!(status, 200, "query {sql}: {out}");
        serde_json::from_value(out["rows"].clone()).expect("rows")
    }

    /// `SELECT count(*)` of a table, 0 when the table does not exist yet.
    pub async fn count(&self, table: &str) -> u64 {
        let (status, out) = self
            .admin(reqwest::Method::POST, "/api/v1/query", Some(json!({ "sql": format!("SELECT count(*) FROM \"{table}\"") })))
            .await;
        if status == 400 && out["error"].as_str().is_some_and(|e| e.contains("not found")) {
            return 0; // the table was never created: nothing was stored in it
        }
        assert_eq!(status, 200, "count {table}: {out}");
        out["rows"][0][0].as_u64().unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the openssl CLI in `dir`; panics with its error output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed P-256 CA, `<name>.pem` and `<name>.key` in `dir`, with subject CN `cn`, valid
/// for two days.
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (subject, key, cert) = (format!("/CN={cn}"), format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
    );
}

/// A P-256 key and a CSR, `<name>.key` and `<name>.csr` in `dir`, with subject CN `cn`.
pub fn key_and_csr(dir: &Path, name: &str, cn: &str) {
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost (`server.pem`,
/// `server.key`) signed by it, and a second, unrelated CA (`other.pem`, `other.key`), made with the
/// openssl CLI in `dir`.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    make_ca(dir, "ca", "Test CA");
    key_and_csr(dir, "server", "localhost");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    make_ca(dir, "other", "Other CA");
}
