//! How CoAP messages leave the server: as plain datagrams (`coap://`), or encrypted on the
//! peer's DTLS session (`coaps://`). The message layer above does not know which.

use crate::dtls::Dtls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

pub(crate) enum Transport {
    Plain(Arc<UdpSocket>),
    Dtls(Arc<Dtls>),
}

impl Transport {
    pub async fn send(&self, peer: SocketAddr, message: &[u8]) {
        match self {
            Transport::Plain(socket) => {
                if let Err(e) = socket.send_to(message, peer).await {
                    tracing::debug!(%peer, error = %e, "coap send failed");
                }
            }
            Transport::Dtls(dtls) => dtls.send(peer, message).await,
        }
    }

    /// The device a DTLS session authenticated; `None` in the clear.
    pub fn device_of(&self, peer: SocketAddr) -> Option<String> {
        match self {
            Transport::Plain(_) => None,
            Transport::Dtls(dtls) => dtls.device_of(peer),
        }
    }
}
