//! The Kafka v2 RecordBatch header: parsing, validation and the fields the
//! log patches on append.
//!
//! Layout (big-endian), from the start of a batch:
//!
//! ```text
//!  0  base_offset            i64   patched by the log on append
//!  8  batch_length           i32   bytes after this field
//! 12  partition_leader_epoch i32   patched by the log on append
//! 16  magic                  i8    always 2
//! 17  crc                    u32   CRC-32C of bytes 21..end
//! 21  attributes             i16
//! 23  last_offset_delta      i32
//! 27  base_timestamp         i64
//! 35  max_timestamp          i64
//! 43  producer_id            i64
//! 51  producer_epoch         i16
//! 53  base_sequence          i32
//! 57  records_count          i32
//! 61  records...
//! ```
//!
//! The CRC does not cover the base offset or the leader epoch, so the log can
//! assign both without touching the client's payload.

use crate::error::BatchError;

/// Bytes before `batch_length`'s payload: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed RecordBatch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only record format Keel stores.
pub const MAGIC_V2: i8 = 2;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_MASK: i16 = 0x10;
const CONTROL_MASK: i16 = 0x20;

/// The decoded fixed header of one RecordBatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header at the start of `bytes` without checking the CRC.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let header = Self {
            base_offset: read_i64(bytes, 0),
            batch_length: read_i32(bytes, 8),
            partition_leader_epoch: read_i32(bytes, 12),
            magic: bytes[16] as i8,
            crc: read_u32(bytes, CRC_OFFSET),
            attributes: read_i16(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: read_i32(bytes, 23),
            base_timestamp: read_i64(bytes, 27),
            max_timestamp: read_i64(bytes, 35),
            producer_id: read_i64(bytes, 43),
            producer_epoch: read_i16(bytes, 51),
            base_sequence: read_i32(bytes, 53),
            records_count: read_i32(bytes, 57),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if (header.batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength(header.batch_length));
        }
        Ok(header)
    }

    /// Total size of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_MASK != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Adds `delta` to a producer sequence number, wrapping past `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, delta: i32) -> i32 {
    if sequence > i32::MAX - delta {
        delta - (i32::MAX - sequence) - 1
    } else {
        sequence + delta
    }
}

/// Parses and fully validates one batch that a client sent: header, length
/// against the buffer, CRC-32C and the record count.
pub fn validate_client_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_framing(bytes)?;
    if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Parses and validates one batch copied from a leader: header, length
/// against the buffer and CRC-32C. Unlike a client's batch it may hold
/// fewer records than its offset range, even none: the cleaner removes
/// records but keeps each batch's last offset.
pub(crate) fn validate_replicated_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_framing(bytes)?;
    let offsets_in_range = i64::from(header.last_offset_delta) + 1;
    if header.last_offset_delta < 0
        || header.records_count < 0
        || i64::from(header.records_count) > offsets_in_range
    {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

fn validate_framing(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_len() != bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_len(),
            actual: bytes.len(),
        });
    }
    verify_crc(&header, bytes)?;
    Ok(header)
}

