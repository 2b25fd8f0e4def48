//! The active controller's duties beside Raft: broker sessions kept by
//! heartbeats, and automatic leader election when a session lapses or a
//! leader's produce heartbeat says its partition stalled.
//!
//! Every node runs these tasks; they act only while the node is the active
//! controller. On taking over, the controller starts every registered
//! broker on a fresh session: it knows nothing of the heartbeats its
//! predecessor saw. Every tick it asks the leader elector's plan what
//! lapsed sessions and leaderless partitions call for, and commits that as
//! one batch: fences, elections and ISR removals in one Raft entry; and
//! carries partition reassignments forward when nothing else is due (the
//! loop is in `elector`).
//!
//! A heartbeat is answered `Renewed` only once a read barrier begun after
//! it arrived confirmed that this node still leads the quorum: no other
//! controller can have judged the broker's session meanwhile, so the
//! broker's lease may run from when it sent the heartbeat (see `lease`).
//! And only if the broker has taken every leadership change committed
//! before it sent the heartbeat: a leader moved away while alive loses its
//! lease within a lease of the change unless it learns of it, which is
//! what lets its successor start taking writes after that long at most
//! (see `replication::succession`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    mem,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use keel_leader_elector::liveness::{Heartbeat, Liveness};
use keel_raft_metadata::{
    MetadataImage, Record,
    heartbeat::{
        BrokerHeartbeat, HeartbeatCall, HeartbeatReply, HeartbeatStatus, StalledPartition,
    },
    ids,
    records::{LeaderChangeReason, UnfenceBroker},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};

use crate::broker::Broker;

mod elector;
mod probe;
mod reports;

pub use elector::{elect, move_leaderships_off};
use probe::probe;
use reports::Reports;
pub use reports::replica_log;

/// How long the controller waits for one batch to commit before it plans
/// again from the image as it then is.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Sessions as this node judges them while it is the active controller.
#[derive(Debug)]
pub struct Controller {
    /// The base of the monotonic milliseconds sessions are kept in.
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The Raft term whose sessions `liveness` holds; `None` until this node
    /// first controls.
    term: Option<u64>,
    liveness: Liveness,
    /// Brokers with an UnfenceBroker in flight.
    unfencing: HashSet<i32>,
    /// Brokers with a FenceBroker in flight, with when it was decided:
    /// from the decision on, none of their heartbeats renews a lease, so
    /// the lease a successor waits out (`lease_left_ms`) is the last one
    /// they got. A fence not known to have committed is held on to for a
    /// while: a proposal that timed out may still commit.
    fencing: HashMap<i32, i64>,
    /// Each broker's latest produce heartbeat: its led partitions where
    /// produce requests wait without progress.
    stalls: BTreeMap<i32, Vec<StalledPartition>>,
    /// Each replica's log as its broker last reported it.
    reports: Reports,
}

