//! What becomes of a batch in a cleaning pass, and re-encoding the records
//! that survive.
//!
//! Each cleanable segment is judged batch by batch against the
//! [`OffsetMap`]:
//! - control and transactional batches are kept untouched (the broker
//!   accepts no transactions, and without aborted-transaction tracking
//!   their records may not shadow others, so they are not in the map
//!   either);
//! - a batch that cannot be decoded within the decompression cap of
//!   [`crate::records`] is kept as is, and its keys are unknown;
//! - a record with a null key is kept; a record is removed when a later
//!   record of its key is in the map; a tombstone (null value) that is the
//!   latest of its key is removed once `now - timestamp >=
//!   delete_retention_ms` and it lies below `complete_below`;
//! - a batch that keeps all its records is copied byte for byte; one that
//!   keeps some is re-encoded by [`reencode`]; one that keeps none is
//!   dropped, except the latest batch of a producer the log tracked at
//!   `begin`, which becomes an empty batch ([`crate::batch::empty_batch`])
//!   so that the producer's sequence can still be rebuilt from the log.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
};

use super::offset_map::OffsetMap;
use crate::{
    batch::{BatchHeader, empty_batch, increment_sequence, reseal, verify_crc},
    records::decompress,
};

/// Decodes a stored batch with the capped decompression.
pub(super) fn decode(bytes: &[u8]) -> Option<RecordSet> {
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(
            |payload: &mut Bytes, compression: Compression| match compression {
                Compression::None => Ok(payload.clone()),
                codec => decompress(codec as i16, payload)
                    .map(Bytes::from)
                    .ok_or_else(|| std::io::Error::other("batch exceeds the cap").into()),
            },
        ),
    )
    .ok()
}

/// Encodes the records that survive of a batch as one batch, or `None` if
/// that is not possible (the caller then keeps the batch as it was).
///
/// The encoder puts records into one batch while `offset - sequence` stays
/// the same, takes the first record's sequence as the base sequence, the
/// first offset as base offset and the last as `base + last_offset_delta`.
/// The decoder numbers record `i` `base_sequence + offset_delta`, so
/// survivors of one batch would already agree; the sequences are set
/// explicitly anyway: the first survivor gets the original base sequence
/// advanced by its offset delta (wrapping as Kafka does), the others follow
/// by offset distance, and a batch without sequence (-1) keeps -1. After
/// encoding, `last_offset_delta` is stretched back to the original last
/// offset, so the batch's last offset and last sequence are unchanged, as
/// Kafka's cleaner leaves them; a LogAppendTime batch gets its timestamp
/// type and max timestamp back, which the encoder does not write; the CRC
/// is recomputed.
pub(super) fn reencode(
    header: &BatchHeader,
    compression: Compression,
    survivors: &mut [Record],
) -> Option<Vec<u8>> {
    let first_offset = survivors.first()?.offset;
    let first_delta = i32::try_from(first_offset - header.base_offset).ok()?;
    let base_sequence = if header.base_sequence < 0 {
        -1
    } else {
        increment_sequence(header.base_sequence, first_delta)
    };
    for record in survivors.iter_mut() {
        let distance = i32::try_from(record.offset - first_offset).ok()?;
        record.sequence = base_sequence.wrapping_add(distance);
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, survivors.iter(), &options).ok()?;
    let mut bytes = buf.to_vec();
    let encoded = BatchHeader::parse(&bytes).ok()?;
    if encoded.total_len() != bytes.len()
        || encoded.base_offset != first_offset
        || usize::try_from(encoded.records_count).ok()? != survivors.len()
    {
        return None;
    }
    let last_offset_delta = i32::try_from(header.last_offset() - first_offset).ok()?;
    let log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
    reseal(&mut bytes, last_offset_delta, log_append_time);
    let sealed = BatchHeader::parse(&bytes).ok()?;
    verify_crc(&sealed, &bytes).ok()?;
    Some(bytes)
}

/// What becomes of one batch.
#[derive(Debug)]
pub(super) enum Verdict {
    Keep,
    Replace { bytes: Vec<u8>, removed: u64 },
    Drop { removed: u64 },
}

pub(super) struct Rules<'a> {
    pub(super) map: &'a OffsetMap,
    pub(super) now_ms: i64,
    pub(super) delete_retention_ms: i64,
    pub(super) live_producers: &'a HashSet<i64>,
}

impl Rules<'_> {
    pub(super) fn judge(&self, bytes: &[u8], header: &BatchHeader) -> Verdict {
        if header.is_control() || header.is_transactional() {
            return Verdict::Keep;
        }
        let Some(set) = decode(bytes) else {
            return Verdict::Keep;
        };
        let total = set.records.len();
        let mut survivors: Vec<Record> = set
            .records
            .into_iter()
            .filter(|record| self.keeps(record, header))
            .collect();
        let removed = (total - survivors.len()) as u64;
        if survivors.is_empty() {
            return match (self.is_last_of_live_producer(header), total) {
                (true, 0) => Verdict::Keep,
                (true, _) => Verdict::Replace {
                    bytes: empty_batch(header),
                    removed,
                },
                (false, _) => Verdict::Drop { removed },
            };
        }
        if removed == 0 {
            return Verdict::Keep;
        }
        match reencode(header, set.compression, &mut survivors) {
            Some(bytes) => Verdict::Replace { bytes, removed },
            None => {
                tracing::warn!(
                    base_offset = header.base_offset,
                    "could not re-encode a batch for compaction; kept it whole"
                );
                Verdict::Keep
            }
        }
    }

    fn keeps(&self, record: &Record, header: &BatchHeader) -> bool {
        let Some(key) = &record.key else {
            return true;
        };
        let latest = self.map.latest.get(key.as_ref()).copied();
        if latest.is_some_and(|latest| latest > record.offset) {
            return false;
        }
        if record.value.is_some() {
            return true;
        }
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            record.timestamp
        };
        let expired = self.now_ms.saturating_sub(timestamp) >= self.delete_retention_ms;
        !(expired && record.offset < self.map.complete_below)
    }

    fn is_last_of_live_producer(&self, header: &BatchHeader) -> bool {
        header.has_producer_id()
            && self.map.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset)
            && self.live_producers.contains(&header.producer_id)
    }
}
