//! A topic's `compression.type` other than `producer`: the leader re-encodes
//! a producer's batch whose codec differs into the topic's codec, as Kafka
//! does, and stores a batch already in it as sent. Only the records'
//! compression changes: offsets, timestamps, producer id, epoch and
//! sequences, keys, values and headers stay as the producer sent them.
//! Snappy is written in the xerial framing Kafka's Java clients use.

use std::io::Write;

use crate::{
    batch::{self, BATCH_HEADER_LEN, BatchHeader},
    error::BatchError,
    records::{payload_is_consistent, records_payload},
};

/// The codecs of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Uncompressed = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

/// The codec a topic stores batches in, and its level (`None`: the codec's
/// default, as Kafka's `compression.<codec>.level` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicCompression {
    pub codec: Codec,
    pub level: Option<i32>,
}

const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's block size.
const XERIAL_BLOCK: usize = 32 * 1024;

/// The batch re-encoded in `target`, or `None` if it is in it already.
pub(crate) fn recompress(
    batch: &[u8],
    header: &BatchHeader,
    target: TopicCompression,
) -> Result<Option<Vec<u8>>, BatchError> {
    if header.compression_codec() == target.codec as i16 {
        return Ok(None);
    }
    let records = records_payload(batch, header).ok_or(BatchError::UndecodableRecords)?;
    // Re-encoded, the records are what the log stores: they must be the
    // consistent run an uncompressed batch is held to, as Kafka checks
    // every record it recompresses.
    if !payload_is_consistent(&records, header) {
        return Err(BatchError::InvalidRecordCount {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let payload = compress(target, &records)
        .map_err(|e| BatchError::Recompression(format!("{:?}: {e}", target.codec)))?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + payload.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&payload);
    batch::set_codec(&mut out, target.codec as i16);
    Ok(Some(out))
}

fn compress(target: TopicCompression, records: &[u8]) -> std::io::Result<Vec<u8>> {
    match target.codec {
        Codec::Uncompressed => Ok(records.to_vec()),
        Codec::Gzip => {
            let level = target
                .level
                .and_then(|l| u32::try_from(l).ok())
                .map_or_else(flate2::Compression::default, flate2::Compression::new);
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(records)?;
            encoder.finish()
        }
        Codec::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK) {
                let compressed = encoder.compress_vec(block).map_err(std::io::Error::other)?;
                let len = u32::try_from(compressed.len()).map_err(std::io::Error::other)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let level = target
                .level
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or(9);
            let mut encoder = lz4::EncoderBuilder::new()
                .level(level)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            encoder.write_all(records)?;
            let (out, finished) = encoder.finish();
            finished.map(|()| out)
        }
        Codec::Zstd => zstd::stream::encode_all(records, target.level.unwrap_or(3)),
    }
}
