//! Who is in the Raft group: learners joining, committed conf changes
//! applied (or refused by raft-rs), and a node that lost its Raft log
//! rejoining.
//!
//! A node that lost its log (its metadata directory was wiped, while its
//! data directory shows it was a member) must not act as the member it
//! was. The leader's progress may still say the node holds entries up to
//! some index, so its heartbeats would carry a commit index beyond the
//! node's empty log (raft-rs panics on that); and as a voter the node could
//! grant a second vote in a term it already voted in, or vote for (or
//! campaign as) a candidate missing entries it had acknowledged. So such a
//! node starts *rejoining*, with a nonce of its own: it does not tick (so
//! never campaigns), drops vote requests and heartbeats crediting it with
//! entries it lacks, and asks to join with the nonce. The leader removes
//! it from the group unless the group already took back that nonce, adds
//! it back as a learner with the nonce in the change (replicated, so a new
//! leader knows it too, and kept in snapshots), and promotes it to voter
//! once it has caught up if the leader's configured voters name it. The
//! node stops rejoining only when it has applied its own return, never
//! because a snapshot or configuration still lists it as the member it
//! was. The nonce is kept in a marker file, so a crash midway resumes the
//! same return.

use std::{fs, path::Path};

use prost::Message as _;
use raft::{
    StateRole,
    eraftpb::{ConfChange, ConfChangeType, Message, MessageType},
};

use super::{CoreError, CoreEvent, ProposeError, RaftCore};

/// Marks a node that lost its log and has not yet been taken back.
pub(super) const REJOIN_MARKER: &str = "rejoining";

/// Carried in the context of a conf change adding a node.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct MemberAddress {
    #[prost(string, tag = "1")]
    pub(super) address: String,
    /// The nonce of the rejoining run this change takes back, 0 if none.
    #[prost(uint64, tag = "2")]
    pub(super) rejoin: u64,
}

