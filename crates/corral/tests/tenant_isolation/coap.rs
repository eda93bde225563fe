//! CoAP: one device flooding the shared block-wise upload table.

use super::*;
use corral_testkit::coap_datagram as datagram;
use std::net::UdpSocket;

const JSON_FORMAT: &[u8] = &[50];

/// A Confirmable POST to `path` as the device of `token`, with a Block1 option when `block` is
/// `Some((num, more))` (SZX 0: 16-byte blocks).
pub(super) fn post(message_id: u16, path: &[&str], token: &str, block: Option<(u8, bool)>, payload: &[u8]) -> Vec<u8> {
    let query = format!("t={token}");
    let block1 = block.map(|(num, more)| [num << 4 | u8::from(more) << 3]);
    let mut options: Vec<(u16, &[u8])> = path.iter().map(|s| (11, s.as_bytes())).collect();
    options.extend([(12, JSON_FORMAT), (15, query.as_bytes())]);
    if let Some(value) = &block1 {
        options.push((27, &value[..]));
    }
    datagram(0, 2, message_id, &[0x7a], &options, payload)
}

pub(super) fn udp(server: &TestServer) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(&server.coap).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    socket
}

/// One datagram (blocking: the server is another process, so the test runtime may wait).
fn receive(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Sends a Confirmable request and returns the response code, piggybacked or separate.
pub(super) fn exchange(socket: &UdpSocket, request: &[u8]) -> u8 {
    socket.send(request).unwrap();
    let answer = receive(socket).expect("an answer");
    if (answer[0] >> 4) & 0x3 == 2 && answer[1] == 0 {
        // An empty ACK: the response follows as a Confirmable message of its own; acknowledge it.
        let separate = receive(socket).expect("the separate response");
        socket.send(&[0x60, 0x00, separate[2], separate[3]]).unwrap();
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
    let acme = server.register_device("acme-d1", json!({"tenant": "acme"})).await;
    let globex = server.register_device("globex-d1", json!({"tenant": "globex"})).await;
    let socket = udp(&server);
    let body = br#"{"temperature": 21.5, "pad": "xxxxx"}"#;

    for i in 0..1100u16 {
        // A table per request: each is an upload of its own, never finished.
        let table = format!("t{i}");
        let request = post(0x1000 + i, &["devices", "acme-d1", "telemetry", &table], &acme, Some((0, true)), &body[..16]);
        // 2.31 Continue while within the device's 8 uploads; 5.03 after.
        let expected = if i < 8 { 0x5f } else { 0xa3 };
        assert_eq!(exchange(&socket, &request), expected, "block 0 of acme upload {i}");
    }

    // globex's device still uploads, block by block.
    let blocks: Vec<&[u8]> = body.chunks(16).collect();
    for (num, block) in blocks.iter().enumerate() {
        let last = num + 1 == blocks.len();
        let request = post(0x2000 + num as u16, &["devices", "globex-d1", "telemetry"], &globex, Some((num as u8, !last)), block);
        let expected = if last { 0x44 } else { 0x5f };
        assert_eq!(exchange(&socket, &request), expected, "globex block {num}");
    }
    assert_eq!(
        server.query("SELECT device, temperature, pad FROM telemetry").await,
        vec![vec![json!("globex-d1"), json!(21.5), json!("xxxxx")]]
    );
}