/// Checks the CRC-32C of a complete batch against its header.
pub fn verify_crc(header: &BatchHeader, bytes: &[u8]) -> Result<(), BatchError> {
    let end = header.total_len().min(bytes.len());
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..end]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Writes the base offset and partition leader epoch into a batch header
/// (the first [`BATCH_HEADER_LEN`] bytes). Neither is covered by the CRC.
pub fn assign_offset_and_epoch(bytes: &mut [u8], base_offset: i64, leader_epoch: i32) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch header as LogAppendTime stamped with `now_ms` and
/// recomputes the CRC over it and the batch's `records`, as a topic with
/// `message.timestamp.type=LogAppendTime` requires.
pub fn set_log_append_time(header: &mut [u8], records: &[u8], now_ms: i64) {
    let attributes = read_i16(header, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_MASK;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&header[ATTRIBUTES_OFFSET..BATCH_HEADER_LEN]),
        records,
    );
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Marks a complete batch, whose records were just re-encoded, as
/// compressed with `codec`, and sets its length and CRC to match.
pub(crate) fn set_codec(bytes: &mut [u8], codec: i16) {
    let attributes = (read_i16(bytes, ATTRIBUTES_OFFSET) & !COMPRESSION_MASK) | codec;
    bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let batch_length = i32::try_from(bytes.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
    bytes[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites a complete batch's `last_offset_delta` and, for a
/// LogAppendTime batch, its timestamp type and max timestamp, then
/// recomputes the CRC. The cleaner uses it after re-encoding a batch.
pub(crate) fn reseal(bytes: &mut [u8], last_offset_delta: i32, log_append_time: Option<i64>) {
    bytes[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    if let Some(max_timestamp) = log_append_time {
        let attributes = read_i16(bytes, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_MASK;
        bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        bytes[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A batch without records that keeps `header`'s offsets, producer id,
/// epoch and sequence range, uncompressed, both timestamps set to its max
/// timestamp: what Kafka's cleaner leaves of an idempotent producer's last
/// batch so the producer's state can still be rebuilt from the log.
pub(crate) fn empty_batch(header: &BatchHeader) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(BATCH_HEADER_LEN);
    bytes.extend(header.base_offset.to_be_bytes());
    bytes.extend(((BATCH_HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    bytes.extend(header.partition_leader_epoch.to_be_bytes());
    bytes.push(MAGIC_V2 as u8);
    bytes.extend([0u8; 4]);
    bytes.extend((header.attributes & !COMPRESSION_MASK).to_be_bytes());
    bytes.extend(header.last_offset_delta.to_be_bytes());
    bytes.extend(header.max_timestamp.to_be_bytes());
    bytes.extend(header.max_timestamp.to_be_bytes());
    bytes.extend(header.producer_id.to_be_bytes());
    bytes.extend(header.producer_epoch.to_be_bytes());
    bytes.extend(header.base_sequence.to_be_bytes());
    bytes.extend(0i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Splits a buffer of concatenated batches, as a produce request carries
/// them, into whole batches. A trailing partial batch is an error.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let (batches, partial) = split_whole_batches(bytes)?;
    if partial.is_empty() {
        return Ok(batches);
    }
    let needed = if partial.len() < LOG_OVERHEAD {
        LOG_OVERHEAD
    } else {
        LOG_OVERHEAD + read_i32(partial, 8) as usize
    };
    Err(BatchError::Truncated {
        needed,
        available: partial.len(),
    })
}

/// Splits a buffer of concatenated batches into the whole batches and the
/// bytes of a trailing partial one, which a fetch response carries when its
/// size limit cut the last batch.
pub fn split_whole_batches(mut bytes: &[u8]) -> Result<(Vec<&[u8]>, &[u8]), BatchError> {
    let mut batches = Vec::new();
    while bytes.len() >= LOG_OVERHEAD {
        let length = read_i32(bytes, 8);
        if length < 0 {
            return Err(BatchError::InvalidLength(length));
        }
        let total = LOG_OVERHEAD + length as usize;
        if total > bytes.len() {
            break;
        }
        let (batch, rest) = bytes.split_at(total);
        batches.push(batch);
        bytes = rest;
    }
    Ok((batches, bytes))
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::batch;

    #[test]
    fn parses_and_validates_a_well_formed_batch() {
        let bytes = batch(3, 1_000);
        let header = validate_client_batch(&bytes).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(header.total_len(), bytes.len());
    }

    #[test]
    fn rejects_a_flipped_bit_in_the_payload() {
        let mut bytes = batch(2, 0);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            validate_client_batch(&bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let mut bytes = batch(2, 0);
        assign_offset_and_epoch(&mut bytes, 42, 7);
        let header = validate_client_batch(&bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 43);
    }

    #[test]
    fn log_append_time_rewrites_the_timestamp_and_crc() {
        let mut bytes = batch(2, 5);
        let (header, records) = bytes.split_at_mut(BATCH_HEADER_LEN);
        set_log_append_time(header, records, 99);
        let header = validate_client_batch(&bytes).unwrap();
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 99);
    }

    #[test]
    fn rejects_wrong_magic_and_short_buffers() {
        let mut bytes = batch(1, 0);
        bytes[16] = 1;
        assert_eq!(
            BatchHeader::parse(&bytes),
            Err(BatchError::UnsupportedMagic(1))
        );
        assert!(matches!(
            BatchHeader::parse(&bytes[..20]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_a_record_count_that_disagrees_with_the_offset_delta() {
        let mut bytes = batch(2, 0);
        bytes[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_client_batch(&bytes),
            Err(BatchError::InvalidRecordCount { .. })
        ));
    }

    #[test]
    fn splits_concatenated_batches_and_rejects_a_partial_tail() {
        let mut bytes = batch(1, 0);
        bytes.extend(batch(2, 0));
        assert_eq!(split_batches(&bytes).unwrap().len(), 2);
        bytes.truncate(bytes.len() - 3);
        assert!(split_batches(&bytes).is_err());
        let (whole, partial) = split_whole_batches(&bytes).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].len() + partial.len(), bytes.len());
    }

    #[test]
    fn a_replicated_batch_may_hold_fewer_records_than_its_offsets() {
        let mut bytes = batch(3, 10);
        assign_offset_and_epoch(&mut bytes, 40, 2);
        let header = validate_client_batch(&bytes).unwrap();
        let empty = empty_batch(&header);
        assert!(validate_client_batch(&empty).is_err());
        assert_eq!(validate_replicated_batch(&empty).unwrap().last_offset(), 42);
        let mut negative = empty.clone();
        negative[23..27].copy_from_slice(&(-2i32).to_be_bytes());
        let crc = crc32c::crc32c(&negative[ATTRIBUTES_OFFSET..]);
        negative[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_replicated_batch(&negative),
            Err(BatchError::InvalidRecordCount { .. })
        ));
    }

    #[test]
    fn an_empty_batch_keeps_offsets_and_sequences() {
        let mut bytes = batch(3, 10);
        assign_offset_and_epoch(&mut bytes, 40, 2);
        let header = validate_client_batch(&bytes).unwrap();
        let empty = empty_batch(&header);
        let parsed = BatchHeader::parse(&empty).unwrap();
        assert_eq!(parsed.total_len(), empty.len());
        verify_crc(&parsed, &empty).unwrap();
        assert_eq!(parsed.records_count, 0);
        assert_eq!(parsed.last_offset(), 42);
        assert_eq!(parsed.base_sequence, header.base_sequence);
        assert_eq!(parsed.partition_leader_epoch, 2);
    }

    #[test]
    fn sequence_numbers_wrap_like_kafka() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }
}
