//! The key map a pass judges records by, and where it ended.
//!
//! An [`OffsetMap`] is built from every batch of the plan below the high
//! watermark: the offset of the latest record of each key, the latest batch
//! of each producer id, and `complete_below`, the offset up to which every
//! data batch was read. Records at or past the high watermark are left out:
//! a follower truncation may still remove them, so they must not cost the
//! committed records they would replace. Control batches add no keys, and
//! neither do transactional ones (without aborted-transaction tracking their
//! records may not shadow others) or batches that cannot be decoded within
//! the decompression cap; these two stop `complete_below` at their base
//! offset.
//!
//! The map keeps a copy of each key up to a budget; once it is spent, the
//! map covers only a prefix of the log (`complete_below` stops at the first
//! record that did not fit), past which nothing is removed.
//!
//! [`MapEnd`] is the last batch read into the map. `complete` checks that it
//! is still in place: if a truncation cut it, records the map counted may be
//! gone, and the pass is dropped.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use super::{
    rules::decode,
    snapshot::{BatchReader, SegmentSnapshot},
};
use crate::{
    batch::{BATCH_HEADER_LEN, BatchHeader},
    error::Result,
    segment::{LocatedBatch, Segment},
};

/// The memory the key map may use before it stops growing.
pub(crate) const OFFSET_MAP_BUDGET: usize = 256 << 20;
/// Bytes a map entry is reckoned to take besides its key.
pub(super) const MAP_ENTRY_OVERHEAD: usize = 48;

/// The latest offset of each key below the high watermark.
#[derive(Debug)]
pub(super) struct OffsetMap {
    pub(super) latest: HashMap<Box<[u8]>, i64>,
    /// Producer id to the base offset of its latest batch.
    pub(super) last_batch_of_producer: HashMap<i64, i64>,
    /// Every data batch below this offset was decoded into the map.
    pub(super) complete_below: i64,
    pub(super) budget_left: usize,
}

impl OffsetMap {
    /// Builds the map from the batches below `high_watermark` of
    /// `segments`, in log order; also returns the last batch it read.
    pub(super) fn build(
        dir: &Path,
        segments: &[SegmentSnapshot],
        high_watermark: i64,
        budget: usize,
    ) -> Result<(Self, Option<MapEnd>)> {
        let mut map = Self {
            latest: HashMap::new(),
            last_batch_of_producer: HashMap::new(),
            complete_below: high_watermark,
            budget_left: budget,
        };
        let mut end: Option<(usize, LocatedBatch)> = None;
        'segments: for (index, segment) in segments.iter().enumerate() {
            let mut reader = BatchReader::new(dir, segment);
            while let Some((batch, bytes)) = reader.next_batch()? {
                if batch.header.base_offset >= high_watermark {
                    break 'segments;
                }
                end = Some((index, batch));
                if !map.add_batch(&batch.header, bytes, high_watermark) {
                    break 'segments;
                }
            }
        }
        let end = end.map(|(index, batch)| MapEnd {
            segment: segments[index].clone(),
            position: batch.position,
            header: batch.header,
        });
        Ok((map, end))
    }

    /// Adds a batch's keys; `false` once the budget is spent.
    fn add_batch(&mut self, header: &BatchHeader, bytes: &[u8], high_watermark: i64) -> bool {
        if header.has_producer_id() {
            self.last_batch_of_producer
                .insert(header.producer_id, header.base_offset);
        }
        if header.is_control() {
            return true;
        }
        let decoded = if header.is_transactional() {
            None
        } else {
            decode(bytes)
        };
        let Some(set) = decoded else {
            self.complete_below = self.complete_below.min(header.base_offset);
            return true;
        };
        for record in set.records.iter().filter(|r| r.offset < high_watermark) {
            let Some(key) = &record.key else { continue };
            if !self.insert(key, record.offset) {
                self.complete_below = self.complete_below.min(record.offset);
                return false;
            }
        }
        true
    }

    /// Records `offset` as the latest of `key`; offsets come in increasing
    /// order. `false` if a new key does not fit the budget.
    pub(super) fn insert(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(latest) = self.latest.get_mut(key) {
            *latest = offset;
            return true;
        }
        let cost = key.len() + MAP_ENTRY_OVERHEAD;
        if cost > self.budget_left {
            return false;
        }
        self.budget_left -= cost;
        self.latest.insert(key.into(), offset);
        true
    }
}

/// Where the key map ended: the last batch it read.
#[derive(Debug)]
pub(super) struct MapEnd {
    segment: SegmentSnapshot,
    position: u64,
    header: BatchHeader,
}

impl MapEnd {
    /// Whether the batch is still in place, in the same file: no truncation
    /// cut it (and with it records the map counted), and its segment was not
    /// deleted or replaced. Reads one batch header.
    pub(super) fn holds(&self, segments: &BTreeMap<i64, Segment>) -> Result<bool> {
        let Some(segment) = segments.get(&self.segment.base_offset) else {
            return Ok(false);
        };
        let len = self.header.total_len() as u64;
        if segment.file_id() != self.segment.file_id || segment.size() < self.position + len {
            return Ok(false);
        }
        let now = segment.read_bytes(self.position, BATCH_HEADER_LEN)?;
        Ok(BatchHeader::parse(&now).is_ok_and(|header| header == self.header))
    }
}