impl State {
    /// The controller decided, at `now_ms`, to fence `fenced`: from now on
    /// none of their heartbeats renews a lease. Earlier decisions not in
    /// this batch are held on to for two batch timeouts, for a proposal
    /// that timed out may still commit.
    fn decided_fences(&mut self, fenced: &[i32], now_ms: i64) {
        let hold_ms = 2 * i64::try_from(BATCH_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        self.fencing
            .retain(|id, decided_at| fenced.contains(id) || now_ms - *decided_at < hold_ms);
        for &id in fenced {
            self.fencing.insert(id, now_ms);
        }
    }
}

/// What to answer a heartbeat.
enum Verdict {
    Answer(HeartbeatStatus),
    /// Renewed, once the quorum confirms this controller, if the broker
    /// has taken this many leadership changes by then (else Behind).
    Confirm(u64),
    /// Fenced; unfence it at this incarnation.
    Unfence(u64),
}

impl Controller {
    pub fn new(session_timeout: Duration) -> Self {
        let timeout_ms = i64::try_from(session_timeout.as_millis()).unwrap_or(i64::MAX);
        Self {
            origin: Instant::now(),
            state: Mutex::new(State {
                term: None,
                liveness: Liveness::new(timeout_ms),
                unfencing: HashSet::new(),
                fencing: HashMap::new(),
                stalls: BTreeMap::new(),
                reports: Reports::default(),
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// The state for controlling in `term`: the first time in a term,
    /// every registered, unfenced broker starts on a fresh session.
    fn state_for(&self, term: u64, image: &MetadataImage, now_ms: i64) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.term != Some(term) {
            state.liveness.start_term(unfenced(image), now_ms);
            state.unfencing.clear();
            state.fencing.clear();
            state.stalls.clear();
            state.reports.clear();
            state.term = Some(term);
        }
        state
    }

    /// Drops replica reports that `image` makes stale (see `Reports`).
    fn forget_stale_reports(&self, image: &MetadataImage) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reports
            .forget_stale(image);
    }

    /// What to answer `heartbeat` while this node controls in `term`
    /// (`None`: it does not) with `image` applied.
    fn judge_heartbeat(
        &self,
        term: Option<u64>,
        image: &MetadataImage,
        heartbeat: &BrokerHeartbeat,
    ) -> Verdict {
        let Some(term) = term else {
            return Verdict::Answer(HeartbeatStatus::NotController);
        };
        let now = self.now_ms();
        let mut state = self.state_for(term, image, now);
        let renewed = state.liveness.heartbeat(
            heartbeat.node_id,
            heartbeat.incarnation,
            heartbeat.shutting_down,
            now,
        );
        state
            .stalls
            .insert(heartbeat.node_id, heartbeat.stalled.clone());
        state.reports.record(
            image,
            heartbeat.node_id,
            heartbeat.incarnation,
            &heartbeat.progress,
        );
        if state.fencing.contains_key(&heartbeat.node_id) {
            return Verdict::Answer(HeartbeatStatus::Fenced);
        }
        match (renewed, image.broker(heartbeat.node_id)) {
            (Heartbeat::StaleIncarnation { .. }, _) | (_, None) => {
                Verdict::Answer(HeartbeatStatus::UnknownIncarnation)
            }
            (Heartbeat::Renewed, Some(registered))
                if registered.incarnation != heartbeat.incarnation =>
            {
                Verdict::Answer(HeartbeatStatus::UnknownIncarnation)
            }
            (Heartbeat::Renewed, Some(registered)) if registered.fenced => {
                // A stopping broker that fenced itself stays fenced.
                if !heartbeat.shutting_down && state.unfencing.insert(heartbeat.node_id) {
                    Verdict::Unfence(registered.incarnation)
                } else {
                    Verdict::Answer(HeartbeatStatus::Fenced)
                }
            }
            (Heartbeat::Renewed, Some(_)) => Verdict::Confirm(heartbeat.leadership_changes),
        }
    }
}

impl Controller {
    /// The answer to `waiting` once this controller was confirmed by a
    /// round begun at `confirmed` (`None`: not confirmed), with `image`
    /// applied. Whether a fence of the broker is under way is asked now,
    /// not when the heartbeat arrived: a fence decided while the heartbeat
    /// waited for its confirmation counts on the lease it last got
    /// (`lease_left_ms`), so this heartbeat must not renew it.
    fn reply(
        &self,
        waiting: &Waiting,
        confirmed: Option<Instant>,
        image: &MetadataImage,
    ) -> HeartbeatReply {
        let may_renew = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            !state.fencing.contains_key(&waiting.node_id) && image.is_unfenced(waiting.node_id)
        };
        reply_to(waiting, confirmed, may_renew, image.next_history_sequence())
    }

    /// The fences of `node_ids` committed: the image says so from now on.
    fn fenced(&self, node_ids: &[i32]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for id in node_ids {
            state.fencing.remove(id);
        }
    }

    /// Brokers whose controlled shutdown moved leaderships off them in the
    /// history from `from_sequence` on are stopping, at the incarnation
    /// registered now: the rebalancer must not give a leadership straight
    /// back to one before its next heartbeat says it stops. Returns the
    /// sequence to start from next time.
    fn note_controlled_shutdowns(
        &self,
        term: u64,
        image: &MetadataImage,
        from_sequence: u64,
    ) -> u64 {
        let next = image.next_history_sequence();
        if from_sequence >= next {
            return next;
        }
        let now = self.now_ms();
        let mut state = self.state_for(term, image, now);
        let moved_off = image
            .history()
            .rev()
            .take_while(|c| c.sequence >= from_sequence)
            .filter(|c| c.reason == LeaderChangeReason::ControlledShutdown as i32);
        for change in moved_off {
            if let Some(stopping) = image.broker(change.previous_leader) {
                state
                    .liveness
                    .stopping(stopping.node_id, stopping.incarnation);
            }
        }
        next
    }

    /// `node_id`'s process at `incarnation` is gone: its session in `term`
    /// lapses now, and the next tick fences it and moves its leaderships.
    fn gone(&self, term: u64, image: &MetadataImage, node_id: i32, incarnation: u64) {
        let now = self.now_ms();
        let mut state = self.state_for(term, image, now);
        state.liveness.gone(node_id, incarnation);
    }
}

/// Registered brokers that are not fenced, with their incarnations.
fn unfenced(image: &MetadataImage) -> Vec<(i32, u64)> {
    image
        .live_brokers()
        .map(|b| (b.node_id, b.incarnation))
        .collect()
}

/// The Raft term in which this node is the active controller, if it is.
fn active_term(broker: &Broker) -> Option<u64> {
    let status = broker.metadata.status();
    let me = ids::raft_id(broker.config.node_id);
    (status.core.controller_id == Some(me)).then_some(status.core.term)
}

/// Answers heartbeats, from other brokers through the cluster listener and
/// from this one directly. Those to renew wait for one confirmation that
/// this node controls (see `confirm`); one confirmation answers every
/// heartbeat that arrived before it was asked for.
pub async fn serve_heartbeats(broker: Arc<Broker>, mut calls: mpsc::Receiver<HeartbeatCall>) {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut confirming = JoinSet::new();
    loop {
        tokio::select! {
            call = calls.recv() => {
                match call {
                    None => return,
                    Some(HeartbeatCall::Beat { heartbeat, reply }) => {
                        answer(&broker, &heartbeat, reply, &mut waiting);
                    }
                    Some(HeartbeatCall::Closed { node_id, incarnation }) => {
                        if active_term(&broker).is_some() && node_id != broker.config.node_id {
                            tokio::spawn(probe(Arc::clone(&broker), node_id, incarnation));
                        }
                    }
                }
            }
            Some(_) = confirming.join_next(), if !confirming.is_empty() => {}
        }
        if confirming.is_empty() && !waiting.is_empty() {
            confirming.spawn(confirm(Arc::clone(&broker), mem::take(&mut waiting)));
        }
    }
}

/// A heartbeat to renew once the quorum confirms this controller.
struct Waiting {
    node_id: i32,
    /// How many leadership changes the broker has taken.
    leadership_changes: u64,
    arrived: Instant,
    reply: oneshot::Sender<HeartbeatReply>,
}

fn answer(
    broker: &Arc<Broker>,
    heartbeat: &BrokerHeartbeat,
    reply: oneshot::Sender<HeartbeatReply>,
    waiting: &mut Vec<Waiting>,
) {
    let verdict =
        broker
            .controller
            .judge_heartbeat(active_term(broker), &broker.image(), heartbeat);
    match verdict {
        Verdict::Answer(status) => {
            let _ = reply.send(HeartbeatReply::new(status));
        }
        Verdict::Confirm(leadership_changes) => waiting.push(Waiting {
            node_id: heartbeat.node_id,
            leadership_changes,
            arrived: Instant::now(),
            reply,
        }),
        Verdict::Unfence(incarnation) => {
            let _ = reply.send(HeartbeatReply::new(HeartbeatStatus::Fenced));
            tokio::spawn(unfence(Arc::clone(broker), heartbeat.node_id, incarnation));
        }
    }
}

/// Answers `replies` Renewed if the quorum confirms this node still
/// controls, in the same term, within a lease, the broker has taken every
/// leadership change applied here by then, and no fence of it was decided
/// meanwhile; Behind if it has not taken them (a deposed leader that does
/// not know it yet must not keep its lease); Fenced if it is being fenced;
/// NotController otherwise.
///
/// The confirmation may come from a round of Raft heartbeats begun a
/// little before a heartbeat arrived ([`LivenessConfig::confirmation_max_age`]):
/// three brokers heartbeating ten times a second then share a few rounds
/// instead of sending thirty. No controller elected after that round can
/// have fenced the broker before it, and the broker's lease is renewed
/// from that much before it sent the heartbeat, so it lapses as early as
/// if the round had begun when the heartbeat arrived. What is applied here
/// afterwards includes every change this controller had committed when
/// the heartbeat arrived.
///
/// [`LivenessConfig::confirmation_max_age`]: crate::config::LivenessConfig::confirmation_max_age
async fn confirm(broker: Arc<Broker>, replies: Vec<Waiting>) {
    let term = active_term(&broker);
    let liveness = broker.config.liveness;
    let confirmed = match term {
        Some(_) => tokio::time::timeout(
            liveness.lease(),
            broker
                .metadata
                .confirm_leadership(liveness.confirmation_max_age()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .filter(|_| active_term(&broker) == term),
        None => None,
    };
    let image = broker.image();
    for waiting in replies {
        let reply = broker.controller.reply(&waiting, confirmed, &image);
        let _ = waiting.reply.send(reply);
    }
}

/// The answer to `waiting` once this controller was confirmed by a round
/// begun at `confirmed` (`None`: not confirmed), when `may_renew` says no
/// fence of the broker is under way and `committed` leadership changes are
/// applied here.
fn reply_to(
    waiting: &Waiting,
    confirmed: Option<Instant>,
    may_renew: bool,
    committed: u64,
) -> HeartbeatReply {
    match confirmed {
        None => HeartbeatReply::new(HeartbeatStatus::NotController),
        Some(_) if !may_renew => HeartbeatReply::new(HeartbeatStatus::Fenced),
        Some(_) if waiting.leadership_changes < committed => {
            HeartbeatReply::new(HeartbeatStatus::Behind)
        }
        Some(round_began) => {
            HeartbeatReply::renewed(waiting.arrived.saturating_duration_since(round_began))
        }
    }
}

async fn unfence(broker: Arc<Broker>, node_id: i32, incarnation: u64) {
    let record = Record::UnfenceBroker(UnfenceBroker {
        node_id,
        incarnation,
    });
    match broker.propose(record.into(), BATCH_TIMEOUT).await {
        Ok(_) => tracing::info!(node_id, "unfenced broker: it heartbeats again"),
        Err(error) => tracing::debug!(node_id, %error, "unfencing not committed"),
    }
    let mut state = broker
        .controller
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    state.unfencing.remove(&node_id);
}

#[cfg(test)]
mod tests {
    use keel_raft_metadata::records::SetPartitionLeader;

    use super::*;
    use crate::test_image::{apply, create_topic, partition, register};

    /// Brokers 1 and 2 at incarnation 7; broker 2 led `t`-0 and, stopping,
    /// moved it to 1 (history sequence 1).
    fn moved_off_2() -> MetadataImage {
        let mut image = MetadataImage::default();
        register(&mut image, 1, 7);
        register(&mut image, 2, 7);
        create_topic(
            &mut image,
            "t",
            1,
            vec![partition(0, &[2, 1], 2, &[2, 1])],
            0,
        );
        let moved = SetPartitionLeader {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 1,
            isr: vec![2, 1],
            reason: LeaderChangeReason::ControlledShutdown as i32,
            ..Default::default()
        };
        apply(&mut image, Record::SetPartitionLeader(moved));
        image
    }

    fn candidate(controller: &Controller, term: u64, image: &MetadataImage, id: i32) -> bool {
        let now = controller.now_ms();
        controller
            .state_for(term, image, now)
            .liveness
            .is_candidate(id, now)
    }

    #[test]
    fn a_broker_seen_moving_its_leaderships_off_is_no_candidate_before_it_heartbeats() {
        let controller = Controller::new(Duration::from_secs(10));
        let image = moved_off_2();
        assert!(candidate(&controller, 3, &image, 2));
        let next = controller.note_controlled_shutdowns(3, &image, 1);
        assert_eq!(next, image.next_history_sequence());
        assert!(!candidate(&controller, 3, &image, 2));
        assert!(candidate(&controller, 3, &image, 1));
    }

    #[test]
    fn controlled_shutdowns_already_seen_mark_nobody_again() {
        let controller = Controller::new(Duration::from_secs(10));
        let image = moved_off_2();
        controller.note_controlled_shutdowns(3, &image, image.next_history_sequence());
        assert!(candidate(&controller, 3, &image, 2));
    }

    fn waiting(leadership_changes: u64, arrived: Instant) -> Waiting {
        Waiting {
            node_id: 1,
            leadership_changes,
            arrived,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_lease_renewed_on_an_earlier_confirmation_starts_that_much_earlier() {
        let round_began = Instant::now();
        let arrived = round_began + Duration::from_millis(30);
        let reply = reply_to(&waiting(1, arrived), Some(round_began), true, 1);
        assert_eq!(reply.status(), HeartbeatStatus::Renewed);
        assert_eq!(reply.confirmed_earlier(), Duration::from_millis(30));

        let reply = reply_to(&waiting(1, round_began), Some(arrived), true, 1);
        assert_eq!(reply.status(), HeartbeatStatus::Renewed);
        assert_eq!(
            reply.confirmed_earlier(),
            Duration::ZERO,
            "confirmed after it arrived"
        );
    }

    fn heartbeat(node_id: i32, incarnation: u64, leadership_changes: u64) -> BrokerHeartbeat {
        BrokerHeartbeat {
            node_id,
            incarnation,
            leadership_changes,
            ..Default::default()
        }
    }

    #[test]
    fn a_fence_decided_while_a_heartbeat_waits_for_its_confirmation_renews_nothing() {
        let controller = Controller::new(Duration::from_secs(10));
        let image = moved_off_2();
        let changes = image.next_history_sequence();
        let arrives = || {
            let verdict = controller.judge_heartbeat(Some(3), &image, &heartbeat(1, 7, changes));
            assert!(matches!(verdict, Verdict::Confirm(c) if c == changes));
            waiting(changes, Instant::now())
        };

        let unfenced = arrives();
        let confirmed = Some(Instant::now());
        assert_eq!(
            controller.reply(&unfenced, confirmed, &image).status(),
            HeartbeatStatus::Renewed
        );

        let waits = arrives();
        let now = controller.now_ms();
        controller
            .state_for(3, &image, now)
            .decided_fences(&[1], now);
        assert_eq!(
            controller.reply(&waits, confirmed, &image).status(),
            HeartbeatStatus::Fenced,
            "the fence, decided after the heartbeat arrived, is not committed yet: only the controller knows of it"
        );
        assert!(matches!(
            controller.judge_heartbeat(Some(3), &image, &heartbeat(1, 7, changes)),
            Verdict::Answer(HeartbeatStatus::Fenced)
        ));
    }

    #[test]
    fn only_a_confirmed_controller_renews_a_broker_that_is_not_fenced_nor_behind() {
        let now = Instant::now();
        let status = |confirmed, may_renew, changes| {
            reply_to(&waiting(changes, now), confirmed, may_renew, 2).status()
        };
        assert_eq!(status(None, true, 2), HeartbeatStatus::NotController);
        assert_eq!(status(Some(now), false, 2), HeartbeatStatus::Fenced);
        assert_eq!(status(Some(now), true, 1), HeartbeatStatus::Behind);
        assert_eq!(status(Some(now), true, 2), HeartbeatStatus::Renewed);
    }
}
