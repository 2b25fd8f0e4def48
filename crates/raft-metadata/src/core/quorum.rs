//! What the core knows of its peers' logs while it leads, for
//! DescribeQuorum (see [`crate::quorum`]).

use super::RaftCore;
use crate::quorum::{QuorumDescription, ReplicaContacts};

impl RaftCore {
    /// How far the leader knows `peer`'s log to match its own, while this
    /// node leads.
    pub(crate) fn matched(&self, peer: u64) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        self.raw
            .raft
            .prs()
            .get(peer)
            .map(|progress| progress.matched)
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The quorum as this node describes it while it leads; `None` on any
    /// other node, which does not know its peers' logs.
    pub(crate) fn describe_quorum(
        &self,
        contacts: &ReplicaContacts,
        now_ms: i64,
    ) -> Option<QuorumDescription> {
        if !self.is_leader() {
            return None;
        }
        let me = self.config.id;
        let describe = |ids: Vec<u64>| {
            ids.into_iter()
                .map(|id| {
                    let log_end_offset = if id == me {
                        self.last_index()
                    } else {
                        self.raw.raft.prs().get(id).map_or(0, |p| p.matched)
                    };
                    contacts.describe(id, me, log_end_offset, now_ms)
                })
                .collect()
        };
        let conf_state = self.storage.conf_state();
        Some(QuorumDescription {
            leader_id: me,
            term: self.raw.raft.term,
            high_watermark: self.raw.raft.raft_log.committed,
            voters: describe(conf_state.voters),
            observers: describe(conf_state.learners),
        })
    }
}
