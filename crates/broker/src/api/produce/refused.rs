//! Batches an idempotent producer sent on this connection that the broker
//! refused without appending (it did not lead yet, its lease had lapsed,
//! too few replicas were in sync), so that the producer's pipelined next
//! batches are refused the same way.
//!
//! Those next batches find a gap in the producer's sequence, and the gap
//! is the broker's doing, not the client's. Answered
//! OUT_OF_ORDER_SEQUENCE_NUMBER, librdkafka takes them for sequence
//! numbers it skipped and bumps its producer epoch, which renumbers every
//! message it holds for every partition, some of them perhaps written
//! already by a leader that died before it could acknowledge them: those
//! are then written twice. Refused with the same retriable error as the
//! first, they are retried after it, in order. A gap the broker did not
//! cause is still OUT_OF_ORDER_SEQUENCE_NUMBER.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use keel_log::batch::BatchHeader;

/// How long a refusal explains a gap: the pipelined batches behind a
/// refused one arrive within moments; a producer that gave the refused
/// batch up bumps its epoch or goes away.
const VALID_MS: i64 = 10_000;
/// Bound on what one connection remembers.
const MAX_REMEMBERED: usize = 10_000;

/// The first refused sequence, by topic, partition and producer id, with
/// the producer epoch and when it was refused.
#[derive(Debug, Default)]
pub(crate) struct RefusedBatches(Mutex<HashMap<(String, i32, i64), Refused>>);

#[derive(Debug, Clone, Copy)]
struct Refused {
    producer_epoch: i16,
    base_sequence: i32,
    at_ms: i64,
}

impl RefusedBatches {
    /// The batch `header` was refused without being appended.
    pub(crate) fn refused(&self, topic: &str, partition: i32, header: &BatchHeader, now_ms: i64) {
        let mut refused = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.len() >= MAX_REMEMBERED {
            refused.retain(|_, r| now_ms - r.at_ms < VALID_MS);
            if refused.len() >= MAX_REMEMBERED {
                return;
            }
        }
        let key = (topic.to_string(), partition, header.producer_id);
        let entry = Refused {
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            at_ms: now_ms,
        };
        refused
            .entry(key)
            .and_modify(|r| {
                let same_run =
                    r.producer_epoch == entry.producer_epoch && now_ms - r.at_ms < VALID_MS;
                if !same_run || entry.base_sequence < r.base_sequence {
                    *r = entry;
                }
            })
            .or_insert(entry);
    }

    /// The batch `header` was appended (or found to be a duplicate): the
    /// producer's sequence has no gap of the broker's making any more.
    pub(crate) fn appended(&self, topic: &str, partition: i32, header: &BatchHeader) {
        let mut refused = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !refused.is_empty() {
            refused.remove(&(topic.to_string(), partition, header.producer_id));
        }
    }

    /// Whether the gap before `header`'s sequence starts at a batch this
    /// connection refused.
    pub(crate) fn explain_gap(
        &self,
        topic: &str,
        partition: i32,
        header: &BatchHeader,
        now_ms: i64,
    ) -> bool {
        let refused = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        refused
            .get(&(topic.to_string(), partition, header.producer_id))
            .is_some_and(|r| {
                r.producer_epoch == header.producer_epoch
                    && r.base_sequence < header.base_sequence
                    && now_ms - r.at_ms < VALID_MS
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_epoch: i16, base_sequence: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: 7,
            producer_epoch,
            base_sequence,
            records_count: 1,
        }
    }

    #[test]
    fn a_gap_after_a_refused_batch_is_explained_until_it_is_appended() {
        let refused = RefusedBatches::default();
        assert!(
            !refused.explain_gap("t", 0, &header(0, 5), 0),
            "nothing refused"
        );
        refused.refused("t", 0, &header(0, 4), 0);
        assert!(refused.explain_gap("t", 0, &header(0, 5), 10));
        refused.refused("t", 0, &header(0, 5), 10);
        assert!(
            refused.explain_gap("t", 0, &header(0, 6), 20),
            "the first refusal counts"
        );
        assert!(
            !refused.explain_gap("t", 1, &header(0, 5), 20),
            "another partition"
        );
        assert!(
            !refused.explain_gap("t", 0, &header(1, 5), 20),
            "another producer epoch"
        );
        assert!(
            !refused.explain_gap("t", 0, &header(0, 5), VALID_MS),
            "too long ago"
        );
        refused.appended("t", 0, &header(0, 4));
        assert!(!refused.explain_gap("t", 0, &header(0, 6), 30));
    }
}
