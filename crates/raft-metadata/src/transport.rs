//! TCP between Raft nodes. Each frame is a big-endian `u32` length and a
//! prost [`Envelope`]: a raft-rs message (protobuf bytes), a proposal
//! forwarded to the leader, the leader's refusal of one, a node asking
//! to join as a learner, a question about the quorum for the leader and
//! its answer, or a broker heartbeat (see [`crate::heartbeat`]), the one
//! message answered on the connection it came on.
//!
//! A link opens with a frame that only names its sender (an envelope
//! without a body), so the listener knows whose link it holds from the
//! start, and can tell when that peer's link ends ([`PeerConnection`]).
//!
//! Every peer has its own queue and task: a slow or unreachable peer fills
//! only its own queue, and once that is full its messages are dropped and
//! reported unreachable (Raft retransmits), so it never blocks the others.
//! A dropped connection is re-established with exponential backoff.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::{Buf, BytesMut};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    heartbeat::{BrokerHeartbeat, HeartbeatCall, HeartbeatReply, HeartbeatStatus},
    quorum::QuorumDescription,
};

/// Largest frame accepted from a peer (a snapshot of a large cluster).
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the listener waits for the heartbeat service's answer; past
/// it the broker's own timeout has long run out.
const HEARTBEAT_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Envelope {
    #[prost(uint64, tag = "1")]
    pub(crate) from: u64,
    #[prost(oneof = "Body", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub(crate) body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Body {
    /// A raft-rs message, protobuf-encoded.
    #[prost(bytes, tag = "2")]
    Raft(Vec<u8>),
    #[prost(message, tag = "3")]
    Forward(Forward),
    #[prost(message, tag = "4")]
    Rejected(Rejected),
    #[prost(message, tag = "5")]
    Join(Join),
    #[prost(message, tag = "6")]
    Heartbeat(BrokerHeartbeat),
    #[prost(message, tag = "7")]
    HeartbeatReply(HeartbeatReply),
    #[prost(message, tag = "8")]
    DescribeQuorum(QuorumQuestion),
    #[prost(message, tag = "9")]
    QuorumDescribed(QuorumAnswer),
}

/// A node asks the leader to describe the quorum.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QuorumQuestion {
    #[prost(uint64, tag = "1")]
    pub(crate) request_id: u64,
}

/// The answer; no description if the receiver no longer leads.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QuorumAnswer {
    #[prost(uint64, tag = "1")]
    pub(crate) request_id: u64,
    #[prost(message, optional, tag = "2")]
    pub(crate) description: Option<QuorumDescription>,
}

/// A proposal sent to the leader by the node a client asked.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Forward {
    #[prost(uint64, tag = "1")]
    pub(crate) request_id: u64,
    /// A prost `MetadataRecord`.
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) record: Vec<u8>,
    /// The sender's run (see `ProposalContext::incarnation`).
    #[prost(uint64, tag = "3")]
    pub(crate) incarnation: u64,
}

/// The leader could not take a forwarded proposal.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Rejected {
    #[prost(uint64, tag = "1")]
    pub(crate) request_id: u64,
    /// Who the receiver believes leads, 0 if nobody.
    #[prost(uint64, tag = "2")]
    pub(crate) leader_id: u64,
    /// The run of the proposer that forwarded it.
    #[prost(uint64, tag = "3")]
    pub(crate) incarnation: u64,
}

/// A node not yet in the Raft configuration asks to be added as a learner.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Join {
    #[prost(uint64, tag = "1")]
    pub(crate) node_id: u64,
    #[prost(string, tag = "2")]
    pub(crate) address: String,
    /// The nonce of this node's return after losing its Raft log, 0 for an
    /// ordinary join: the leader takes it out and back in (see
    /// `core::membership`).
    #[prost(uint64, tag = "3")]
    pub(crate) rejoin: u64,
}

/// What the transport tells the node.
#[derive(Debug)]
pub(crate) enum TransportEvent {
    Received(Envelope),
    Unreachable(u64),
    SnapshotSent { to: u64, delivered: bool },
}

struct Outgoing {
    frame: Vec<u8>,
    snapshot: bool,
    /// Already written once to a connection that turned out dead.
    retried: bool,
}

struct Link {
    address: String,
    queue: mpsc::Sender<Outgoing>,
    task: JoinHandle<()>,
}

