//! Peers this broker has seen die, ahead of the controller's verdict.
//!
//! A broker whose process dies has every connection to it broken at once:
//! a follower fetching from it sees its connection end, or refused, tens of
//! milliseconds before the controller has fenced it and moved its
//! leaderships. A client whose own connection broke asks for metadata at
//! that moment too. Answered from the image alone, it is told the dead
//! broker still leads, and librdkafka, seeing a leader for every partition,
//! stops asking and waits for its periodic scan, up to a second later; it
//! then often gets the move and the dead broker's removal in one answer,
//! which parks the partition until the scan after that. So Metadata names
//! no leader for a partition whose leader this broker has seen die
//! (LEADER_NOT_AVAILABLE): clients keep asking until the controller has
//! decided, and meanwhile move their partitions off the dead broker.
//!
//! Two kinds of connection tell: a follower's fetch connection to the
//! leader (see `replication::fetcher`), and the Raft link each peer keeps
//! to this node's listener (`follow_peer_connections`), which tells a
//! broker that follows nothing of the dead one too. A dying process's
//! sockets close in an order nobody chooses, so a client may still ask
//! before any of them has ended; the more of them, the rarer that is.
//!
//! A presumption shapes only what clients are told, never who leads, and
//! it is short-lived: it ends when the peer answers again, does not apply
//! to the peer's next incarnation, and lapses after the time the caller
//! gives (a broker session), by when the controller has judged the peer.
//!
//! [`LostPeers`] is pure: time is passed in.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keel_raft_metadata::{MetadataImage, PeerConnection, ids};
use tokio::sync::mpsc;

use crate::broker::Broker;

#[derive(Debug, Default)]
pub struct LostPeers {
    /// By node id: the incarnation seen die and when it was first seen.
    lost: Mutex<HashMap<i32, (u64, Instant)>>,
    /// Whether `lost` may hold anyone, so that the answer to every
    /// follower fetch (`answered`) need not take the lock when it is empty.
    any: AtomicBool,
}

impl LostPeers {
    /// A connection to `incarnation` of broker `node_id` broke, or was
    /// refused, as happens when its process dies. Returns whether this is
    /// news (it was not presumed gone already).
    pub fn lost(&self, node_id: i32, incarnation: u64, now: Instant) -> bool {
        let mut lost = self.lost.lock().unwrap_or_else(PoisonError::into_inner);
        match lost.get(&node_id) {
            Some(&(seen, _)) if seen == incarnation => false,
            _ => {
                lost.insert(node_id, (incarnation, now));
                self.any.store(true, Ordering::Release);
                true
            }
        }
    }

    /// Broker `node_id` answered: it is not gone.
    pub fn answered(&self, node_id: i32) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut lost = self.lost.lock().unwrap_or_else(PoisonError::into_inner);
        lost.remove(&node_id);
        self.any.store(!lost.is_empty(), Ordering::Release);
    }

    /// The brokers (node id and incarnation) presumed gone at `now`: seen
    /// die less than `within` ago and not heard from since.
    pub fn presumed_gone(&self, now: Instant, within: Duration) -> PresumedGone {
        let mut lost = self.lost.lock().unwrap_or_else(PoisonError::into_inner);
        lost.retain(|_, (_, since)| now.saturating_duration_since(*since) < within);
        self.any.store(!lost.is_empty(), Ordering::Release);
        PresumedGone(
            lost.iter()
                .map(|(&node_id, &(incarnation, _))| (node_id, incarnation))
                .collect(),
        )
    }
}

/// Notes what the Raft listener sees of peers' connections: one that ends
/// marks its broker lost, one that opens marks it answering.
pub async fn follow_peer_connections(
    broker: Arc<Broker>,
    mut connections: mpsc::Receiver<PeerConnection>,
) {
    while let Some(connection) = connections.recv().await {
        match connection {
            PeerConnection::Opened(raft_id) => broker.lost_peers.answered(ids::node_id(raft_id)),
            PeerConnection::Closed(raft_id) => {
                let node_id = ids::node_id(raft_id);
                note_lost(
                    &broker,
                    node_id,
                    "its connection to this node's Raft listener ended",
                );
            }
        }
    }
}

/// A connection to broker `node_id` ended as a dying process's do
/// (`why`): its current incarnation is presumed gone.
pub fn note_lost(broker: &Broker, node_id: i32, why: &str) {
    if node_id == broker.config.node_id {
        return;
    }
    let Some(incarnation) = broker.image().broker(node_id).map(|b| b.incarnation) else {
        return;
    };
    if broker.lost_peers.lost(node_id, incarnation, Instant::now()) {
        tracing::info!(
            node_id,
            why,
            "broker presumed gone until it answers or the controller decides: Metadata names it leader of nothing"
        );
    }
}

/// A snapshot of the brokers presumed gone, for answering one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PresumedGone(Vec<(i32, u64)>);

impl PresumedGone {
    pub fn contains(&self, node_id: i32, incarnation: u64) -> bool {
        self.0.contains(&(node_id, incarnation))
    }

    /// Whether broker `node_id`, as `image` registers it now, is presumed
    /// gone.
    pub fn names(&self, image: &MetadataImage, node_id: i32) -> bool {
        !self.0.is_empty()
            && image
                .broker(node_id)
                .is_some_and(|b| self.contains(node_id, b.incarnation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_millis(600);

    #[test]
    fn a_peer_seen_die_is_presumed_gone_until_it_answers() {
        let peers = LostPeers::default();
        let start = Instant::now();
        assert!(peers.lost(2, 7, start));
        assert!(peers.presumed_gone(start, SESSION).contains(2, 7));
        assert!(!peers.presumed_gone(start, SESSION).contains(3, 7));
        peers.answered(2);
        assert!(!peers.presumed_gone(start, SESSION).contains(2, 7));
    }

    #[test]
    fn a_presumption_lapses_a_session_after_the_first_loss() {
        let peers = LostPeers::default();
        let start = Instant::now();
        assert!(peers.lost(2, 7, start));
        assert!(
            !peers.lost(2, 7, start + Duration::from_millis(400)),
            "a refused reconnection is no news and does not extend it"
        );
        let almost = start + SESSION - Duration::from_millis(1);
        assert!(peers.presumed_gone(almost, SESSION).contains(2, 7));
        assert!(!peers.presumed_gone(start + SESSION, SESSION).contains(2, 7));
    }

    #[test]
    fn a_presumption_names_the_incarnation_seen_die() {
        let peers = LostPeers::default();
        let start = Instant::now();
        peers.lost(2, 7, start);
        let gone = peers.presumed_gone(start, SESSION);
        assert!(gone.contains(2, 7));
        assert!(!gone.contains(2, 8), "the broker restarted since");
        assert!(
            peers.lost(2, 8, start),
            "the next incarnation dying is news"
        );
        assert!(peers.presumed_gone(start, SESSION).contains(2, 8));
    }
}
