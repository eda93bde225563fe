//! `GET /mqtt`: MQTT over WebSocket (subprotocol `mqtt`), for browsers and clients behind proxies
//! that only pass HTTP. Each binary WebSocket message carries MQTT bytes; the connection is handed
//! to the broker as a byte stream, so the broker serves it exactly like a TCP one.

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{Api, Auth, Operation};
use async_trait::async_trait;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use corral_model::{ErrorKind, WireError};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const TAG: &str = "mqtt";

pub(crate) fn routes(api: Api) -> Api {
    api.get(
        "/mqtt",
        upgrade,
        Operation::new(TAG, "MQTT 3.1.1 and 5.0 over WebSocket")
            .describe(
                "A WebSocket upgrade (subprotocol `mqtt`); each binary message then carries MQTT bytes, served \
                 by the broker exactly like a TCP connection. Clients authenticate in MQTT's CONNECT, as on \
                 TCP, not on this request. A request that is not a WebSocket upgrade is a 400 (426 when the \
                 connection cannot be upgraded); with MQTT off (`--mqtt off`) the path is a 404.",
            )
            .auth(Auth::Anyone)
            .header("Sec-WebSocket-Protocol", "`mqtt`, which the answer then confirms")
            .returns_nothing(101, "Switching to the WebSocket protocol")
            .errors(&[404, 426]),
    )
}

/// Where WebSocket MQTT connections go: the binary hands them to the broker.
#[async_trait]
pub trait MqttOverWebSocket: Send + Sync {
    /// Serves one connection until it closes; `stream` carries the raw MQTT bytes.
    async fn serve(&self, stream: DuplexStream, peer: SocketAddr);
}

/// Bytes in flight between the WebSocket and the broker, each way, per connection.
const PIPE_BYTES: usize = 16 * 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(broker) = state.mqtt_ws.clone() else {
        return ApiError(WireError::new(ErrorKind::NotFound, "MQTT is off on this server (--mqtt off)")).into_response();
    };
    // Not a WebSocket upgrade: the API's JSON error, with axum's status (400, or 426 when the
    // connection cannot be upgraded).
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = serde_json::json!({ "error": format!("GET /mqtt is MQTT over WebSocket: {}", rejection.body_text()) });
            return (rejection.status(), axum::Json(body)).into_response();
        }
    };
    // MQTT over WebSocket requires the `mqtt` subprotocol (MQTT 5 spec 6.0); axum answers with it
    // when the client offers it.
    ws.protocols(["mqtt"]).on_upgrade(move |socket| async move {
        let (ours, broker_side) = tokio::io::duplex(PIPE_BYTES);
        tokio::join!(broker.serve(broker_side, peer), pump(socket, ours));
    })
}

/// Copies binary WebSocket messages into the pipe and the pipe's bytes out as binary messages,
/// until either side closes.
async fn pump(socket: WebSocket, pipe: DuplexStream) {
    let (mut ws_out, mut ws_in) = socket.split();
    let (mut pipe_in, mut pipe_out) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = ws_in.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue, // pings are answered by axum; text frames are not MQTT
            };
            if pipe_out.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = pipe_out.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; PIPE_BYTES];
        loop {
            match pipe_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_out.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_out.close().await;
    };
    tokio::join!(inbound, outbound);
}
