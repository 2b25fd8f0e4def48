//! Response frames, and how record bytes reach the socket without being
//! copied through the broker.
//!
//! Every response is encoded by the kafka-protocol crate. A Fetch response
//! is too, but its records stay in their segment files: each records field
//! is given a stand-in, a range of a static region that is never read,
//! whose length is that of the records, so the crate computes exactly the
//! sizes and length prefixes of the bytes that will be sent. The buffer
//! the response is encoded into recognises a stand-in by its address and
//! notes "this file range goes here" instead of copying it. The frame is
//! then encoded bytes with file ranges between them, and the ranges go
//! from the page cache to the socket with `sendfile`: no buffer is
//! allocated, zeroed or filled for them.
//!
//! Records too long for a stand-in are read into memory and encoded like
//! any other bytes, the copying path the zero-copy one falls back to.

use std::{io, ops::Range};

use bytes::{BufMut, Bytes, BytesMut, buf::UninitSlice};
use kafka_protocol::protocol::buf::ByteBufMut;
use keel_log::ReadSlice;
use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpStream, tcp::OwnedWriteHalf},
};

/// Longest records field a stand-in covers (more than a Fetch response
/// carries by default, 55 MiB). It lives in zero-initialised memory that is
/// never touched, so it costs address space and no memory.
const STAND_IN_LEN: usize = 64 * 1024 * 1024;
static STAND_IN: [u8; STAND_IN_LEN] = [0; STAND_IN_LEN];

/// The records of a response that stay in segment files until sent.
#[derive(Debug, Default)]
pub struct FileRecords {
    slices: Vec<ReadSlice>,
}

impl FileRecords {
    /// The value of a records field that holds `slice`: a stand-in the
    /// encoding replaces with the file range, or the bytes read when no
    /// stand-in is long enough.
    pub fn field(&mut self, slice: ReadSlice) -> io::Result<Bytes> {
        if slice.is_empty() {
            return Ok(Bytes::new());
        }
        // The i-th stand-in starts i bytes into the region: its address
        // says which slice it stands for.
        let start = self.slices.len();
        let Some(stand_in) = STAND_IN.get(start..start + slice.len()) else {
            return slice.read();
        };
        self.slices.push(slice);
        Ok(Bytes::from_static(stand_in))
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

/// Which slice a stand-in stands for, if `bytes` is one.
fn stand_in_index(bytes: &[u8]) -> Option<usize> {
    let start = STAND_IN.as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    (!bytes.is_empty() && (start..start + STAND_IN_LEN).contains(&at)).then(|| at - start)
}

#[derive(Debug)]
enum Part {
    Encoded(Bytes),
    Records(ReadSlice),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Encoded(bytes) => bytes.len(),
            Part::Records(slice) => slice.len(),
        }
    }
}

/// One response, length prefix included, ready to send.
#[derive(Debug)]
pub struct ResponseFrame {
    parts: Vec<Part>,
}

impl From<BytesMut> for ResponseFrame {
    fn from(encoded: BytesMut) -> Self {
        Self {
            parts: vec![Part::Encoded(encoded.freeze())],
        }
    }
}

/// The records fields encoded and the file ranges kept for them do not
/// match: a stand-in was met twice, with another length, or never.
#[derive(Debug, thiserror::Error)]
#[error("the records fields encoded do not match the file ranges kept for them")]
pub struct UnmatchedStandIn;

impl ResponseFrame {
    /// Encodes a response through `encode`, which writes the whole frame
    /// into the buffer it is given; every stand-in of `records` met on the
    /// way becomes its file range.
    pub fn encode_with(
        records: FileRecords,
        capacity: usize,
        encode: impl FnOnce(&mut SplicingBuf) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let mut buf = SplicingBuf {
            encoded: BytesMut::with_capacity(capacity),
            parts: Vec::with_capacity(2 * records.slices.len() + 1),
            records: records.slices.into_iter().map(Some).collect(),
            before_encoded: 0,
            failed: false,
        };
        encode(&mut buf)?;
        if buf.failed || buf.records.iter().any(Option::is_some) {
            return Err(UnmatchedStandIn.into());
        }
        buf.end_encoded();
        Ok(Self { parts: buf.parts })
    }

    fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    /// Writes the frame to the connection's socket. Encoded bytes and file
    /// ranges go out as the socket takes them; a file range may wait on the
    /// disk for bytes not in the page cache, so that part runs where
    /// blocking is allowed (see `blocking`).
    pub async fn send(&self, writer: &mut OwnedWriteHalf) -> io::Result<()> {
        if let [Part::Encoded(bytes)] = self.parts.as_slice() {
            return writer.write_all(bytes).await;
        }
        let socket: &TcpStream = writer.as_ref();
        let mut progress = Progress::default();
        loop {
            socket.writable().await?;
            if crate::blocking::run(|| self.send_some(socket, &mut progress))? {
                return Ok(());
            }
        }
    }

    /// Sends what the socket takes now; `Ok(true)` once everything is sent.
    fn send_some(&self, socket: &TcpStream, progress: &mut Progress) -> io::Result<bool> {
        while let Some(part) = self.parts.get(progress.part) {
            let written = match part {
                Part::Encoded(bytes) => socket.try_write(&bytes[progress.sent..]),
                Part::Records(slice) => {
                    socket.try_io(Interest::WRITABLE, || slice.send_to(socket, progress.sent))
                }
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    progress.sent += written;
                    if progress.sent == part.len() {
                        progress.part += 1;
                        progress.sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The frame's bytes, file records read into memory: what a caller
    /// in the same process (a test) gets instead of a socket's bytes.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        if let [Part::Encoded(bytes)] = self.parts.as_slice() {
            return Ok(bytes.clone());
        }
        let mut bytes = BytesMut::with_capacity(self.len());
        for part in &self.parts {
            match part {
                Part::Encoded(encoded) => bytes.extend_from_slice(encoded),
                Part::Records(slice) => bytes.extend_from_slice(&slice.read()?),
            }
        }
        Ok(bytes.freeze())
    }
}

#[derive(Debug, Default)]
struct Progress {
    part: usize,
    sent: usize,
}

/// The buffer a response with file records is encoded into: bytes are
/// appended as in a `BytesMut`, except a stand-in, which ends the encoded
/// part and adds its file range after it.
#[derive(Debug)]
pub struct SplicingBuf {
    encoded: BytesMut,
    parts: Vec<Part>,
    /// The slices not yet placed, by stand-in index.
    records: Vec<Option<ReadSlice>>,
    /// Frame bytes in `parts`, so `offset` counts the whole frame.
    before_encoded: usize,
    /// A stand-in did not match its slice.
    failed: bool,
}

impl SplicingBuf {
    fn end_encoded(&mut self) {
        if !self.encoded.is_empty() {
            let encoded = self.encoded.split().freeze();
            self.before_encoded += encoded.len();
            self.parts.push(Part::Encoded(encoded));
        }
    }

    fn place(&mut self, index: usize, len: usize) {
        match self.records.get_mut(index).and_then(Option::take) {
            Some(slice) if slice.len() == len => {
                self.end_encoded();
                self.before_encoded += len;
                self.parts.push(Part::Records(slice));
            }
            _ => self.failed = true,
        }
    }
}

// SAFETY: every method forwards to `encoded`, a `BytesMut`, which keeps
// the trait's contract; `put_slice` forwards too, or places a file range
// and writes nothing to `encoded`.
#[allow(unsafe_code)]
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.encoded.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise about `cnt` is about the chunk
        // `encoded` handed out.
        unsafe { self.encoded.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.encoded.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match stand_in_index(src) {
            Some(index) => self.place(index, src.len()),
            None => self.encoded.put_slice(src),
        }
    }
}

/// The crate's gaps (used by its record batch encoder, never by a message)
/// work within the bytes encoded since the last file range.
impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.before_encoded + self.encoded.len()
    }

    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.before_encoded) {
            Some(len) => self.encoded.resize(len, 0),
            None => self.failed = true,
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let local =
            r.start.checked_sub(self.before_encoded)..r.end.checked_sub(self.before_encoded);
        match local {
            Range {
                start: Some(start),
                end: Some(end),
            } if start <= end && end <= self.encoded.len() => &mut self.encoded[start..end],
            _ => {
                self.failed = true;
                &mut []
            }
        }
    }
}

#[cfg(test)]
mod tests;
