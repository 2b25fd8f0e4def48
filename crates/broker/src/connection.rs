//! One client connection: length-prefixed request frames in, responses out
//! in request order, and a pipelining producer's batches appended in the
//! order it sent them. Requests are handled one at a time, except that a
//! produce request's wait for its followers overlaps the produce requests
//! after it (see [`serve`]).
//!
//! Frames are read into one buffer per connection that is reused from one
//! request to the next, so a produce request's bytes land in memory that
//! is already mapped: a request is decoded from, and its batches appended
//! from, the bytes as received. A frame is only buffered as its bytes
//! arrive: an announced length above the configured maximum closes the
//! connection before anything is allocated for it, and a large frame grows
//! the buffer in steps rather than up front, so a client announcing a huge
//! frame and sending nothing costs at most one chunk. A buffer grown past
//! [`RETAINED_CAPACITY`] for a large frame is given back once that frame
//! has been handled.

use std::{
    collections::VecDeque, future::Future, io, net::SocketAddr, pin::pin, sync::Arc, time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, tcp::OwnedWriteHalf},
};

use crate::{
    api::{self, AwaitingReplication, Begun, RequestError},
    broker::Broker,
    response::ResponseFrame,
};

/// The most a frame's buffer grows by before its bytes arrive.
const FRAME_CHUNK: usize = 1024 * 1024;
/// The least a read asks for, so small requests sent together are read
/// together.
const READ_CHUNK: usize = 64 * 1024;
/// The buffer a connection keeps between requests: room for a produce
/// request of librdkafka's default size (1 MB) and what follows it.
const RETAINED_CAPACITY: usize = FRAME_CHUNK + READ_CHUNK;
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

/// Length-prefixed frames from a byte stream, read into a reused buffer.
struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(reader: R, max_frame_bytes: usize) -> Self {
        Self {
            reader,
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            let announced = self.announced_len()?;
            if let Some(len) = announced {
                if self.buf.len() >= 4 + len {
                    return Ok(Some(self.split_frame(len)));
                }
            }
            let missing = announced.map_or(4, |len| 4 + len) - self.buf.len();
            self.make_room(missing);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// The length of the frame at the front of the buffer, once its prefix
    /// is in.
    fn announced_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = i32::from_be_bytes(*prefix);
        let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(len))
    }

    /// The next frame if it is already in the buffer whole and is a produce
    /// request; nothing is read from the stream.
    fn buffered_produce(&mut self) -> Option<Bytes> {
        let len = self.announced_len().ok().flatten()?;
        let frame = self.buf.get(4..4 + len)?;
        if !api::is_produce_frame(frame) {
            return None;
        }
        Some(self.split_frame(len))
    }

    /// Takes the `len`-byte frame at the front of the buffer, which is
    /// there whole, and its length prefix.
    fn split_frame(&mut self, len: usize) -> Bytes {
        self.buf.advance(4);
        self.buf.split_to(len).freeze()
    }

    /// Makes room to read `missing` more bytes of the frame being read, or
    /// as much of them as the buffer may grow by before they arrive. Once
    /// the frames read before were dropped, this reuses their memory.
    fn make_room(&mut self, missing: usize) {
        let step = missing.min(FRAME_CHUNK.max(self.buf.len())).max(READ_CHUNK);
        self.buf.reserve(step);
        if self.buf.capacity() > RETAINED_CAPACITY && self.buf.len() + step <= RETAINED_CAPACITY {
            let mut retained = BytesMut::with_capacity(RETAINED_CAPACITY);
            retained.extend_from_slice(&self.buf);
            self.buf = retained;
        }
    }
}

/// The most produce requests of one connection appended and waiting for
/// their followers at once; past it the connection reads nothing more until
/// the oldest is answered, and the client feels TCP's back pressure.
///
/// A bound for memory, not for pace: a waiting answer holds no request
/// bytes, only the answer and what waits for the high watermark. It must
/// not bind in normal operation. librdkafka with linger.ms=0 sends a
/// produce request per partition as soon as it has records, about 4,000 a
/// second on one connection for eight partitions at 130,000 records a
/// second, so a bound of 16 capped such a connection at 16 requests per
/// replication round trip: requests queued in the client and its latency
/// grew tenfold. 1,024 covers round trips of a quarter of a second at that
/// rate.
const MAX_AWAITING_REPLICATION: usize = 1024;

