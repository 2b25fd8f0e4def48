//! The state machine side of the core: committed entries applied in
//! order, exactly once (`applied` only grows), a snapshot restored in
//! place of the entries it covers, and a snapshot taken every
//! `snapshot_entries` applied entries or when storage asks for one.

use prost::Message as _;
use protobuf::Message as _;
use raft::{
    StateRole,
    eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Snapshot},
};

use super::{CoreError, CoreEvent, ProposalContext, RaftCore};
use crate::{
    image::ApplyError,
    records::MetadataRecord,
    snapshot::{self, Members},
};

impl RaftCore {
    pub(super) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        events: &mut Vec<CoreEvent>,
    ) -> Result<(), CoreError> {
        if !self.config.apply_delay.is_zero() && entries.iter().any(|e| !e.data.is_empty()) {
            std::thread::sleep(self.config.apply_delay);
        }
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let origin = ProposalContext::decode(entry.context.as_ref())
                        .ok()
                        .filter(|c| c.origin != 0);
                    let result = MetadataRecord::decode(entry.data.as_ref())
                        .map_err(|_| ApplyError::Undecodable)
                        .and_then(|record| self.image.apply(&record, entry.term));
                    events.push(CoreEvent::Applied {
                        index: entry.index,
                        term: entry.term,
                        origin,
                        result,
                    });
                }
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(raft::Error::CodecError)?;
                    self.apply_conf_change(
                        entry.index,
                        &change,
                        &change.context,
                        change.node_id,
                        change.get_change_type(),
                        events,
                    )?;
                }
                EntryType::EntryConfChangeV2 => {
                    let change = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(raft::Error::CodecError)?;
                    let (node_id, kind) = change
                        .get_changes()
                        .first()
                        .map_or((0, ConfChangeType::AddNode), |c| {
                            (c.node_id, c.get_change_type())
                        });
                    let context = change.context.clone();
                    self.apply_conf_change(entry.index, &change, &context, node_id, kind, events)?;
                }
            }
            self.applied = entry.index;
            self.applied_term = entry.term;
            if self.raw.raft.state == StateRole::Leader && entry.term == self.raw.raft.term {
                self.leader_ready = true;
            }
        }
        Ok(())
    }

    pub(super) fn restore(&mut self, snapshot: &Snapshot) -> Result<(), CoreError> {
        let (image, members) = snapshot::decode(&snapshot.data)?;
        self.image = image;
        self.peers = members.peers;
        self.rejoined = members.rejoined;
        self.applied = snapshot.get_metadata().index;
        self.applied_term = snapshot.get_metadata().term;
        self.snapshot_index = self.applied;
        Ok(())
    }

    pub(super) fn maybe_snapshot(&mut self) -> Result<(), CoreError> {
        let due = self.applied >= self.snapshot_index + self.config.snapshot_entries;
        let requested = self.storage.snapshot_requested() && self.applied > self.snapshot_index;
        if due || requested {
            let members = Members {
                peers: self.peers.clone(),
                rejoined: self.rejoined.clone(),
            };
            let data = snapshot::encode(&self.image, &members);
            self.storage.create_snapshot(self.applied, data)?;
            self.snapshot_index = self.applied;
        }
        Ok(())
    }
}
