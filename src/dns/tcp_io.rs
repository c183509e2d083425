//! One DNS TCP connection's framing (RFC 1035 §4.2.2: a two-byte length before each message):
//! reading a request, and a response handler that writes each message to the socket as it is
//! sent. hickory-server's handle queues encoded messages until the request is answered whole,
//! so a transfer was all in memory at once; here a message is written (or the client's window
//! waited for) before the next is made.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Record;
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tokio::time::timeout;

use super::reply::encode;

/// The next request's bytes; None when the client closed the connection between messages.
/// A request that does not arrive whole within `idle` is an error of kind `TimedOut`.
pub(super) async fn read_message(
    r: &mut OwnedReadHalf,
    idle: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let read = async {
        let mut len = [0u8; 2];
        match r.read_exact(&mut len).await {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        };
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        r.read_exact(&mut buf).await?;
        Ok(Some(buf))
    };
    timeout(idle, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no complete message"))?
}

/// Writes responses to one connection, each as soon as it is sent. A client that takes
/// nothing for `stall` is given up on (the send fails, and a transfer stops).
#[derive(Clone)]
pub(super) struct Writer {
    half: Arc<Mutex<OwnedWriteHalf>>,
    stall: Duration,
}

impl Writer {
    pub fn new(half: OwnedWriteHalf, stall: Duration) -> Writer {
        Writer {
            half: Arc::new(Mutex::new(half)),
            stall,
        }
    }

    /// Writes one message with its length.
    pub async fn write(&self, message: &[u8]) -> io::Result<()> {
        let len = u16::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 64 KiB"))?;
        let mut framed = Vec::with_capacity(2 + message.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(message);
        let mut half = self.half.lock().await;
        timeout(self.stall, half.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))?
    }
}

/// hickory-server's response handler over [`Writer`], for its request handler.
#[derive(Clone)]
pub(super) struct Responder {
    pub writer: Writer,
    pub peer: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for Responder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, info) = encode(response, u16::MAX);
        self.writer
            .write(&bytes)
            .await
            .map_err(|e| NetError::from(format!("{}: {e}", self.peer)))?;
        Ok(info)
    }
}
