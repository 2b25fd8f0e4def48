//! Record-level view of a stored batch, for the rare paths that need more
//! than the batch header (ListOffsets by timestamp). Compressed batches are
//! decompressed on the fly; nothing here is on the produce or fetch path.
//!
//! Each record is `length varint, attributes i8, timestamp_delta varlong,
//! offset_delta varint, ...` and only those leading fields are read.

use std::ops::ControlFlow;

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{BATCH_HEADER_LEN, BatchHeader};

/// Offset and timestamp of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordPosition {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
}

/// Calls `visit` for each record of a complete batch, in order, until it
/// breaks. Returns `None` if the batch cannot be decoded.
pub(crate) fn visit_records(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(RecordPosition) -> ControlFlow<()>,
) -> Option<()> {
    let payload = Bytes::copy_from_slice(batch.get(BATCH_HEADER_LEN..header.total_len())?);
    let mut walk = |records: &mut Bytes| walk_records(records, header, &mut visit);
    let decoded = match header.compression_codec() {
        0 => {
            walk(&mut payload.clone());
            true
        }
        1 => decompress_with::<Gzip>(payload, walk),
        2 => decompress_with::<Snappy>(payload, walk),
        3 => decompress_with::<Lz4>(payload, walk),
        4 => decompress_with::<Zstd>(payload, walk),
        _ => false,
    };
    decoded.then_some(())
}

fn decompress_with<D: Decompressor<Bytes, Buf = Bytes>>(
    mut payload: Bytes,
    walk: impl FnOnce(&mut Bytes),
) -> bool {
    D::decompress(&mut payload, |records| {
        walk(records);
        Ok(())
    })
    .is_ok()
}

fn walk_records(
    records: &mut Bytes,
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
        let mut record = records.split_to(length);
        if record.remaining() < 1 {
            return;
        }
        record.advance(1);
        let (Some(timestamp_delta), Some(offset_delta)) =
            (read_varint(&mut record), read_varint(&mut record))
        else {
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
        };
        if visit(position).is_break() {
            return;
        }
    }
}

/// Reads a zigzag-encoded varint of up to 64 bits.
fn read_varint(buf: &mut Bytes) -> Option<i64> {
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
    fn varints_decode_negative_and_multi_byte_values() {
        assert_eq!(read_varint(&mut Bytes::from_static(&[0x01])), Some(-1));
        assert_eq!(
            read_varint(&mut Bytes::from_static(&[0xac, 0x02])),
            Some(150)
        );
        assert_eq!(read_varint(&mut Bytes::from_static(&[0x80])), None);
    }
}
