//! The node's thread: the loop that owns the [`RaftCore`] and the
//! transport, and what it does on each tick, command, message and Ready.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prost::Message as _;
use raft::{StateRole, eraftpb::MessageType};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    BarrierReply, Command, Confirmation, JOIN_INTERVAL, NodeConfig, NodeError, NodeStatus,
    ProposalError, QuorumReply, READ_RETRY, Reply,
};
use crate::{
    core::{CoreEvent, ProposeError, RaftCore, Role},
    image::MetadataImage,
    proposals::{Proposals, Stage},
    quorum::ReplicaContacts,
    records::MetadataRecord,
    transport::{
        self, Body, Forward, Join, QuorumAnswer, QuorumQuestion, Rejected, Transport,
        TransportEvent,
    },
};

/// A proposal's record and the caller waiting for its outcome.
pub(super) struct Proposal {
    pub(super) record: MetadataRecord,
    pub(super) reply: Reply,
}

/// A read barrier waiting for the leader's commit index, then for this
/// node to apply up to it.
pub(super) struct PendingRead {
    pub(super) reply: BarrierReply,
    pub(super) index: Option<u64>,
    /// When the leader was last asked (again, if it did not answer).
    pub(super) asked: Instant,
    /// No round that answers this read began before this.
    pub(super) began: Instant,
}

pub(super) struct Node {
    pub(super) config: NodeConfig,
    /// The ids of the configured voters (`config.voters`).
    pub(super) voter_ids: Vec<u64>,
    pub(super) core: RaftCore,
    pub(super) transport: Transport,
    pub(super) proposals: Proposals<Proposal>,
    pub(super) reads: HashMap<u64, PendingRead>,
    /// While leading: when a quorum last confirmed it.
    pub(super) confirmation: Confirmation,
    /// Read barriers and questions to the leader are numbered from here.
    pub(super) next_read: u64,
    /// While leading: when each peer last answered (for DescribeQuorum).
    pub(super) contacts: ReplicaContacts,
    /// Questions passed on to the leader, by request id.
    pub(super) quorum_questions: HashMap<u64, QuorumReply>,
    pub(super) image_tx: watch::Sender<Arc<MetadataImage>>,
    pub(super) status_tx: watch::Sender<NodeStatus>,
    pub(super) leader_changes: u64,
    pub(super) last_leader: Option<u64>,
    pub(super) last_join: Option<Instant>,
}