/// Whether a node opening `dir` must rejoin, and the nonce of its return:
/// it was a member before (`member_before`, from its data directory) but
/// has no Raft log now, and there is another voter to take it back. The
/// marker keeps the nonce across restarts until the node is back.
pub(super) fn must_rejoin(
    dir: &Path,
    node_id: u64,
    member_before: bool,
    voters: &[u64],
) -> Result<Option<u64>, CoreError> {
    let marker = dir.join(REJOIN_MARKER);
    let io = |source| {
        CoreError::Storage(crate::storage::StorageError::Io {
            path: marker.clone(),
            source,
        })
    };
    match fs::read_to_string(&marker) {
        Ok(text) => {
            let nonce = text.trim().parse().map_err(|_| {
                CoreError::Storage(crate::storage::StorageError::Corrupt {
                    path: marker.clone(),
                    reason: format!("'{}' is not a rejoin nonce", text.trim()),
                })
            })?;
            return Ok(Some(nonce));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let others = voters.iter().any(|&id| id != node_id);
    if !member_before || !others || crate::storage::DurableStorage::exists(dir) {
        return Ok(None);
    }
    let nonce = uuid::Uuid::new_v4().as_u64_pair().0.max(1);
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(&marker, format!("{nonce}\n")))
        .and_then(|()| fs::File::open(dir)?.sync_all())
        .map_err(io)?;
    tracing::warn!(
        dir = %dir.display(),
        "this node's Raft log is missing although it was a member of the cluster; \
         rejoining as a new learner, to be promoted back once it has caught up"
    );
    Ok(Some(nonce))
}

impl RaftCore {
    /// Proposes adding `node_id` at `address` as a learner. A node that is
    /// already a member is refused: raft-rs would take the request of a
    /// misconfigured node that reuses a voter's id as a demotion of that
    /// voter.
    pub fn propose_learner(&mut self, node_id: u64, address: &str) -> Result<(), ProposeError> {
        self.add_learner(node_id, address, 0)
    }

    /// Adds `node_id` as a learner, taking back the rejoining run `rejoin`
    /// (0 if none); a member is refused (see [`Self::propose_learner`]).
    fn add_learner(
        &mut self,
        node_id: u64,
        address: &str,
        rejoin: u64,
    ) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        if self.is_member(node_id) {
            return Err(ProposeError::Dropped(format!(
                "node {node_id} is already a member"
            )));
        }
        self.propose_conf_change(conf_change(
            ConfChangeType::AddLearnerNode,
            node_id,
            address,
            rejoin,
        ))
    }

    /// Proposes a membership change as raft-rs takes it. raft-rs checks
    /// some changes only when they are applied; those it refuses then are
    /// reported as [`CoreEvent::ConfChangeRejected`].
    pub fn propose_conf_change(
        &mut self,
        change: impl raft_proto::ConfChangeI,
    ) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        self.raw
            .propose_conf_change(Vec::new(), change)
            .map_err(|e| ProposeError::Dropped(e.to_string()))
    }

    /// The leader's answer to a node asking to join. A node that is not a
    /// member is added as a learner (with its rejoin nonce, if any). A
    /// member that says it lost its log (`rejoin` is its nonce, 0 for an
    /// ordinary join) is removed first, unless the group has already taken
    /// back that very run; once removed it asks again and is added back.
    pub fn handle_join(
        &mut self,
        node_id: u64,
        address: &str,
        rejoin: u64,
    ) -> Result<(), ProposeError> {
        if !self.is_member(node_id) {
            return self.add_learner(node_id, address, rejoin);
        }
        if rejoin == 0 || node_id == self.config.id || self.rejoined.get(&node_id) == Some(&rejoin)
        {
            return Ok(());
        }
        self.check_can_propose()?;
        tracing::info!(
            node_id,
            "a member lost its Raft log; removing it to take it back"
        );
        self.propose_conf_change(conf_change(ConfChangeType::RemoveNode, node_id, "", 0))
    }

    /// On the leader: promotes one learner that `configured_voters` names
    /// and that has caught up with the commit index (a voter that lost its
    /// log and came back as a learner).
    pub fn promote_caught_up_learner(&mut self, configured_voters: &[u64]) {
        if self.check_can_propose().is_err() || self.raw.raft.has_pending_conf() {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let learners = self.storage.conf_state().learners;
        let caught_up = learners.into_iter().find(|id| {
            configured_voters.contains(id)
                && self
                    .raw
                    .raft
                    .prs()
                    .get(*id)
                    .is_some_and(|progress| progress.matched >= committed)
        });
        if let Some(node_id) = caught_up {
            let address = self.peers.get(&node_id).cloned().unwrap_or_default();
            let rejoin = self.rejoined.get(&node_id).copied().unwrap_or(0);
            tracing::info!(node_id, "promoting a caught-up learner back to voter");
            let change = conf_change(ConfChangeType::AddNode, node_id, &address, rejoin);
            if let Err(e) = self.propose_conf_change(change) {
                tracing::debug!(node_id, error = %e, "cannot promote yet");
            }
        }
    }

    /// Whether this node lost its log and is not yet taken back.
    pub fn is_rejoining(&self) -> bool {
        self.rejoin_nonce.is_some()
    }

    /// The nonce of this node's return after losing its log, 0 if none.
    pub fn rejoin_nonce(&self) -> u64 {
        self.rejoin_nonce.unwrap_or(0)
    }

    /// Whether this node should ask a voter to take it in, and with which
    /// rejoin nonce (0 for an ordinary join): while it is not a member in
    /// its own configuration, and while it waits to be taken back after
    /// losing its log, even if a snapshot from a new leader still lists it
    /// as the member it was.
    pub fn join_request(&self) -> Option<u64> {
        (self.rejoin_nonce.is_some() || !self.is_member(self.config.id))
            .then(|| self.rejoin_nonce())
    }

    /// A rejoining node must not take what assumes it is the member it
    /// was: a heartbeat whose commit index lies beyond its log (the leader
    /// still credits it with entries it lost; raft-rs would panic), and
    /// vote requests (it may have voted in that term already). Heartbeats
    /// of a leader that took it back carry no such commit and are taken,
    /// so the leader hears from it and sends it the log.
    pub(super) fn refuses(&self, message: &Message) -> bool {
        if self.rejoin_nonce.is_none() {
            return false;
        }
        match message.get_msg_type() {
            MessageType::MsgHeartbeat => message.commit > self.raw.raft.raft_log.last_index(),
            MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
            | MessageType::MsgTimeoutNow => true,
            _ => false,
        }
    }

    /// Ends the rejoining state once this node has applied its own return:
    /// a change adding it back with this run's nonce.
    pub(super) fn check_rejoined(&mut self) -> Result<(), CoreError> {
        let Some(nonce) = self.rejoin_nonce else {
            return Ok(());
        };
        let me = self.config.id;
        if self.rejoined.get(&me) != Some(&nonce) || !self.is_member(me) {
            return Ok(());
        }
        let marker = self.dir.join(REJOIN_MARKER);
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CoreError::Storage(crate::storage::StorageError::Io {
                    path: marker,
                    source,
                }));
            }
        }
        self.rejoin_nonce = None;
        tracing::info!("this node is a member of the Raft group again");
        Ok(())
    }

    fn is_member(&self, node_id: u64) -> bool {
        let conf_state = self.storage.conf_state();
        conf_state.voters.contains(&node_id) || conf_state.learners.contains(&node_id)
    }

    pub(super) fn apply_conf_change(
        &mut self,
        index: u64,
        change: &impl raft_proto::ConfChangeI,
        context: &[u8],
        node_id: u64,
        kind: ConfChangeType,
        events: &mut Vec<CoreEvent>,
    ) -> Result<(), CoreError> {
        // raft-rs validates a change only here, after it was committed; a
        // refusal is the same on every node, so it is an answer, not a
        // reason to stop the node (which would stop every node alike).
        let conf_state = match self.raw.apply_conf_change(change) {
            Ok(conf_state) => conf_state,
            Err(e) => {
                tracing::warn!(index, error = %e, "refused a committed membership change");
                events.push(CoreEvent::ConfChangeRejected {
                    index,
                    reason: e.to_string(),
                });
                return Ok(());
            }
        };
        self.storage.set_conf_state(&conf_state)?;
        match kind {
            ConfChangeType::RemoveNode => {
                self.peers.remove(&node_id);
                self.rejoined.remove(&node_id);
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(member) = MemberAddress::decode(context) {
                    if !member.address.is_empty() {
                        self.peers.insert(node_id, member.address);
                    }
                    if member.rejoin != 0 {
                        self.rejoined.insert(node_id, member.rejoin);
                    }
                }
            }
        }
        if self.raw.raft.state == StateRole::Leader && kind == ConfChangeType::RemoveNode {
            tracing::info!(node_id, "removed from the Raft group");
        }
        events.push(CoreEvent::MembershipChanged {
            voters: conf_state.voters.clone(),
            learners: conf_state.learners.clone(),
            peers: self.peers.clone(),
        });
        Ok(())
    }
}

fn conf_change(kind: ConfChangeType, node_id: u64, address: &str, rejoin: u64) -> ConfChange {
    let mut change = ConfChange::default();
    change.set_change_type(kind);
    change.node_id = node_id;
    if !address.is_empty() || rejoin != 0 {
        let member = MemberAddress {
            address: address.to_string(),
            rejoin,
        };
        change.set_context(member.encode_to_vec().into());
    }
    change
}
