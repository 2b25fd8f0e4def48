//! A follower's connection to a leader's Kafka listener: one request at a
//! time, framed and encoded with the `kafka-protocol` codecs, the way any
//! Kafka client talks to a broker.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, StrBytes},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The Fetch version followers speak: topic ids, LastFetchedEpoch and
/// DivergingEpoch (KIP-320), ReplicaState with the broker incarnation.
pub const FETCH_VERSION: i16 = 16;
/// The largest response a follower accepts.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("talking to the leader: {0}")]
    Io(#[from] std::io::Error),
    #[error("the leader did not answer within {0:?}")]
    Timeout(Duration),
    #[error("encoding the request: {0}")]
    Encode(String),
    #[error("the leader's response does not decode: {0}")]
    Decode(String),
    #[error("the leader answered correlation id {got}, expected {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("the leader sent a {0}-byte response frame")]
    FrameTooLarge(usize),
}

impl ClientError {
    /// Whether the leader's end failed as a dying process's does: the
    /// connection ended or was reset, or its listener refused a new one.
    /// A leader that is slow, or cut off by the network, times out
    /// instead.
    pub fn looks_like_a_dead_process(&self) -> bool {
        use std::io::ErrorKind::{
            BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, UnexpectedEof,
        };
        match self {
            Self::Connect { source, .. } => source.kind() == ConnectionRefused,
            Self::Io(error) => matches!(
                error.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            ),
            _ => false,
        }
    }
}

#[derive(Debug)]
pub struct LeaderConnection {
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// Where responses are read into: the allocation is reused once the
    /// records of the response before were appended and dropped.
    buffer: BytesMut,
}

impl LeaderConnection {
    pub async fn connect(
        address: &str,
        client_id: String,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect = tokio::time::timeout(timeout, TcpStream::connect(address)).await;
        let stream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    address: address.to_string(),
                    source,
                });
            }
            Err(_) => return Err(ClientError::Timeout(timeout)),
        };
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            client_id: StrBytes::from_string(client_id),
            next_correlation_id: 0,
            buffer: BytesMut::new(),
        })
    }

    /// Sends one Fetch and waits up to `timeout` for its response.
    pub async fn fetch(
        &mut self,
        request: &FetchRequest,
        timeout: Duration,
    ) -> Result<FetchResponse, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = self.encode(ApiKey::Fetch, request, correlation_id)?;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_u32().await? as usize;
            if size > MAX_RESPONSE_BYTES {
                return Err(ClientError::FrameTooLarge(size));
            }
            self.buffer.clear();
            self.buffer.reserve(size);
            while self.buffer.len() < size {
                let missing = (size - self.buffer.len()) as u64;
                let mut body = (&mut self.stream).take(missing);
                if body.read_buf(&mut self.buffer).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
            Ok(self.buffer.split().freeze())
        };
        let mut body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        let header_version = ApiKey::Fetch.response_header_version(FETCH_VERSION);
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Correlation {
                expected: correlation_id,
                got: header.correlation_id,
            });
        }
        let response = FetchResponse::decode(&mut body, FETCH_VERSION)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if body.has_remaining() {
            return Err(ClientError::Decode(format!(
                "{} bytes left over",
                body.remaining()
            )));
        }
        Ok(response)
    }

    fn encode<R: Encodable>(
        &self,
        api_key: ApiKey,
        request: &R,
        correlation_id: i32,
    ) -> Result<BytesMut, ClientError> {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = api_key.request_header_version(FETCH_VERSION);
        let encode_error = |e: anyhow::Error| ClientError::Encode(e.to_string());
        let size = header.compute_size(header_version).map_err(encode_error)?
            + request.compute_size(FETCH_VERSION).map_err(encode_error)?;
        let mut frame = BytesMut::with_capacity(4 + size);
        frame.put_u32(size as u32);
        header
            .encode(&mut frame, header_version)
            .and_then(|()| request.encode(&mut frame, FETCH_VERSION))
            .map_err(encode_error)?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_dead_process_is_told_from_an_ended_connection_or_a_refused_one_not_from_silence() {
        let connect = |kind| ClientError::Connect {
            address: "127.0.0.1:9092".into(),
            source: Error::from(kind),
        };
        let io = |kind| ClientError::Io(Error::from(kind));
        assert!(connect(ErrorKind::ConnectionRefused).looks_like_a_dead_process());
        assert!(io(ErrorKind::UnexpectedEof).looks_like_a_dead_process());
        assert!(io(ErrorKind::ConnectionReset).looks_like_a_dead_process());
        assert!(io(ErrorKind::BrokenPipe).looks_like_a_dead_process());
        assert!(!connect(ErrorKind::TimedOut).looks_like_a_dead_process());
        assert!(!io(ErrorKind::TimedOut).looks_like_a_dead_process());
        assert!(!ClientError::Timeout(Duration::from_secs(10)).looks_like_a_dead_process());
        assert!(!ClientError::Decode("bad".into()).looks_like_a_dead_process());
    }
}
