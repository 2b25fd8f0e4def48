//! Record-level view of a stored batch, for the rare paths that need more
//! than the batch header (ListOffsets by timestamp, validating an
//! uncompressed batch's records, checking keys for compacted topics, the
//! cleaner). Compressed batches are decompressed with
//! streaming decoders under a fixed output cap, so a small batch that
//! inflates to gigabytes is answered at batch granularity instead of
//! exhausting memory.
//!
//! Each record is `length varint, attributes i8, timestamp_delta varlong,
//! offset_delta varint, key_length varint, ...` and only those leading
//! fields are read.

use std::{borrow::Cow, io::Read, ops::ControlFlow};

use bytes::Buf;

use crate::{
    batch::{BATCH_HEADER_LEN, BatchHeader},
    error::{BatchError, RecordFault, Rejections},
};

/// The most a single batch may decompress to here.
const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
/// The framing snappy-java (xerial) puts before Kafka's snappy blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Offset, timestamp and key presence of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordPosition {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    /// The record's key is null (key length -1).
    pub(crate) null_key: bool,
}

/// Calls `visit` for each record of a complete batch, in order, until it
/// breaks. Returns `None` if the batch cannot be decoded within the cap.
pub(crate) fn visit_records(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(RecordPosition) -> ControlFlow<()>,
) -> Option<()> {
    let records = records_payload(batch, header)?;
    walk_records(&mut &records[..], header, &mut visit);
    Some(())
}

/// The uncompressed records of a complete batch, or `None` if they cannot
/// be had within the cap. An uncompressed batch's are borrowed, not copied.
pub(crate) fn records_payload<'a>(batch: &'a [u8], header: &BatchHeader) -> Option<Cow<'a, [u8]>> {
    let payload = batch.get(BATCH_HEADER_LEN..header.total_len())?;
    match header.compression_codec() {
        0 => Some(Cow::Borrowed(payload)),
        codec => decompress(codec, payload).map(Cow::Owned),
    }
}

/// Checks that every record of a producer's batch has a key, as a compacted
/// topic requires, and names each one that has none. Compressed batches are
/// inflated under the cap; one that cannot be, or whose records cannot all
/// be walked, is refused as well, since its keys cannot be checked.
pub(crate) fn check_keys(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let records = records_payload(batch, header).ok_or(BatchError::UndecodableRecords)?;
    let mut walked = 0i32;
    let mut without_key = Rejections::default();
    walk_records(
        &mut &records[..],
        header,
        &mut |position: RecordPosition| {
            if position.null_key {
                without_key.add(walked, RecordFault::MissingKey);
            }
            walked += 1;
            ControlFlow::Continue(())
        },
    );
    if walked != header.records_count {
        return Err(BatchError::UndecodableRecords);
    }
    without_key.into_result()
}

/// Checks that every record of a producer's batch has a timestamp at most
/// `before_ms` behind and `after_ms` ahead of `now_ms` (a record without
/// one, -1, is not checked), and names each one that has not. An
/// uncompressed batch's records are always looked at. A compressed one is
/// inflated for it only when its header says its newest record is too new
/// or the topic has a bound behind (by default it has none): otherwise its
/// header's newest timestamp is trusted, as the log trusts it for the time
/// index, rather than inflate every compressed batch on the produce path.
pub(crate) fn check_timestamps(
    batch: &[u8],
    header: &BatchHeader,
    now_ms: i64,
    before_ms: i64,
    after_ms: i64,
) -> Result<(), BatchError> {
    let (lowest, highest) = (
        now_ms.saturating_sub(before_ms),
        now_ms.saturating_add(after_ms),
    );
    let compressed = header.compression_codec() != 0;
    if compressed && before_ms == i64::MAX && header.max_timestamp <= highest {
        return Ok(());
    }
    let records = records_payload(batch, header).ok_or(BatchError::UndecodableRecords)?;
    let mut walked = 0i32;
    let mut outside = Rejections::default();
    walk_records(
        &mut &records[..],
        header,
        &mut |position: RecordPosition| {
            let timestamp = position.timestamp;
            if timestamp != -1 && !(lowest..=highest).contains(&timestamp) {
                let reason = RecordFault::TimestampOutOfRange {
                    timestamp,
                    lowest,
                    highest,
                };
                outside.add(walked, reason);
            }
            walked += 1;
            ControlFlow::Continue(())
        },
    );
    if walked != header.records_count {
        return Err(BatchError::UndecodableRecords);
    }
    outside.into_result()
}

/// Compressed batches are not inflated on append; their record count is
/// only held to this many records per payload byte, which no real codec
/// exceeds for Kafka records but keeps a tiny batch from claiming billions.
const MAX_RECORDS_PER_COMPRESSED_BYTE: usize = 4096;

/// Checks a producer's batch: an uncompressed one record by record, a
/// compressed one by the plausibility of its record count.
pub(crate) fn check_records(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let payload_len = header.total_len().saturating_sub(BATCH_HEADER_LEN);
    let plausible = if header.compression_codec() == 0 {
        records_are_consistent(batch, header)
    } else {
        (header.records_count.max(0) as usize)
            <= payload_len.max(1) * MAX_RECORDS_PER_COMPRESSED_BYTE
    };
    if plausible {
        Ok(())
    } else {
        Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        })
    }
}

