//! Builders of valid RecordBatches for tests and tools, encoded by the
//! `kafka-protocol` crate as a producer would encode them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Who wrote a batch, for idempotent-producer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// What to put in a batch.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub records: i32,
    pub first_timestamp: i64,
    pub value_len: usize,
    pub producer: Option<ProducerIdentity>,
    pub compression: Compression,
    /// Byte written into every value, so batches can be told apart.
    pub fill: u8,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            records: 1,
            first_timestamp: 0,
            value_len: 8,
            producer: None,
            compression: Compression::None,
            fill: b'v',
        }
    }
}

/// Encodes one batch. Record `i` has timestamp `first_timestamp + i` and
/// key `k{i}`.
pub fn build_batch(spec: &BatchSpec) -> Vec<u8> {
    let value = Bytes::from(vec![spec.fill; spec.value_len]);
    encode(
        spec,
        (0..spec.records).map(|i| (Some(Bytes::from(format!("k{i}"))), Some(value.clone()))),
    )
}

/// Encodes one batch of the given `(key, value)` records, `None` standing
/// for null (a null value is a tombstone). Record `i` has timestamp
/// `first_timestamp + i`; the spec's producer and compression apply, its
/// `records`, `value_len` and `fill` are ignored.
pub fn build_keyed_batch(spec: &BatchSpec, records: &[(Option<&str>, Option<&str>)]) -> Vec<u8> {
    let bytes = |s: Option<&str>| s.map(|s| Bytes::copy_from_slice(s.as_bytes()));
    encode(
        spec,
        records
            .iter()
            .map(|&(key, value)| (bytes(key), bytes(value))),
    )
}

fn encode(
    spec: &BatchSpec,
    records: impl Iterator<Item = (Option<Bytes>, Option<Bytes>)>,
) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence) = spec.producer.map_or((-1, -1, -1), |p| {
        (p.producer_id, p.producer_epoch, p.base_sequence)
    });
    let records: Vec<Record> = records
        .zip(0..)
        .map(|((key, value), i)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            // The encoder groups records whose offset - sequence is constant and
            // takes the first sequence as the batch's base sequence (-1: none).
            sequence: base_sequence.wrapping_add(i),
            timestamp: spec.first_timestamp + i64::from(i),
            key,
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: spec.compression,
    };
    // Encoding plain records into a growable buffer cannot fail.
    if let Err(e) = RecordBatchEncoder::encode(&mut buf, &records, &options) {
        unreachable!("encoding a test batch failed: {e}");
    }
    buf.to_vec()
}

/// An uncompressed batch without producer id.
pub fn batch(records: i32, first_timestamp: i64) -> Vec<u8> {
    build_batch(&BatchSpec {
        records,
        first_timestamp,
        ..BatchSpec::default()
    })
}

/// Leader epoch cache entries from `(epoch, start_offset)` pairs.
pub fn epochs(entries: &[(i32, i64)]) -> Vec<crate::EpochEntry> {
    entries
        .iter()
        .map(|&(epoch, start_offset)| crate::EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}