/// A connection's way out: responses leave in the order their requests
/// came, the produce responses that wait for followers in a queue, oldest
/// first.
struct Outbox<'a> {
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    waiting: VecDeque<AwaitingReplication<'a>>,
}

impl<'a> Outbox<'a> {
    fn has_room(&self) -> bool {
        self.waiting.len() < MAX_AWAITING_REPLICATION
    }

    /// Queues a response behind those waiting, or sends it when none does.
    /// `false` when the connection is to close.
    async fn answer(&mut self, begun: Begun<'a>) -> bool {
        match begun {
            Begun::Answered(None) => true,
            Begun::Answered(Some(response)) if self.waiting.is_empty() => {
                self.send(Ok(response)).await
            }
            Begun::Answered(Some(response)) => {
                self.waiting
                    .push_back(Box::pin(std::future::ready(Ok(response))));
                true
            }
            Begun::Appended(awaiting) => {
                self.waiting.push_back(awaiting);
                true
            }
        }
    }

    /// The oldest waiting response, once its writes are acknowledged.
    /// Cancelled, it leaves the queue as it was; it never returns when
    /// nothing waits.
    async fn oldest(&mut self) -> Result<ResponseFrame, RequestError> {
        match self.waiting.front_mut() {
            Some(oldest) => {
                let response = oldest.await;
                self.waiting.pop_front();
                response
            }
            None => std::future::pending().await,
        }
    }