/// Checks that an uncompressed batch holds exactly `records_count` records
/// with offset deltas 0, 1, 2, ... and nothing after them.
pub(crate) fn records_are_consistent(batch: &[u8], header: &BatchHeader) -> bool {
    let Some(payload) = batch.get(BATCH_HEADER_LEN..header.total_len()) else {
        return false;
    };
    payload_is_consistent(payload, header)
}

/// [`records_are_consistent`] for a batch's records already inflated.
pub(crate) fn payload_is_consistent(mut records: &[u8], header: &BatchHeader) -> bool {
    let mut expected = 0i64;
    let mut consistent = true;
    walk_records(&mut records, header, &mut |position: RecordPosition| {
        if position.offset - header.base_offset != expected {
            consistent = false;
            return ControlFlow::Break(());
        }
        expected += 1;
        ControlFlow::Continue(())
    });
    consistent && expected == i64::from(header.records_count) && !records.has_remaining()
}

/// Inflates a compressed payload of codec `codec` (the batch attributes'
/// low bits) to at most [`MAX_DECOMPRESSED_BYTES`].
pub(crate) fn decompress(codec: i16, payload: &[u8]) -> Option<Vec<u8>> {
    match codec {
        1 => read_capped(flate2::read::GzDecoder::new(payload)),
        2 => snappy(payload),
        3 => read_capped(lz4::Decoder::new(payload).ok()?),
        4 => read_capped(zstd::stream::read::Decoder::new(payload).ok()?),
        _ => None,
    }
}

fn read_capped(reader: impl Read) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_DECOMPRESSED_BYTES).then_some(out)
}

/// Kafka's snappy: xerial-framed blocks, or a raw snappy block without the
/// framing, as the Java client also accepts.
fn snappy(payload: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut block = |compressed: &[u8], out: &mut Vec<u8>| -> Option<()> {
        let len = snap::raw::decompress_len(compressed).ok()?;
        if out.len() + len > MAX_DECOMPRESSED_BYTES {
            return None;
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder.decompress(compressed, &mut out[start..]).ok()?;
        Some(())
    };
    if !payload.starts_with(XERIAL_MAGIC) {
        block(payload, &mut out)?;
        return Some(out);
    }
    let mut rest = payload.get(XERIAL_HEADER_LEN..)?;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let compressed = rest.get(4..4usize.checked_add(len)?)?;
        block(compressed, &mut out)?;
        rest = &rest[4 + len..];
    }
    Some(out)
}

fn walk_records(
    records: &mut &[u8],
    header: &BatchHeader,
    visit: &mut impl FnMut(RecordPosition) -> ControlFlow<()>,
) {
    for _ in 0..header.records_count {
        let Some(length) = read_varint(records) else {
            return;
        };
        let Ok(length) = usize::try_from(length) else {
            return;
        };
        if length > records.remaining() {
            return;
        }
        let (mut record, rest) = records.split_at(length);
        *records = rest;
        if record.remaining() < 1 {
            return;
        }
        record.advance(1); // attributes, unused since magic v2
        let (Some(timestamp_delta), Some(offset_delta), Some(key_length)) = (
            read_varint(&mut record),
            read_varint(&mut record),
            read_varint(&mut record),
        ) else {
            return;
        };
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.saturating_add(timestamp_delta)
        };
        let position = RecordPosition {
            offset: header.base_offset.saturating_add(offset_delta),
            timestamp,
            null_key: key_length < 0,
        };
        if visit(position).is_break() {
            return;
        }
    }
}

/// Reads a zigzag-encoded varint of up to 64 bits.
fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        batch::{assign_offset_and_epoch, validate_client_batch},
        testing::batch,
    };

    #[test]
    fn visits_every_record_with_its_offset_and_timestamp() {
        let mut bytes = batch(3, 1_000);
        assign_offset_and_epoch(&mut bytes, 10, 0);
        let header = validate_client_batch(&bytes).unwrap();
        let mut seen = Vec::new();
        visit_records(&bytes, &header, |p| {
            seen.push((p.offset, p.timestamp));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec![(10, 1_000), (11, 1_001), (12, 1_002)]);
    }

    #[test]
    fn every_codec_is_walked_and_a_lying_record_count_is_caught() {
        use kafka_protocol::records::Compression;

        use crate::testing::{BatchSpec, build_batch};
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = build_batch(&BatchSpec {
                records: 20,
                compression,
                ..BatchSpec::default()
            });
            let header = validate_client_batch(&bytes).unwrap();
            let mut count = 0;
            visit_records(&bytes, &header, |_| {
                count += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(count, 20, "{compression:?}");
        }
        let bytes = batch(3, 0);
        let header = validate_client_batch(&bytes).unwrap();
        assert!(records_are_consistent(&bytes, &header));
        let lying = BatchHeader {
            records_count: 2,
            last_offset_delta: 1,
            ..header
        };
        assert!(!records_are_consistent(&bytes, &lying));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![0u8; MAX_DECOMPRESSED_BYTES + 1];
        let compressed = zstd::encode_all(&zeros[..], 19).unwrap();
        assert!(compressed.len() < 100_000);
        assert!(decompress(4, &compressed).is_none());
    }

    #[test]
    fn varints_decode_negative_and_multi_byte_values() {
        assert_eq!(read_varint(&mut &[0x01][..]), Some(-1));
        assert_eq!(read_varint(&mut &[0xac, 0x02][..]), Some(150));
        assert_eq!(read_varint(&mut &[0x80][..]), None);
    }
}
