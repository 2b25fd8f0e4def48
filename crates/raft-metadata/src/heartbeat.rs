//! Broker heartbeats to the active controller, over the cluster transport.
//!
//! A broker sends each heartbeat on a connection of its own to the
//! controller's cluster listener and reads the reply on that connection.
//! The listener hands the heartbeat to whoever serves heartbeats on that
//! node (the broker's controller, through the channel given in
//! [`crate::NodeConfig::heartbeats`]) without passing through the Raft
//! thread, so an fsync there delays no heartbeat.
//!
//! A `Renewed` reply means more than "received": the controller confirmed
//! through the quorum, after the heartbeat arrived, that it still leads, so
//! no other controller can have judged the broker's session meanwhile. The
//! broker's lease therefore runs from the moment it sent the heartbeat.

use std::{io, time::Duration};

use bytes::{Buf, BytesMut};
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

use crate::transport::{Body, Envelope, frame};

/// Largest reply accepted.
const MAX_REPLY: usize = 64 * 1024;

/// One broker heartbeat.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerHeartbeat {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    /// The broker's run; a heartbeat of an older run renews nothing.
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
    /// The produce heartbeat: partitions this broker leads where produce
    /// requests have waited without progress.
    #[prost(message, repeated, tag = "3")]
    pub stalled: Vec<StalledPartition>,
    /// How many leadership changes the broker's partitions have taken:
    /// the next history sequence of the image it last applied to them.
    /// The controller renews no lease while this is behind the changes it
    /// has committed, so a broker that has not learnt it was deposed stops
    /// accepting writes within a lease of the change (see `Behind`).
    #[prost(uint64, tag = "4")]
    pub leadership_changes: u64,
    /// The broker is stopping (Kafka's controlled shutdown): it is no
    /// candidate for leadership and leaves the ISRs, while it still
    /// answers clients.
    #[prost(bool, tag = "5")]
    pub shutting_down: bool,
    /// Hosted replicas whose log end offset, high watermark or leader epoch
    /// changed since the controller last acknowledged a heartbeat of this
    /// broker (all of them for a controller new to it): the controller
    /// prefers the most caught-up candidate in an election, and the
    /// leadership history records what the old and new leaders held.
    #[prost(message, repeated, tag = "6")]
    pub progress: Vec<PartitionProgress>,
}

/// A replica's log as its broker last saw it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionProgress {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    /// The leader epoch the replica knows.
    #[prost(int32, tag = "3")]
    pub leader_epoch: i32,
    #[prost(int64, tag = "4")]
    pub log_end_offset: i64,
    #[prost(int64, tag = "5")]
    pub high_watermark: i64,
}

/// A led partition whose produce requests wait without progress.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StalledPartition {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    /// The leader epoch the broker leads it in.
    #[prost(int32, tag = "3")]
    pub leader_epoch: i32,
    /// How long the requests have waited without an append completing.
    #[prost(int64, tag = "4")]
    pub waited_ms: i64,
}

/// What the controller made of a heartbeat. The default (what an unknown
/// value decodes to) renews nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum HeartbeatStatus {
    /// The receiver is not the active controller (or could not confirm it
    /// still is).
    NotController = 0,
    /// The session is renewed and the controller still leads the quorum.
    Renewed = 1,
    /// The broker is not registered at this incarnation yet, or a newer
    /// one is.
    UnknownIncarnation = 2,
    /// The broker is fenced; the controller unfences it, and renews its
    /// session from the next heartbeat on.
    Fenced = 3,
    /// The session is renewed but not the lease: the broker has not applied
    /// every leadership change the controller has committed, so it may
    /// still take itself for the leader of a partition that has moved on.
    Behind = 4,
}

/// The answer to a heartbeat; `status()` reads it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeartbeatReply {
    #[prost(enumeration = "HeartbeatStatus", tag = "1")]
    pub status: i32,
    /// For `Renewed`: how long before the heartbeat reached the controller
    /// the quorum last confirmed it, in microseconds. The broker's lease
    /// runs from that long before it sent the heartbeat.
    #[prost(uint64, tag = "2")]
    pub confirmed_earlier_micros: u64,
}

impl HeartbeatReply {
    pub fn new(status: HeartbeatStatus) -> Self {
        Self {
            status: status as i32,
            confirmed_earlier_micros: 0,
        }
    }

    /// `Renewed`, on a confirmation of the controller `confirmed_earlier`
    /// than the heartbeat arrived.
    pub fn renewed(confirmed_earlier: Duration) -> Self {
        Self {
            status: HeartbeatStatus::Renewed as i32,
            confirmed_earlier_micros: u64::try_from(confirmed_earlier.as_micros())
                .unwrap_or(u64::MAX),
        }
    }

    /// How much earlier than the heartbeat was sent a renewed lease starts.
    pub fn confirmed_earlier(&self) -> Duration {
        Duration::from_micros(self.confirmed_earlier_micros)
    }
}

/// What the cluster listener hands the heartbeat service.
#[derive(Debug)]
pub enum HeartbeatCall {
    /// A heartbeat waiting for the controller's answer.
    Beat {
        heartbeat: BrokerHeartbeat,
        reply: oneshot::Sender<HeartbeatReply>,
    },
    /// The connection a broker's heartbeats came on was closed, by the
    /// broker or its host: it may have died (a process that dies has its
    /// connections closed at once), or only be heartbeating elsewhere.
    Closed { node_id: i32, incarnation: u64 },
}

/// A broker's connection to the controller it heartbeats to; reconnects
/// when the controller moves or the connection fails.
#[derive(Debug, Default)]
pub struct ControllerConnection {
    stream: Option<(String, TcpStream)>,
    buffer: BytesMut,
}

impl ControllerConnection {
    /// Sends `heartbeat` to the node listening at `address` and waits at
    /// most `timeout` for its reply. Any error drops the connection.
    pub async fn heartbeat(
        &mut self,
        address: &str,
        heartbeat: BrokerHeartbeat,
        timeout: Duration,
    ) -> io::Result<HeartbeatReply> {
        let result = tokio::time::timeout(timeout, self.exchange(address, heartbeat))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        address: &str,
        heartbeat: BrokerHeartbeat,
    ) -> io::Result<HeartbeatReply> {
        if self.stream.as_ref().is_none_or(|(to, _)| to != address) {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some((address.to_string(), stream));
            self.buffer.clear();
        }
        let Some((_, stream)) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let envelope = Envelope {
            from: crate::ids::raft_id(heartbeat.node_id),
            body: Some(Body::Heartbeat(heartbeat)),
        };
        stream.write_all(&frame(&envelope)).await?;
        let reply = read_envelope(stream, &mut self.buffer).await?;
        match reply.body {
            Some(Body::HeartbeatReply(reply)) => Ok(reply),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the controller answered a heartbeat with something else",
            )),
        }
    }
}

async fn read_envelope(stream: &mut TcpStream, buffer: &mut BytesMut) -> io::Result<Envelope> {
    while buffer.len() < 4 {
        if stream.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let len = (&buffer[..4]).get_u32() as usize;
    if len > MAX_REPLY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a heartbeat reply of {len} bytes"),
        ));
    }
    while buffer.len() < 4 + len {
        if stream.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    buffer.advance(4);
    Envelope::decode(buffer.split_to(len).freeze())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
