//! Against a real `nats-server` (the Debian package; scripts/test.sh installs it) read by a raw
//! subscriber, plus a scripted fake server for what a real one will not do on demand.

use super::*;
use std::process::{Child, Command, Stdio};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A `nats-server` child process on 127.0.0.1, killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    async fn start(extra_args: &[&str]) -> NatsServer {
        NatsServer::start_on(free_port(), extra_args).await
    }

    async fn start_on(port: u16, extra_args: &[&str]) -> NatsServer {
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}); these tests need it on PATH: install it with \
                     `apt-get install nats-server` (scripts/test.sh does this)"
                )
            });
        let server = NatsServer { child, port };
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nats-server did not listen on port {port} within 5 s");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` from PATH, else where the Debian package puts it (/usr/sbin is not on a
/// normal user's PATH).
fn nats_server_binary() -> &'static str {
    let on_path = Command::new("nats-server").arg("--version").output().is_ok();
    if on_path || !std::path::Path::new("/usr/sbin/nats-server").exists() { "nats-server" } else { "/usr/sbin/nats-server" }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    line.trim_end().to_string()
}

/// A raw NATS subscriber; returns once the server has registered the subscription.
async fn subscribe(port: u16, subject: &str) -> BufReader<TcpStream> {
    let mut reader = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    assert!(line(&mut reader).await.starts_with("INFO "));
    let hello = format!("CONNECT {{\"verbose\":false,\"headers\":true,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n");
    reader.get_mut().write_all(hello.as_bytes()).await.unwrap();
    while line(&mut reader).await != "PONG" {}
    reader
}

/// The next HMSG: (headers block, payload).
async fn next_message(reader: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let head = line(reader).await;
    let fields: Vec<&str> = head.split(' ').collect();
    assert_eq!(fields[0], "HMSG", "{head}");
    let header_len: usize = fields[3].parse().unwrap();
    let total_len: usize = fields[4].parse().unwrap();
    let mut body = vec![0; total_len + 2];
    reader.read_exact(&mut body).await.unwrap();
    let payload = body[header_len..total_len].to_vec();
    (String::from_utf8(body[..header_len].to_vec()).unwrap(), payload)
}

#[tokio::test]
async fn published_message_arrives_with_its_msg_id() {
    let server = NatsServer::start(&[]).await;
    let mut subscriber = subscribe(server.port, "corral.alarms.raised").await;
    let publisher = NatsPublisher::new(TIMEOUT);
    let payload = br#"{"alarm":"hot","value":41.5}"#;
    publisher.publish(&server.url(), "corral.alarms.raised", "action-42", payload).await.unwrap();
    let (headers, received) = next_message(&mut subscriber).await;
    assert_eq!(received, payload);
    assert!(headers.starts_with("NATS/1.0\r\n"), "{headers:?}");
    assert!(headers.contains("Nats-Msg-Id: action-42\r\n"), "{headers:?}");

    // Reusing the connection, and the bare host:port form.
    publisher.publish(&server.url(), "corral.alarms.raised", "action-43", b"2").await.unwrap();
    let bare = format!("127.0.0.1:{}", server.port);
    publisher.publish(&bare, "corral.alarms.raised", "action-44", b"3").await.unwrap();
    for (id, body) in [("action-43", b"2"), ("action-44", b"3")] {
        let (headers, received) = next_message(&mut subscriber).await;
        assert!(headers.contains(&format!("Nats-Msg-Id: {id}\r\n")) && received == body);
    }
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let server = NatsServer::start(&[]).await;
    let (port, url) = (server.port, server.url());
    let publisher = NatsPublisher::new(TIMEOUT);
    publisher.publish(&url, "a.b", "1", b"x").await.unwrap();
    drop(server);
    let err = publisher.publish(&url, "a.b", "2", b"x").await.unwrap_err();
    assert!(err.retryable, "{err}");
    let _server = NatsServer::start_on(port, &[]).await;
    publisher.publish(&url, "a.b", "3", b"x").await.unwrap();
}