impl Node {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<TransportEvent>,
    ) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.core.campaign_if_sole_voter()?;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.core.tick();
                    self.on_tick();
                }
                command = commands.recv() => match command {
                    Some(Command::Propose { record, reply }) => self.submit(record, reply),
                    Some(Command::ReadBarrier { reply, max_age }) => {
                        self.read_barrier(reply, max_age);
                    }
                    Some(Command::DescribeQuorum { reply }) => self.describe_quorum(reply),
                    Some(Command::TransferLeadership) => {
                        if let Some(to) = self.core.transfer_leadership() {
                            tracing::info!(to, "handing metadata leadership over before stopping");
                        }
                    }
                    Some(Command::Shutdown) | None => break,
                },
                Some(event) = events.recv() => self.on_transport_event(event),
            }
            // Take whatever else arrived meanwhile before the next Ready, so
            // one fsync covers many messages.
            while let Ok(event) = events.try_recv() {
                self.on_transport_event(event);
            }
            self.process_ready()?;
        }
        self.fail_all(ProposalError::Stopped);
        Ok(())
    }

    fn process_ready(&mut self) -> Result<(), NodeError> {
        let transport = &self.transport;
        let mut failed = Vec::new();
        let events = self
            .core
            .handle_ready(&mut |messages| failed.extend(transport.send_raft(messages)))?;
        for (peer, snapshot) in failed {
            self.core.report_unreachable(peer);
            if snapshot {
                self.core.report_snapshot(peer, false);
            }
        }
        if events.is_empty() {
            // Nothing applied or answered: no image to publish, no caller
            // to tell. Most Readies (heartbeats, acks) end here.
            return Ok(());
        }
        let mut completed = Vec::new();
        let mut image_changed = false;
        for event in events {
            match event {
                CoreEvent::Applied { origin, result, .. } => {
                    image_changed |= result.is_ok();
                    if let Some(pending) = origin.and_then(|o| self.proposals.complete(&o)) {
                        completed.push((pending.payload.reply, result));
                    }
                }
                CoreEvent::SnapshotInstalled { index } => {
                    tracing::info!(index, "installed a metadata snapshot from the leader");
                    image_changed = true;
                }
                CoreEvent::MembershipChanged {
                    voters,
                    learners,
                    peers,
                } => {
                    tracing::info!(?voters, ?learners, "raft membership changed");
                    self.transport.set_peers(&peers);
                }
                CoreEvent::ConfChangeRejected { .. } => {}
                CoreEvent::ReadIndex { context, index } => {
                    if let Some(read) = self.reads.get_mut(&context) {
                        read.index.get_or_insert(index);
                        if self.core.is_leader() {
                            self.confirmation.confirmed(self.core.term(), read.began);
                        }
                    }
                }
                CoreEvent::RoleChanged {
                    role,
                    leader_id,
                    term,
                } => self.on_role_change(role, leader_id, term),
            }
        }
        // Most events (read barriers, rejected proposals) change nothing:
        // the image published last is the one to answer with, and copying
        // the whole image at every one of them would be the idle cost.
        let image = if image_changed {
            let image = Arc::new(self.core.image().clone());
            self.image_tx.send_replace(Arc::clone(&image));
            image
        } else {
            Arc::clone(&self.image_tx.borrow())
        };
        for (reply, result) in completed {
            let _ = reply.send(
                result
                    .map(|()| Arc::clone(&image))
                    .map_err(ProposalError::from),
            );
        }
        self.complete_reads();
        self.publish_status();
        Ok(())
    }

    fn on_role_change(&mut self, role: StateRole, leader_id: u64, term: u64) {
        let leader = (leader_id != raft::INVALID_ID).then_some(leader_id);
        if leader != self.last_leader {
            self.leader_changes += 1;
            tracing::info!(?leader, term, role = ?Role::from(role), "metadata leader changed");
            // Whatever was in flight under the old leader may or may not
            // commit; tell the callers now rather than at their deadline.
            for pending in self.proposals.take(|p| p.stage != Stage::Waiting) {
                let _ = pending
                    .payload
                    .reply
                    .send(Err(ProposalError::LeadershipChanged));
            }
            self.last_leader = leader;
        }
        if role == StateRole::Leader {
            self.contacts.clear();
        }
    }

    fn describe_quorum(&mut self, reply: QuorumReply) {
        if self.core.is_leader() {
            let _ = reply.send(self.core.describe_quorum(&self.contacts, wall_clock_ms()));
            return;
        }
        let Some(leader) = self.core.leader_id() else {
            let _ = reply.send(None);
            return;
        };
        let request_id = self.next_read;
        self.next_read += 1;
        if self
            .transport
            .send(leader, Body::DescribeQuorum(QuorumQuestion { request_id }))
        {
            self.quorum_questions.insert(request_id, reply);
        } else {
            let _ = reply.send(None);
        }
    }

    fn submit(&mut self, record: MetadataRecord, reply: Reply) {
        let deadline = Instant::now() + self.config.proposal_timeout;
        let context = self.proposals.insert(Proposal { record, reply }, deadline);
        self.advance(context.request_id);
    }

    /// Moves a waiting proposal on: propose it here if this node leads,
    /// else forward it to the leader.
    fn advance(&mut self, request_id: u64) {
        let Some(pending) = self.proposals.get(request_id) else {
            return;
        };
        if pending.stage != Stage::Waiting {
            return;
        }
        let context = self.proposals.context(request_id);
        let record = &pending.payload.record;
        let stage = match self.core.propose(context, record) {
            Ok(()) => Stage::Proposed,
            Err(ProposeError::NotLeader {
                leader_id: Some(leader),
            }) => {
                let forward = Body::Forward(Forward {
                    request_id,
                    record: record.encode_to_vec(),
                    incarnation: context.incarnation,
                });
                if self.transport.send(leader, forward) {
                    Stage::Forwarded(leader)
                } else {
                    Stage::Waiting
                }
            }
            Err(ProposeError::NotLeader { leader_id: None } | ProposeError::NotReady) => {
                Stage::Waiting
            }
            Err(ProposeError::Dropped(reason)) => {
                tracing::debug!(%reason, "proposal dropped by raft; retrying");
                Stage::Waiting
            }
        };
        self.proposals.set_stage(request_id, stage);
    }

    fn read_barrier(&mut self, reply: BarrierReply, max_age: Option<Duration>) {
        let context = self.next_read;
        self.next_read = self.next_read.wrapping_add(1);
        let now = Instant::now();
        // Only a leader that has applied an entry of its term knows every
        // entry committed before it: its commit index then answers as a
        // round would. A confirmation of this term implies as much already
        // (raft-rs answers no read index before the leader commits an
        // entry of its term); the check states the rule here rather than
        // lean on that.
        let serving = self.core.controller_id() == Some(self.core.id());
        let recent = max_age
            .filter(|_| serving)
            .and_then(|max_age| self.confirmation.since(self.core.term(), now, max_age));
        let began = recent.unwrap_or(now);
        let index = match recent {
            Some(_) => Some(self.core.commit_index()),
            None => {
                self.core.read_index(context);
                None
            }
        };
        // With a recent confirmation, answered here if already applied.
        if index.is_some_and(|index| index <= self.core.applied_index()) {
            let _ = reply.send(Ok(began));
            return;
        }
        let read = PendingRead {
            reply,
            index,
            asked: now,
            began,
        };
        self.reads.insert(context, read);
    }

    /// Answers the read barriers this node has applied far enough for,
    /// and forgets those whose caller went away.
    fn complete_reads(&mut self) {
        self.reads.retain(|_, read| !read.reply.is_closed());
        for read in take_answered(&mut self.reads, self.core.applied_index()) {
            let _ = read.reply.send(Ok(read.began));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for pending in self.proposals.take(|p| p.deadline <= now) {
            let _ = pending.payload.reply.send(Err(ProposalError::Timeout));
        }
        for request_id in self.proposals.waiting() {
            self.advance(request_id);
        }
        let unanswered: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_none() && now - read.asked >= READ_RETRY)
            .map(|(context, _)| *context)
            .collect();
        for context in unanswered {
            self.core.read_index(context);
            if let Some(read) = self.reads.get_mut(&context) {
                read.asked = now;
            }
        }
        // A caller that gave up on the leader's answer has dropped its end.
        self.quorum_questions.retain(|_, reply| !reply.is_closed());
        self.maybe_join(now);
        if self.core.is_leader() {
            self.core.promote_caught_up_learner(&self.voter_ids);
        }
        self.publish_status();
    }

    /// Asks the voters to take this node in while it wants to join (see
    /// [`RaftCore::join_request`]).
    fn maybe_join(&mut self, now: Instant) {
        let Some(rejoin) = self.core.join_request() else {
            return;
        };
        if self.last_join.is_some_and(|at| now - at < JOIN_INTERVAL) {
            return;
        }
        self.last_join = Some(now);
        let join = Join {
            node_id: self.config.id,
            address: self.config.advertised.clone(),
            rejoin,
        };
        for voter in self.core.status().voters {
            self.transport.send(voter, Body::Join(join.clone()));
        }
    }

    fn on_transport_event(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Unreachable(peer) => self.core.report_unreachable(peer),
            TransportEvent::SnapshotSent { to, delivered } => {
                self.core.report_snapshot(to, delivered)
            }
            TransportEvent::Received(envelope) => self.on_envelope(envelope.from, envelope.body),
        }
    }

    fn on_envelope(&mut self, from: u64, body: Option<Body>) {
        match body {
            Some(Body::Raft(bytes)) => match transport::decode_raft(&bytes) {
                Some(message) => {
                    let answer = matches!(
                        message.get_msg_type(),
                        MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
                    ) && !message.reject;
                    if let Err(e) = self.core.step(message) {
                        tracing::debug!(from, error = %e, "ignored a raft message");
                    } else if let Some(matched) = self.core.matched(from).filter(|_| answer) {
                        self.contacts
                            .heard(from, matched, self.core.last_index(), wall_clock_ms());
                    }
                }
                None => tracing::warn!(from, "undecodable raft message"),
            },
            Some(Body::Forward(forward)) => {
                let accepted = MetadataRecord::decode(forward.record.as_slice())
                    .map_err(|_| ProposeError::Dropped("undecodable record".into()))
                    .and_then(|record| {
                        let context = crate::core::ProposalContext {
                            origin: from,
                            request_id: forward.request_id,
                            incarnation: forward.incarnation,
                        };
                        self.core.propose(context, &record)
                    });
                if accepted.is_err() {
                    let rejected = Rejected {
                        request_id: forward.request_id,
                        leader_id: self.core.leader_id().unwrap_or(0),
                        incarnation: forward.incarnation,
                    };
                    self.transport.send(from, Body::Rejected(rejected));
                }
            }
            Some(Body::Rejected(rejected)) => {
                self.proposals
                    .rejected(rejected.request_id, rejected.incarnation);
            }
            Some(Body::Join(join)) => {
                if self.core.is_leader() {
                    if let Err(e) = self
                        .core
                        .handle_join(join.node_id, &join.address, join.rejoin)
                    {
                        tracing::debug!(node = join.node_id, error = %e, "cannot add learner yet");
                    }
                } else if let Some(leader) = self.core.leader_id() {
                    self.transport.send(leader, Body::Join(join));
                }
            }
            Some(Body::DescribeQuorum(question)) => {
                let answer = QuorumAnswer {
                    request_id: question.request_id,
                    description: self.core.describe_quorum(&self.contacts, wall_clock_ms()),
                };
                self.transport.send(from, Body::QuorumDescribed(answer));
            }
            Some(Body::QuorumDescribed(answer)) => {
                if let Some(reply) = self.quorum_questions.remove(&answer.request_id) {
                    let _ = reply.send(answer.description);
                }
            }
            // Heartbeats are answered by the listener, never passed on.
            Some(Body::Heartbeat(_) | Body::HeartbeatReply(_)) | None => {}
        }
    }

    fn publish_status(&self) {
        let core = self.core.status();
        let controller_address = core
            .controller_id
            .and_then(|id| self.core.peers().get(&id).cloned());
        let status = NodeStatus {
            core,
            leader_changes: self.leader_changes,
            controller_address,
        };
        self.status_tx.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }

    fn fail_all(&mut self, error: ProposalError) {
        for pending in self.proposals.drain() {
            let _ = pending.payload.reply.send(Err(error.clone()));
        }
        for (_, read) in self.reads.drain() {
            let _ = read.reply.send(Err(error.clone()));
        }
    }
}

