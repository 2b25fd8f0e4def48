//! A topic's `compression.type`: a producer's batch in another codec is
//! stored re-encoded in the topic's, with every record field, the producer
//! id, epoch and sequences and the offsets unchanged; a batch already in
//! it is stored as sent; a batch that outgrows `max.message.bytes` once
//! decompressed is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{open, read_batches};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    Codec, LogConfig, LogError, TopicCompression,
    batch::BatchHeader,
    testing::{BatchSpec, ProducerIdentity, build_batch},
};

const CODECS: [(Compression, Codec); 5] = [
    (Compression::None, Codec::Uncompressed),
    (Compression::Gzip, Codec::Gzip),
    (Compression::Snappy, Codec::Snappy),
    (Compression::Lz4, Codec::Lz4),
    (Compression::Zstd, Codec::Zstd),
];

fn produced(compression: Compression) -> Vec<u8> {
    build_batch(&BatchSpec {
        records: 50,
        first_timestamp: 1_700_000_000_000,
        value_len: 300,
        producer: Some(ProducerIdentity {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 7,
        }),
        compression,
        fill: b'z',
    })
}

/// Every record's fields, as a reader sees them.
fn records(batch: &[u8]) -> Vec<String> {
    let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(batch)).unwrap();
    set.records
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?} {:?} {} {} {}",
                r.offset, r.timestamp, r.key, r.value, r.producer_id, r.producer_epoch, r.sequence
            )
        })
        .collect()
}

#[test]
fn a_batch_is_stored_in_the_topics_codec_with_every_record_as_sent() {
    for (target_compression, target) in CODECS {
        for (source, source_codec) in CODECS {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(
                dir.path(),
                LogConfig {
                    compression: Some(TopicCompression {
                        codec: target,
                        level: None,
                    }),
                    ..LogConfig::default()
                },
            );
            let sent = produced(source);
            // Something before it, so its offsets are the log's own.
            let earlier = build_batch(&BatchSpec {
                records: 50,
                compression: target_compression,
                ..BatchSpec::default()
            });
            log.append_as_leader(&earlier, 0, 0).unwrap();
            let outcome = log.append_as_leader(&sent, 0, 0).unwrap();
            assert_eq!((outcome.base_offset, outcome.last_offset), (50, 99));
            let stored = read_batches(&log, 50).remove(0);
            let header = BatchHeader::parse(&stored).unwrap();
            assert_eq!(
                header.compression_codec(),
                target as i16,
                "{source_codec:?} -> {target:?}"
            );
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (42, 3, 7)
            );
            let mut expected = records(&sent);
            for (record, offset) in expected.iter_mut().zip(50..) {
                // Offsets are the log's; everything else is as sent.
                let rest = record.split_once(' ').unwrap().1.to_string();
                *record = format!("{offset} {rest}");
            }
            assert_eq!(records(&stored), expected, "{source_codec:?} -> {target:?}");
            if source_codec == target {
                // Stored as sent: only the offset and leader epoch differ.
                assert_eq!(stored[16..], sent[16..]);
            }
        }
    }
}

#[test]
fn a_batch_too_large_once_recompressed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sent = produced(Compression::Zstd);
    let mut log = open(
        dir.path(),
        LogConfig {
            compression: Some(TopicCompression {
                codec: Codec::Uncompressed,
                level: None,
            }),
            max_message_bytes: sent.len() * 2,
            ..LogConfig::default()
        },
    );
    assert!(matches!(
        log.append_as_leader(&sent, 0, 0),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_compressed_batch_whose_records_do_not_match_its_header_is_not_recompressed() {
    // Five records behind a header that claims six: the header alone is
    // plausible, and only the records, once inflated, tell.
    let mut five = build_batch(&BatchSpec {
        records: 5,
        compression: Compression::Zstd,
        ..BatchSpec::default()
    });
    five[23..27].copy_from_slice(&5i32.to_be_bytes());
    five[57..61].copy_from_slice(&6i32.to_be_bytes());
    let crc = crc32c::crc32c(&five[21..]);
    five[17..21].copy_from_slice(&crc.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            compression: Some(TopicCompression {
                codec: Codec::Gzip,
                level: None,
            }),
            ..LogConfig::default()
        },
    );
    assert!(matches!(
        log.append_as_leader(&five, 0, 0),
        Err(LogError::Batch(
            keel_log::BatchError::InvalidRecordCount { .. }
        ))
    ));
    assert_eq!(log.log_end_offset(), 0);
}