    /// Runs `work`, sending meanwhile the waiting responses that become
    /// ready; `None` when the connection is to close.
    async fn while_sending<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Some(done),
                response = self.oldest() => {
                    if !self.send(response).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends every waiting response as it comes; `false` when the
    /// connection is to close.
    async fn send_waiting(&mut self) -> bool {
        while !self.waiting.is_empty() {
            let response = self.oldest().await;
            if !self.send(response).await {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, response: Result<ResponseFrame, RequestError>) -> bool {
        let peer = self.peer;
        match response {
            Ok(response) => match response.send(&mut self.writer).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot send response");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                false
            }
        }
    }
}

/// Serves requests until the client disconnects, sends something that
/// cannot be answered, or the broker shuts down between requests.
///
/// Requests are handled one at a time, in order, as Kafka does, with one
/// exception that keeps acks=all throughput from being one replication
/// round trip per request: once a produce request's batches are appended,
/// the next produce request is read and appended while the first waits for
/// its followers. Any other request first waits until every response
/// before it is sent, so it sees what the produce requests before it did.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot disable Nagle's algorithm");
    }
    let (reader, writer) = stream.into_split();
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
    let mut frames = FrameReader::new(reader, broker.config.max_frame_bytes as usize);
    // Kafka describes a member's host as "/address".
    let connection = api::Connection::new(format!("/{}", peer.ip()));
    let mut outbox = Outbox {
        writer,
        peer,
        waiting: VecDeque::new(),
    };
    // A request read from the buffer behind produce requests, handled next.
    let mut held: Option<Result<api::Decoded, RequestError>> = None;
    let open = 'serve: loop {
        if broker.is_shutting_down() {
            break true;
        }
        if connection.hangs_up() {
            tracing::debug!(%peer, "closing connection: the client should ask another broker");
            break true;
        }
        let request = match held.take() {
            Some(request) => request,
            None => {
                let frame = tokio::select! {
                    biased;
                    response = outbox.oldest() => {
                        if !outbox.send(response).await {
                            break false;
                        }
                        continue;
                    }
                    frame = frames.next(), if outbox.has_room() => frame,
                    _ = shutdown.changed() => break true,
                };
                match frame {
                    Ok(Some(frame)) => api::decode(frame),
                    Ok(None) => break true,
                    Err(FrameError::Io(e)) => {
                        tracing::debug!(%peer, error = %e, "connection closed");
                        break true;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing connection");
                        break true;
                    }
                }
            }
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break true;
            }
        };
        let first = match request.into_produce() {
            Ok(first) => first,
            Err(request) => {
                if !outbox.send_waiting().await {
                    break false;
                }
                let answered = match api::begin(&broker, request, &connection).await {
                    Ok(begun) => outbox.answer(begun).await,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing connection");
                        break true;
                    }
                };
                if !answered {
                    break false;
                }
                continue;
            }
        };
        // The produce requests already read behind this one are appended
        // with it, in one blocking section.
        let mut calls = vec![first];
        while outbox.waiting.len() + calls.len() < MAX_AWAITING_REPLICATION {
            let Some(frame) = frames.buffered_produce() else {
                break;
            };
            match api::decode(frame).map(api::Decoded::into_produce) {
                Ok(Ok(call)) => calls.push(call),
                Ok(Err(request)) => {
                    held = Some(Ok(request));
                    break;
                }
                Err(e) => {
                    held = Some(Err(e));
                    break;
                }
            }
        }
        // A produce request may wait here (for a leadership just taken):
        // the responses before it leave meanwhile.
        let Some(results) = outbox
            .while_sending(api::begin_produces(&broker, calls, &connection))
            .await
        else {
            break false;
        };
        for result in results {
            let answered = match result {
                Ok(begun) => outbox.answer(begun).await,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection");
                    break 'serve true;
                }
            };
            if !answered {
                break 'serve false;
            }
        }
    };
    // What was appended is answered before the connection closes.
    if open && outbox.send_waiting().await {
        let _ = outbox.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_ones_refused() {
        let input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        let mut frames = FrameReader::new(input, 10);
        assert_eq!(
            frames.next().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(frames.next().await.unwrap().unwrap().len(), 0);
        assert!(frames.next().await.unwrap().is_none());

        let huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            FrameReader::new(huge, 100 << 20).next().await,
            Err(FrameError::TooLarge { .. })
        ));
        let negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            FrameReader::new(negative, 10).next().await,
            Err(FrameError::Negative(-1))
        ));
        let truncated: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(
            FrameReader::new(truncated, 10).next().await,
            Err(FrameError::Io(_))
        ));
    }

    /// Frames of every size, sent together and in pieces, come out whole
    /// and in order, the buffer never grows past the largest frame and a
    /// step, and a large frame's memory is given back.
    #[tokio::test]
    async fn frames_of_every_size_come_whole_and_a_large_buffer_is_given_back() {
        let sizes = [
            0,
            1,
            100,
            READ_CHUNK + 7,
            FRAME_CHUNK + 3,
            3 * FRAME_CHUNK,
            5,
        ];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|b| (b * 31 + i) as u8).collect())
            .collect();
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            stream.extend_from_slice(frame);
        }
        let (mut client, server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            for piece in stream.chunks(10_000) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(server, 4 * FRAME_CHUNK);
        for expected in &frames {
            let frame = reader.next().await.unwrap().unwrap();
            assert_eq!(&frame[..], &expected[..]);
            drop(frame);
            assert!(reader.buf.capacity() <= 4 * FRAME_CHUNK + READ_CHUNK);
        }
        assert!(reader.next().await.unwrap().is_none());
        assert!(reader.buf.capacity() <= RETAINED_CAPACITY);
        writer.await.unwrap();
    }

    /// Only whole produce frames already read are taken from the buffer:
    /// another API's frame, and a produce frame still arriving, stay for
    /// `next`.
    #[tokio::test]
    async fn buffered_produce_frames_are_taken_without_reading() {
        let frame = |api_key: i16, body: &[u8]| {
            let mut frame = ((2 + body.len()) as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&api_key.to_be_bytes());
            frame.extend_from_slice(body);
            frame
        };
        let mut input = frame(0, b"first");
        input.extend(frame(0, b"second"));
        input.extend(frame(3, b"metadata"));
        input.extend(frame(0, b"third"));
        let partial = frame(0, b"fourth");
        input.extend_from_slice(&partial[..partial.len() - 1]);
        let mut frames = FrameReader::new(&input[..], 1024);

        assert!(frames.buffered_produce().is_none(), "nothing is read yet");
        assert_eq!(&frames.next().await.unwrap().unwrap()[2..], b"first");
        assert_eq!(&frames.buffered_produce().unwrap()[2..], b"second");
        assert!(frames.buffered_produce().is_none(), "Metadata comes next");
        assert_eq!(&frames.next().await.unwrap().unwrap()[2..], b"metadata");
        assert_eq!(&frames.buffered_produce().unwrap()[2..], b"third");
        assert!(frames.buffered_produce().is_none(), "the last is not whole");
        assert!(matches!(frames.next().await, Err(FrameError::Io(_))));
    }
}
