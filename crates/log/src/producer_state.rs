//! Idempotent producer state: for each producer id, its epoch and the last
//! few batches it wrote, so a retried batch is recognised and answered with
//! its original offsets instead of being appended twice.
//!
//! Invariant: for every producer, `batches` holds at most
//! [`MAX_CACHED_BATCHES`] entries in sequence order, the newest last; a
//! client keeps at most that many requests in flight, so a retry always
//! matches a cached batch or is out of order.

use std::collections::{HashMap, VecDeque};

use crate::{
    batch::{BatchHeader, increment_sequence},
    error::{LogError, Result},
};

/// Kafka caches the last five batches per producer, matching
/// `max.in.flight.requests.per.connection <= 5` for idempotent producers.
pub const MAX_CACHED_BATCHES: usize = 5;

/// A batch a producer wrote, as its offsets were assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
    last_write_ms: i64,
}

/// The verdict on an incoming batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already in the log.
    Duplicate(ProducerBatch),
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// Decides whether a client batch is new, a duplicate, or refused.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<SequenceCheck> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // Unknown producer: its state may have expired or been removed
            // with old segments, so any sequence starts it afresh.
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                current: entry.epoch,
                received: header.producer_epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    expected: 0,
                    received: header.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = header.last_sequence();
        if let Some(duplicate) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate(*duplicate));
        }
        let expected = entry.batches.back().map_or(header.base_sequence, |b| {
            increment_sequence(b.last_sequence, 1)
        });
        if header.base_sequence != expected {
            return Err(LogError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                received: header.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that is now in the log, offsets assigned.
    pub(crate) fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_write_ms: now_ms,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        });
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
    }

    /// The ids of the producers whose state is still kept (they have not
    /// expired).
    pub(crate) fn producer_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.producers.keys().copied()
    }

    /// Forgets producers that have not written for `expiration_ms`.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, entry| now_ms - entry.last_write_ms < expiration_ms);
    }

    /// Serialises the table, stamped with the log end offset it describes.
    /// Layout: `log_end_offset i64, count u32, producers..., crc32c u32`;
    /// each producer is `id i64, epoch i16, last_write_ms i64, n u8` and `n`
    /// batches of `first_sequence i32, last_sequence i32, base_offset i64,
    /// last_offset i64, max_timestamp i64`.
    pub(crate) fn encode_snapshot(&self, log_end_offset: i64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(log_end_offset.to_be_bytes());
        out.extend((self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend(id.to_be_bytes());
            out.extend(entry.epoch.to_be_bytes());
            out.extend(entry.last_write_ms.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                out.extend(batch.first_sequence.to_be_bytes());
                out.extend(batch.last_sequence.to_be_bytes());
                out.extend(batch.base_offset.to_be_bytes());
                out.extend(batch.last_offset.to_be_bytes());
                out.extend(batch.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` if it is damaged in any way.
    pub(crate) fn decode_snapshot(bytes: &[u8]) -> Option<(i64, Self)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut reader = Reader(body);
        let log_end_offset = reader.i64()?;
        let count = reader.u32()?;
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = reader.i64()?;
            let epoch = reader.i16()?;
            let last_write_ms = reader.i64()?;
            let n = reader.u8()?;
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    base_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                    max_timestamp: reader.i64()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_write_ms,
                },
            );
        }
        reader
            .0
            .is_empty()
            .then_some((log_end_offset, Self { producers }))
    }

    pub(crate) fn clear(&mut self) {
        self.producers.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, sequence: i32, count: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            records_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        let first = header(7, 0, 0, 3, 0);
        assert_eq!(table.check(&first).unwrap(), SequenceCheck::Append);
        table.record(&first, 0);
        let second = header(7, 0, 3, 2, 3);
        assert_eq!(table.check(&second).unwrap(), SequenceCheck::Append);
        table.record(&second, 0);
        let retry = header(7, 0, 0, 3, 99);
        match table.check(&retry).unwrap() {
            SequenceCheck::Duplicate(batch) => assert_eq!(batch.base_offset, 0),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn a_gap_is_out_of_order_and_an_old_epoch_is_fenced() {
        let mut table = ProducerStateTable::default();
        table.record(&header(7, 1, 0, 1, 0), 0);
        assert!(matches!(
            table.check(&header(7, 1, 5, 1, 1)),
            Err(LogError::OutOfOrderSequence { expected: 1, .. })
        ));
        assert!(matches!(
            table.check(&header(7, 0, 1, 1, 1)),
            Err(LogError::InvalidProducerEpoch { current: 1, .. })
        ));
        assert!(matches!(
            table.check(&header(7, 2, 3, 1, 1)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            table.check(&header(7, 2, 0, 1, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            table.record(&header(1, 0, i, 1, i64::from(i)), 0);
        }
        assert!(table.check(&header(1, 0, 0, 1, 0)).is_err());
        assert!(matches!(
            table.check(&header(1, 0, 2, 1, 0)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let mut table = ProducerStateTable::default();
        table.record(&header(1, 3, 0, 2, 0), 10);
        table.record(&header(1, 3, 2, 1, 2), 11);
        table.record(&header(9, 0, 0, 1, 3), 12);
        let bytes = table.encode_snapshot(4);
        let (offset, decoded) = ProducerStateTable::decode_snapshot(&bytes).unwrap();
        assert_eq!(offset, 4);
        assert_eq!(decoded.len(), 2);
        assert!(matches!(
            decoded.check(&header(1, 3, 2, 1, 0)).unwrap(),
            SequenceCheck::Duplicate(ProducerBatch { base_offset: 2, .. })
        ));
        let mut damaged = bytes.clone();
        damaged[10] ^= 1;
        assert!(ProducerStateTable::decode_snapshot(&damaged).is_none());
        assert!(ProducerStateTable::decode_snapshot(&bytes[..3]).is_none());
    }

    #[test]
    fn idle_producers_expire() {
        let mut table = ProducerStateTable::default();
        table.record(&header(1, 0, 0, 1, 0), 1_000);
        table.record(&header(2, 0, 0, 1, 1), 5_000);
        table.expire(6_000, 2_000);
        assert_eq!(table.len(), 1);
    }
}
