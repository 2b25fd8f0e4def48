//! The proposals a node has in flight, keyed by request id, and the rule
//! that decides which applied entry completes which of them.
//!
//! Every entry a node proposes (or forwards) carries a [`ProposalContext`]
//! naming the node, this run of it (`incarnation`, a nonce drawn at start)
//! and a request id. Request ids restart with every run, and entries of an
//! earlier run can still be committed and applied after a restart; so an
//! entry completes a proposal only if node, incarnation and request id all
//! match. Anything else applied here is somebody else's business.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::core::ProposalContext;

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// No leader known yet, or it was not ready.
    Waiting,
    /// Proposed to raft-rs on this node as leader.
    Proposed,
    /// Sent to the leader.
    Forwarded(u64),
}

#[derive(Debug)]
pub(crate) struct Pending<T> {
    pub(crate) payload: T,
    pub(crate) deadline: Instant,
    pub(crate) stage: Stage,
}

/// The proposals of one run of one node. `T` is what the caller keeps per
/// proposal (the record and the reply channel).
#[derive(Debug)]
pub(crate) struct Proposals<T> {
    origin: u64,
    incarnation: u64,
    next_request: u64,
    pending: HashMap<u64, Pending<T>>,
}

impl<T> Proposals<T> {
    pub(crate) fn new(origin: u64, incarnation: u64) -> Self {
        Self {
            origin,
            incarnation,
            next_request: 1,
            pending: HashMap::new(),
        }
    }

    /// Registers a proposal; returns the context its entry must carry.
    pub(crate) fn insert(&mut self, payload: T, deadline: Instant) -> ProposalContext {
        let request_id = self.next_request;
        self.next_request += 1;
        self.pending.insert(
            request_id,
            Pending {
                payload,
                deadline,
                stage: Stage::Waiting,
            },
        );
        self.context(request_id)
    }

    pub(crate) fn context(&self, request_id: u64) -> ProposalContext {
        ProposalContext {
            origin: self.origin,
            request_id,
            incarnation: self.incarnation,
        }
    }

    pub(crate) fn get(&self, request_id: u64) -> Option<&Pending<T>> {
        self.pending.get(&request_id)
    }

    pub(crate) fn set_stage(&mut self, request_id: u64, stage: Stage) {
        if let Some(pending) = self.pending.get_mut(&request_id) {
            pending.stage = stage;
        }
    }

    /// The proposal an applied entry completes, if it is one of ours.
    pub(crate) fn complete(&mut self, context: &ProposalContext) -> Option<Pending<T>> {
        if context.origin != self.origin || context.incarnation != self.incarnation {
            return None;
        }
        self.pending.remove(&context.request_id)
    }

    /// A leader's refusal of a forwarded proposal puts it back to waiting,
    /// if it is one of this run's.
    pub(crate) fn rejected(&mut self, request_id: u64, incarnation: u64) {
        if incarnation == self.incarnation {
            self.set_stage(request_id, Stage::Waiting);
        }
    }

    /// Removes the proposals that `pick` selects.
    pub(crate) fn take(&mut self, pick: impl Fn(&Pending<T>) -> bool) -> Vec<Pending<T>> {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| pick(p))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect()
    }

    /// Request ids of the proposals still waiting for a leader.
    pub(crate) fn waiting(&self) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| p.stage == Stage::Waiting)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Pending<T>> + '_ {
        self.pending.drain().map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_entry_of_an_earlier_run_completes_nothing() {
        let deadline = Instant::now();
        let mut earlier = Proposals::new(1, 111);
        let old = earlier.insert("old", deadline);

        // The node restarts; its first proposal gets the same request id.
        let mut now = Proposals::new(1, 222);
        let new = now.insert("new", deadline);
        assert_eq!(old.request_id, new.request_id);

        // The old run's entry is applied after the restart.
        assert!(now.complete(&old).is_none());
        assert_eq!(now.complete(&new).unwrap().payload, "new");
    }

    #[test]
    fn only_this_nodes_entries_complete_and_a_stale_refusal_is_ignored() {
        let deadline = Instant::now();
        let mut proposals = Proposals::new(1, 7);
        let context = proposals.insert((), deadline);
        proposals.set_stage(context.request_id, Stage::Forwarded(2));

        let mut foreign = context;
        foreign.origin = 2;
        assert!(proposals.complete(&foreign).is_none());

        proposals.rejected(context.request_id, 6);
        assert_eq!(
            proposals.get(context.request_id).unwrap().stage,
            Stage::Forwarded(2)
        );
        proposals.rejected(context.request_id, 7);
        assert_eq!(proposals.waiting(), vec![context.request_id]);
        assert!(proposals.complete(&context).is_some());
    }
}
