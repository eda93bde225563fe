//! Firmware artifacts over CoAP: a device downloads an artifact uploaded over HTTP block by block
//! (Block2, RFC 7959) with libcoap's `coap-client` (Debian libcoap3-bin), and hand-made
//! datagrams check the block arithmetic, Size2 and the end of the artifact.

use corral_coap::block::Block;
use corral_coap::{Code, Message};
use corral_testkit::{ADMIN_TOKEN, TestServer, coap_datagram as datagram};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const COAP_CLIENT: &str = "coap-client-notls";

fn uri(server: &TestServer, path: &str, token: &str) -> String {
    format!("coap://{}/{path}?t={token}", server.coap)
}

/// `coap-client` with a 10 s wait; returns (stdout, stderr). It prints error codes on stderr.
fn coap_client(args: &[&str]) -> (String, String) {
    let out = Command::new(COAP_CLIENT).args(["-B", "10"]).args(args).output().expect("coap-client (apt install libcoap3-bin)");
    (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Uploads `image` as admin (default tenant); the artifact's JSON.
async fn upload(server: &TestServer, image: Vec<u8>) -> Value {
    let response = server
        .http
        .post(server.url("/api/v1/artifacts?name=fw&version=1.0.0"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/octet-stream")
        .body(image)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.expect("artifact JSON")
}

/// A GET of `devices/<device>/artifacts/<artifact>` with Block2 `(num, szx)`, Size2 if asked,
/// over a raw socket: the parsed answer.
fn get_block(
    socket: &UdpSocket,
    message_id: u16,
    device: &str,
    artifact: &str,
    token: &str,
    block: Option<(u32, u8)>,
    size2: bool,
) -> Message {
    let query = format!("t={token}");
    let block2 = block.map(|(num, szx)| Block { num, more: false, szx }.encode());
    let mut options: Vec<(u16, &[u8])> =
        vec![(11, b"devices"), (11, device.as_bytes()), (11, b"artifacts"), (11, artifact.as_bytes()), (15, query.as_bytes())];
    if let Some(value) = &block2 {
        options.push((23, value));
    }
    if size2 {
        options.push((28, &[]));
    }
    socket.send(&datagram(0, 1, message_id, &[7], &options, b"")).unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("an answer");
    Message::parse(&buf[..n]).expect("a CoAP answer")
}

fn block2(answer: &Message) -> Option<Block> {
    answer.option(23).and_then(Block::parse)
}

#[tokio::test]
async fn a_device_downloads_its_tenants_artifact_block_wise_and_no_one_else_can() {
    let server = TestServer::start(BIN).await;
    let token = server.register_device("meter-1", json!({})).await;
    let neighbour = server.register_device("meter-2", json!({})).await;
    let (status, out) = server.admin(Method::POST, "/api/v1/tenants", Some(json!({"id": "globex"}))).await;
    assert_eq!(status, 201, "{out}");
    let stranger = server.register_device("globex-1", json!({"tenant": "globex"})).await;

    // About 100 KiB, not a whole number of blocks.
    let image: Vec<u8> = (0..100 * 1024 + 123).map(|_| rand::random::<u8>()).collect();
    let artifact = upload(&server, image.clone()).await;
    let (id, sha256) = (artifact["id"].as_str().unwrap(), artifact["sha256"].as_str().unwrap());
    assert_eq!((artifact["size"].as_u64(), sha256), (Some(image.len() as u64), hex::encode(Sha256::digest(&image)).as_str()));

    // libcoap follows the Block2 blocks by itself: 1024-byte blocks, and 256-byte ones it asks for.
    let dir = tempfile::tempdir().unwrap();
    for size in ["1024", "256"] {
        let file = dir.path().join(format!("fw-{size}.bin"));
        let path = format!("devices/meter-1/artifacts/{id}");
        let (_, err) = coap_client(&["-m", "get", "-b", size, "-o", file.to_str().unwrap(), &uri(&server, &path, &token)]);
        let downloaded = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}: {err}"));
        assert_eq!((downloaded.len(), hex::encode(Sha256::digest(&downloaded))), (image.len(), sha256.to_string()), "{err}");
    }

    // Another tenant's device: the artifact does not exist for it.
    let (_, err) = coap_client(&["-m", "get", &uri(&server, &format!("devices/globex-1/artifacts/{id}"), &stranger)]);
    assert!(err.contains("4.04"), "{err}");
    // Another device's path: refused as on every devices/<id>/... resource.
    let (_, err) = coap_client(&["-m", "get", &uri(&server, &format!("devices/meter-1/artifacts/{id}"), &neighbour)]);
    assert!(err.contains("4.03"), "{err}");
    let (_, err) = coap_client(&["-m", "get", &uri(&server, "devices/meter-1/artifacts/art_0000000000000000", &token)]);
    assert!(err.contains("4.04"), "{err}");

    // Block by block over a raw socket.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(&server.coap).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // No Block2: block 0 in the server's 1024 bytes, octet-stream, with Size2.
    let first = get_block(&socket, 1, "meter-1", id, &token, None, false);
    assert_eq!((first.code, block2(&first)), (Code::CONTENT, Some(Block { num: 0, more: true, szx: 6 })));
    assert_eq!((first.uint(12), first.uint(28)), (Ok(Some(42)), Ok(Some(image.len() as u32))));
    assert_eq!(first.payload, image[..1024]);
    // Block 5 of 64 bytes: Size2 only when asked.
    let small = get_block(&socket, 2, "meter-1", id, &token, Some((5, 2)), false);
    assert_eq!((block2(&small), small.option(28)), (Some(Block { num: 5, more: true, szx: 2 }), None));
    assert_eq!(small.payload, image[320..384]);
    let asked = get_block(&socket, 3, "meter-1", id, &token, Some((5, 2)), true);
    assert_eq!(asked.uint(28), Ok(Some(image.len() as u32)));
    // The last block is short and says no more; the one after it is past the end: 4.02.
    let last = get_block(&socket, 4, "meter-1", id, &token, Some((100, 6)), false);
    assert_eq!((block2(&last), last.payload.as_slice()), (Some(Block { num: 100, more: false, szx: 6 }), &image[102_400..]));
    let past = get_block(&socket, 5, "meter-1", id, &token, Some((101, 6)), false);
    assert_eq!((past.code, block2(&past)), (Code::BAD_OPTION, None));
    let far = get_block(&socket, 6, "meter-1", id, &token, Some((5000, 6)), false);
    assert_eq!(far.code, Code::BAD_OPTION, "{}", String::from_utf8_lossy(&far.payload));
    // Another tenant's device asking a block: 4.04 all the same, and nothing of the content.
    let foreign = get_block(&socket, 7, "globex-1", id, &stranger, Some((0, 6)), true);
    assert_eq!((foreign.code, foreign.option(28)), (Code::NOT_FOUND, None));
}