#[tokio::test]
async fn credentials_from_the_url_and_bad_ones_are_permanent() {
    let server = NatsServer::start(&["--user", "corral", "--pass", "pw"]).await;
    let publisher = NatsPublisher::new(TIMEOUT);
    let url = format!("nats://corral:pw@127.0.0.1:{}", server.port);
    publisher.publish(&url, "a", "1", b"x").await.unwrap();
    let wrong = format!("nats://corral:nope@127.0.0.1:{}", server.port);
    let err = publisher.publish(&wrong, "a", "1", b"x").await.unwrap_err();
    assert!(!err.retryable && err.message.contains("Authorization Violation"), "{err}");
    assert!(!err.message.contains("nope"), "password stays out of messages: {err}");

    let token = NatsServer::start(&["--auth", "s3cret"]).await;
    let url = format!("nats://s3cret@127.0.0.1:{}", token.port);
    publisher.publish(&url, "a", "1", b"x").await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let err = NatsPublisher::new(TIMEOUT).publish(&url, "a.b", "1", b"x").await.unwrap_err();
    assert!(err.retryable && err.message.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn invalid_subjects_ids_and_urls_are_permanent() {
    let publisher = NatsPublisher::new(TIMEOUT);
    let ok_url = "nats://127.0.0.1:1";
    for subject in ["", "a b", "a.*", "a.>", ">", "a..b", ".a", "a.", "a\tb", "a\r\nPUB x 1"] {
        let err = publisher.publish(ok_url, subject, "1", b"x").await.unwrap_err();
        assert!(!err.retryable && err.message.contains("subject"), "{subject:?}: {err}");
    }
    let err = publisher.publish(ok_url, "a", "1\r\nX: y", b"x").await.unwrap_err();
    assert!(!err.retryable, "{err}");
    for url in ["http://h:4222", "nats://", "nats://h:port", "nats://::1:4222", "nats://[::1"] {
        let err = publisher.publish(url, "a", "1", b"x").await.unwrap_err();
        assert!(!err.retryable && err.message.contains("NATS URL"), "{url}: {err}");
    }
}

#[test]
fn urls_parse_with_defaults_and_credentials() {
    let s = Server::parse("nats://u:p@nats.example:4223/").unwrap();
    assert_eq!((s.host.as_str(), s.port, s.user.as_deref(), s.pass.as_deref()), ("nats.example", 4223, Some("u"), Some("p")));
    let s = Server::parse("10.0.0.5").unwrap();
    assert_eq!((s.host.as_str(), s.port, s.user), ("10.0.0.5", 4222, None));
    let s = Server::parse("nats://tok@[::1]").unwrap();
    assert_eq!((s.to_string(), s.user.as_deref(), s.pass), ("[::1]:4222".into(), Some("tok"), None));
}

/// A server that speaks only PUB (no headers), PINGs us while we wait, and limits payloads.
#[tokio::test]
async fn without_headers_falls_back_to_pub_and_answers_server_pings() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let publisher = NatsPublisher::new(TIMEOUT);
    let publishing = {
        let (publisher, url) = (publisher.clone(), url.clone());
        tokio::spawn(async move { publisher.publish(&url, "s.t", "id-1", b"hello").await })
    };
    let mut server = BufReader::new(listener.accept().await.unwrap().0);
    let info = b"INFO {\"server_id\":\"fake\",\"headers\":false,\"max_payload\":8}\r\n";
    server.get_mut().write_all(info).await.unwrap();
    let connect = line(&mut server).await;
    assert!(connect.starts_with("CONNECT {") && connect.contains("\"headers\":false"), "{connect}");
    assert_eq!(line(&mut server).await, "PING");
    server.get_mut().write_all(b"PONG\r\n").await.unwrap();
    assert_eq!(line(&mut server).await, "PUB s.t 5");
    assert_eq!(line(&mut server).await, "hello");
    assert_eq!(line(&mut server).await, "PING");
    server.get_mut().write_all(b"PING\r\n").await.unwrap();
    assert_eq!(line(&mut server).await, "PONG", "the server's PING is answered while waiting");
    server.get_mut().write_all(b"INFO {\"connect_urls\":[]}\r\n+OK\r\nPONG\r\n").await.unwrap();
    publishing.await.unwrap().unwrap();

    // Over max_payload: refused before sending, and no retry will make it fit.
    let err = publisher.publish(&url, "s.t", "id-2", b"123456789").await.unwrap_err();
    assert!(!err.retryable && err.message.contains("max_payload"), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out_as_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let publisher = NatsPublisher::new(Duration::from_millis(200));
    let err = publisher.publish(&url, "a", "1", b"x").await.unwrap_err();
    assert!(err.retryable && err.message.contains("timed out"), "{err}");
}
