//! One client connection: length-prefixed request frames in, responses out,
//! strictly one request at a time, so responses leave in request order and
//! a pipelining producer's batches are appended in the order it sent them.
//!
//! A frame is only buffered as its bytes arrive: an announced length above
//! the configured maximum closes the connection before anything is
//! allocated for it, and a length above [`FRAME_CHUNK`] grows the buffer in
//! steps rather than up front, so a client announcing a huge frame and
//! sending nothing costs at most one chunk.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::{api, broker::Broker};

/// The most a frame gets before its bytes arrive. Produce requests of up
/// to this size (librdkafka's default batch is 1 MB) are read into one
/// allocation without reallocating as they grow.
const FRAME_CHUNK: usize = 1024 * 1024;
/// Read buffer of the connection's socket.
const READ_BUFFER: usize = 64 * 1024;
/// How long a new connection's requests wait for the broker to be known to
/// the cluster.
const JOIN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(prefix);
    let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    let mut frame = BytesMut::with_capacity(len.min(FRAME_CHUNK));
    while frame.len() < len {
        if frame.capacity() == frame.len() {
            frame.reserve((len - frame.len()).min(frame.len().max(FRAME_CHUNK)));
        }
        let want = len - frame.len();
        let read = (&mut *reader)
            .take(want as u64)
            .read_buf(&mut frame)
            .await?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(frame.freeze()))
}

/// Serves requests until the client disconnects, sends something that
/// cannot be answered, or the broker shuts down between requests.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot disable Nagle's algorithm");
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut shutdown = broker.shutdown_signal();
    // A broker that is not yet in the metadata answers Metadata with no
    // brokers and no controller, which clients take as the cluster's
    // answer and stop looking, and one that was never granted a lease
    // refuses every write. Like a Kafka broker catching up and being
    // unfenced before it processes requests, hold them until the broker is
    // known and was granted its lease, but not forever: without a quorum,
    // the last known metadata beats none.
    let ready = async {
        broker.known_to_cluster().await;
        broker.lease.granted().await;
    };
    tokio::select! {
        _ = tokio::time::timeout(JOIN_WAIT, ready) => {}
        _ = shutdown.changed() => return,
    }
    let max_frame_bytes = broker.config.max_frame_bytes as usize;
    // Kafka describes a member's host as "/address".
    let connection = api::Connection::new(format!("/{}", peer.ip()));
    loop {
        if broker.is_shutting_down() {
            break;
        }
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max_frame_bytes) => frame,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        match api::handle(&broker, frame, &connection).await {
            Ok(Some(response)) => {
                if let Err(e) = writer.write_all(&response).await {
                    tracing::debug!(%peer, error = %e, "cannot send response");
                    break;
                }
                if connection.hangs_up() {
                    tracing::debug!(%peer, "closing connection: the client should ask another broker");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_ones_refused() {
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        assert_eq!(
            read_frame(&mut input, 10).await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(read_frame(&mut input, 10).await.unwrap().unwrap().len(), 0);
        assert!(read_frame(&mut input, 10).await.unwrap().is_none());

        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge, 100 << 20).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 10).await,
            Err(FrameError::Negative(-1))
        ));
        let mut truncated: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_frame(&mut truncated, 10).await,
            Err(FrameError::Io(_))
        ));
    }
}