/// Milliseconds since the epoch, as Kafka reports the quorum's times.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes and returns the read barriers that `applied` answers: the
/// leader's commit index is known and this node has applied up to it. A
/// known index not yet applied is not an answer: the image would not yet
/// hold what the quorum had committed.
fn take_answered(reads: &mut HashMap<u64, PendingRead>, applied: u64) -> Vec<PendingRead> {
    let done: Vec<u64> = reads
        .iter()
        .filter(|(_, read)| read.index.is_some_and(|index| index <= applied))
        .map(|(context, _)| *context)
        .collect();
    done.into_iter()
        .filter_map(|context| reads.remove(&context))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::sync::oneshot;

    use super::*;

    fn read(index: Option<u64>) -> PendingRead {
        PendingRead {
            reply: oneshot::channel().0,
            index,
            asked: Instant::now(),
            began: Instant::now(),
        }
    }

    #[test]
    fn a_read_barrier_is_answered_only_once_its_index_is_applied() {
        let mut reads: HashMap<u64, PendingRead> =
            [(1, read(None)), (2, read(Some(10))), (3, read(Some(7)))].into();
        assert!(take_answered(&mut reads, 6).is_empty());
        let answered: Vec<Option<u64>> = take_answered(&mut reads, 9)
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(answered, vec![Some(7)]);
        assert_eq!(take_answered(&mut reads, 10).len(), 1);
        assert_eq!(reads.len(), 1, "the unanswered one waits");
    }
}
