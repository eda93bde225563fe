//! The byte stream under a connection. TCP gets a special read path: wait for readability
//! first, then read into a buffer allocated only now, so an idle connection holds no read
//! buffer at all (the 50k-idle-connections budget is ~4 KB each). Other streams (WebSocket,
//! TLS) go through `AsyncRead` with a small buffer.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Read size bounds: a connection starts small (a CONNECT, a ping) and the chunk doubles while
/// reads fill it, so a busy publisher gets big reads and an idle one never held much. (With a
/// fixed 4 KB first read, allocator fragmentation alone cost ~3 KB per idle connection.)
const MIN_CHUNK: usize = 1024;
const MAX_CHUNK: usize = 64 * 1024;

pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

pub(crate) struct Transport {
    pub reader: Reader,
    pub writer: Writer,
}

pub(crate) struct Reader {
    half: ReadHalf,
    chunk: usize,
}

enum ReadHalf {
    Tcp(OwnedReadHalf),
    Stream(tokio::io::ReadHalf<Box<dyn ByteStream>>),
}

pub(crate) enum Writer {
    Tcp(OwnedWriteHalf),
    Stream(tokio::io::WriteHalf<Box<dyn ByteStream>>),
}

impl Transport {
    pub fn tcp(stream: TcpStream) -> Transport {
        let (r, w) = stream.into_split();
        Transport { reader: Reader { half: ReadHalf::Tcp(r), chunk: MIN_CHUNK }, writer: Writer::Tcp(w) }
    }

    pub fn stream<S: ByteStream + 'static>(stream: S) -> Transport {
        let boxed: Box<dyn ByteStream> = Box::new(stream);
        let (r, w) = tokio::io::split(boxed);
        Transport { reader: Reader { half: ReadHalf::Stream(r), chunk: MIN_CHUNK }, writer: Writer::Stream(w) }
    }
}

/// Makes at least half a chunk of room; returns the room available.
fn make_room(buf: &mut BytesMut, chunk: usize) -> usize {
    if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    buf.capacity() - buf.len()
}

impl Reader {
    /// Reads some bytes into `buf`; `Ok(0)` at end of stream. Cancel-safe: if the future is
    /// dropped before completing, no bytes were consumed.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let (n, room) = match &mut self.half {
            ReadHalf::Tcp(r) => loop {
                r.readable().await?;
                let room = make_room(buf, self.chunk);
                match r.try_read_buf(buf) {
                    Ok(n) => break (n, room),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            },
            ReadHalf::Stream(r) => {
                let room = make_room(buf, self.chunk);
                (r.read_buf(buf).await?, room)
            }
        };
        if n == room {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        } else if n < self.chunk / 8 {
            self.chunk = (self.chunk / 2).max(MIN_CHUNK);
        }
        Ok(n)
    }
}

impl Writer {
    /// Writes everything or fails; a peer that accepts nothing for `timeout` is given up on.
    pub async fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let write = async {
            match self {
                Writer::Tcp(w) => w.write_all(bytes).await,
                Writer::Stream(w) => {
                    w.write_all(bytes).await?;
                    w.flush().await
                }
            }
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write to client timed out")),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            match self {
                Writer::Tcp(w) => w.shutdown().await,
                Writer::Stream(w) => w.shutdown().await,
            }
        })
        .await;
    }
}