/// Outgoing links to peers, owned by the node's task. The links' tasks run
/// on `runtime` (the broker's), not on the Raft thread, so a Ready's fsync
/// never holds up bytes already queued for a peer; and a node whose broker
/// workers stall is not heard from (see `node`).
pub(crate) struct Transport {
    id: u64,
    links: HashMap<u64, Link>,
    events: mpsc::Sender<TransportEvent>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("id", &self.id)
            .field("peers", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub(crate) fn frame(envelope: &Envelope) -> Vec<u8> {
    let payload = envelope.encode_to_vec();
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    frame
}

impl Transport {
    pub(crate) fn new(
        id: u64,
        events: mpsc::Sender<TransportEvent>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            id,
            links: HashMap::new(),
            events,
            runtime,
        }
    }

    /// Makes the set of peers and their addresses what `peers` says.
    pub(crate) fn set_peers<'a>(&mut self, peers: impl IntoIterator<Item = (&'a u64, &'a String)>) {
        let wanted: HashMap<u64, String> = peers
            .into_iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        self.links.retain(|id, link| {
            let keep = wanted.get(id) == Some(&link.address);
            if !keep {
                link.task.abort();
            }
            keep
        });
        for (id, address) in wanted {
            if self.links.contains_key(&id) {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let task = self.runtime.spawn(run_link(
                self.id,
                id,
                address.clone(),
                rx,
                self.events.clone(),
            ));
            self.links.insert(
                id,
                Link {
                    address,
                    queue,
                    task,
                },
            );
        }
    }

    /// Queues raft-rs messages; returns the peers that could not take them.
    pub(crate) fn send_raft(&self, messages: Vec<Message>) -> Vec<(u64, bool)> {
        let mut failed = Vec::new();
        for message in messages {
            let to = message.to;
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let Ok(bytes) = message.write_to_bytes() else {
                failed.push((to, snapshot));
                continue;
            };
            let envelope = Envelope {
                from: self.id,
                body: Some(Body::Raft(bytes)),
            };
            if !self.enqueue(to, &envelope, snapshot) {
                failed.push((to, snapshot));
            }
        }
        failed
    }

    /// Queues a non-Raft envelope body; false if the peer is unknown or its
    /// queue is full.
    pub(crate) fn send(&self, to: u64, body: Body) -> bool {
        let envelope = Envelope {
            from: self.id,
            body: Some(body),
        };
        self.enqueue(to, &envelope, false)
    }

    fn enqueue(&self, to: u64, envelope: &Envelope, snapshot: bool) -> bool {
        let Some(link) = self.links.get(&to) else {
            return false;
        };
        link.queue
            .try_send(Outgoing {
                frame: frame(envelope),
                snapshot,
                retried: false,
            })
            .is_ok()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

async fn run_link(
    id: u64,
    peer: u64,
    address: String,
    mut queue: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<TransportEvent>,
) {
    let opening = frame(&Envelope {
        from: id,
        body: None,
    });
    let mut backoff = BACKOFF_START;
    let mut pending_retry: Option<Outgoing> = None;
    loop {
        let mut stream = match TcpStream::connect(&address).await {
            Ok(stream) => {
                backoff = BACKOFF_START;
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(e) => {
                tracing::debug!(peer, %address, error = %e, "cannot reach raft peer");
                // What is queued is stale by the time the peer is back;
                // Raft resends what matters.
                let mut dropped = false;
                let stale = pending_retry.take().into_iter();
                for outgoing in stale.chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                    dropped = true;
                    if outgoing.snapshot {
                        let _ = events
                            .send(TransportEvent::SnapshotSent {
                                to: peer,
                                delivered: false,
                            })
                            .await;
                    }
                }
                if dropped {
                    let _ = events.send(TransportEvent::Unreachable(peer)).await;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // The first frame names this node, so the peer knows whose link
        // this is before any message comes (see `PeerConnection`).
        if let Err(e) = stream.write_all(&opening).await {
            tracing::debug!(peer, %address, error = %e, "raft peer connection lost");
            tokio::time::sleep(backoff).await;
            continue;
        }
        // Peers never write on this connection, so a readable socket means
        // the peer closed it (it restarted or died): reconnect right away
        // rather than lose the next message to a dead socket.
        let mut probe = [0u8; 1];
        let mut retry = pending_retry.take();
        loop {
            let outgoing = match retry.take() {
                Some(outgoing) => outgoing,
                None => tokio::select! {
                    outgoing = queue.recv() => match outgoing {
                        Some(outgoing) => outgoing,
                        None => return,
                    },
                    _ = stream.read(&mut probe) => {
                        tracing::debug!(peer, %address, "raft peer closed the connection");
                        break;
                    }
                },
            };
            match stream.write_all(&outgoing.frame).await {
                Ok(()) => {
                    if outgoing.snapshot {
                        let _ = events
                            .send(TransportEvent::SnapshotSent {
                                to: peer,
                                delivered: true,
                            })
                            .await;
                    }
                }
                Err(e) if !outgoing.retried => {
                    tracing::debug!(peer, %address, error = %e, "raft peer connection lost");
                    // One more try on a fresh connection: the message is
                    // likely still current (a vote, an append).
                    pending_retry = Some(Outgoing {
                        retried: true,
                        ..outgoing
                    });
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer, %address, error = %e, "raft peer connection lost again");
                    if outgoing.snapshot {
                        let _ = events
                            .send(TransportEvent::SnapshotSent {
                                to: peer,
                                delivered: false,
                            })
                            .await;
                    }
                    let _ = events.send(TransportEvent::Unreachable(peer)).await;
                    break;
                }
            }
        }
    }
}

/// What the listener saw of a peer's connection to this node, named by
/// the peer's Raft id: a node whose process dies has its connections
/// closed at once, so their ends tell its peers before anything else does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerConnection {
    /// A peer sent its first frame on a new Raft link: it is up.
    Opened(u64),
    /// A Raft link a peer had sent frames on ended, by the peer or its
    /// host (a process restarting or dying, a link reset).
    Closed(u64),
}

/// Where the listener's tasks send what they see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listeners {
    pub(crate) heartbeats: Option<mpsc::Sender<HeartbeatCall>>,
    pub(crate) peer_connections: Option<mpsc::Sender<PeerConnection>>,
}

/// Accepts peers' connections and forwards every envelope they send;
/// heartbeats go to `listeners.heartbeats` and are answered on their
/// connection.
pub(crate) async fn serve(
    listener: TcpListener,
    events: mpsc::Sender<TransportEvent>,
    listeners: Listeners,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(read_peer(stream, peer, events.clone(), listeners.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "raft listener accept failed");
                tokio::time::sleep(BACKOFF_START).await;
            }
        }
    }
}

async fn read_peer(
    mut stream: TcpStream,
    peer: SocketAddr,
    events: mpsc::Sender<TransportEvent>,
    listeners: Listeners,
) {
    let mut from = Origin::default();
    read_frames(&mut stream, peer, &events, &listeners, &mut from).await;
    if let (Some(service), Some((node_id, incarnation))) = (listeners.heartbeats, from.heartbeats) {
        let _ = service.try_send(HeartbeatCall::Closed {
            node_id,
            incarnation,
        });
    }
    if let (Some(watchers), Some(raft_id)) = (listeners.peer_connections, from.raft_id) {
        // Advisory: should the broker fall behind, it misses one.
        let _ = watchers.try_send(PeerConnection::Closed(raft_id));
    }
}

/// Who a connection's frames came from.
#[derive(Debug, Default)]
struct Origin {
    /// The Raft id its first frame named, on a peer's Raft link (which
    /// opens with a frame naming it). Not on a broker's heartbeat
    /// connection: a broker leaves that one for the next controller's
    /// while alive.
    raft_id: Option<u64>,
    /// The broker (and incarnation) whose heartbeats it carried last.
    heartbeats: Option<(i32, u64)>,
}

/// Reads and dispatches `peer`'s frames until the connection ends,
/// noting in `from` who sent them.
async fn read_frames(
    stream: &mut TcpStream,
    peer: SocketAddr,
    events: &mpsc::Sender<TransportEvent>,
    listeners: &Listeners,
    from: &mut Origin,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while buf.len() < 4 {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let len = (&buf[..4]).get_u32() as usize;
        if len > MAX_FRAME {
            tracing::warn!(%peer, len, "closing raft connection: frame too large");
            return;
        }
        while buf.len() < 4 + len {
            buf.reserve((4 + len - buf.len()).min(1 << 20));
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buf.advance(4);
        let payload = buf.split_to(len);
        match Envelope::decode(payload.freeze()) {
            Ok(Envelope {
                body: Some(Body::Heartbeat(heartbeat)),
                ..
            }) => {
                from.heartbeats = Some((heartbeat.node_id, heartbeat.incarnation));
                let reply = answer_heartbeat(listeners.heartbeats.as_ref(), heartbeat).await;
                let envelope = Envelope {
                    from: 0,
                    body: Some(Body::HeartbeatReply(reply)),
                };
                if stream.write_all(&frame(&envelope)).await.is_err() {
                    return;
                }
            }
            Ok(envelope) => {
                if from.raft_id.is_none() {
                    from.raft_id = Some(envelope.from);
                    if let Some(watchers) = &listeners.peer_connections {
                        let _ = watchers.try_send(PeerConnection::Opened(envelope.from));
                    }
                }
                if envelope.body.is_none() {
                    // A link's opening frame: it only names the sender.
                    continue;
                }
                if events
                    .send(TransportEvent::Received(envelope))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing raft connection: undecodable frame");
                return;
            }
        }
    }
}

/// The heartbeat service's answer, or NotController when this node serves
/// none or it does not answer in time.
async fn answer_heartbeat(
    service: Option<&mpsc::Sender<HeartbeatCall>>,
    heartbeat: BrokerHeartbeat,
) -> HeartbeatReply {
    let not_controller = HeartbeatReply::new(HeartbeatStatus::NotController);
    let Some(service) = service else {
        return not_controller;
    };
    let (reply, answer) = oneshot::channel();
    if service
        .try_send(HeartbeatCall::Beat { heartbeat, reply })
        .is_err()
    {
        return not_controller;
    }
    match tokio::time::timeout(HEARTBEAT_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(reply)) => reply,
        _ => not_controller,
    }
}

/// Decodes a raft-rs message carried by an envelope.
pub(crate) fn decode_raft(bytes: &[u8]) -> Option<Message> {
    Message::parse_from_bytes(bytes).ok()
}
