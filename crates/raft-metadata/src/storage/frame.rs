//! The frames of `raft.log` (their layout is in the parent module's docs):
//! encoding, reading, and telling a torn final write from damage.
//!
//! # Replay: a torn final write, or damage
//!
//! A crash can tear only the last write, as every earlier one was fsynced
//! before the next began. A torn write may leave any subset of its pages
//! (or 512-byte sectors): its first records complete and a later one not,
//! zeros where the file grew but pages were not written, a later page
//! written while an earlier one was not. Within one write a bad record may
//! thus be followed by a good one, which is why a whole write is one frame
//! with one checksum: either all its records count or none.
//!
//! Replay stops at the first frame at offset p that does not verify and
//! decides:
//!
//! 1. Fewer than 12 bytes left: the header of a torn final write. Cut.
//! 2. The header verifies but the frame runs past the end of the file: the
//!    file grew by less than this write. Cut.
//! 3. The header verifies, the body does not, and the frame ends exactly at
//!    the end of the file: the last write, with pages missing. Cut.
//! 4. The header verifies, the body does not, and bytes follow the frame:
//!    a later write began, so this one had been fsynced. Error.
//! 5. The header does not verify: its length cannot be trusted, so where
//!    the damaged write ends is unknown. If a complete frame (both checksums
//!    hold) starts anywhere after p, a later write was made after this one
//!    was fsynced. Error. Otherwise, if a 512-byte-sector piece of the
//!    header is all zeros (a sector of a torn write that never reached the
//!    disk), everything from p on is the remains of the final write. Cut.
//!    Otherwise (a header damaged in place, with nothing after it to prove
//!    or disprove a later write) the damage may span several fsynced
//!    writes. Error.
//!
//! A frame whose checksums hold but whose records do not decode or do not
//! fit the log is an error too. A cut truncates the file at p and fsyncs
//! it; an error names the file and p (or the record's offset) and leaves
//! the file as it is, and the node does not start.
//!
//! Why this is safe: nothing that precedes a complete later write is ever
//! cut (rules 4 and 5 look for that write; rules 2 and 3 trust a length
//! whose checksum holds and which says nothing follows), so fsynced votes
//! and entries before the final write survive or stop the node. The header
//! checksum covers the file id and the frame's offset, so neither stale
//! blocks of an earlier incarnation of the file (exposed by some file
//! systems after a crash) nor frame-shaped bytes inside a payload pass for
//! a frame. What no format can tell apart without knowing where the last
//! acknowledged write ended: damage confined to the final frame (rule 3,
//! and rule 5 when it hits a zero sector of the header) is taken for a torn
//! write and cut, and a file whose last fsynced writes were lost whole
//! (zeros or a shorter file) replays without them. Responses are sent only
//! after the fsync, so a genuinely torn write was never acknowledged.
//!
use std::path::Path;

use super::StorageError;

pub(super) const MAGIC: [u8; 8] = *b"KEELRAFT";
pub(super) const VERSION: u32 = 1;
pub(super) const FILE_HEADER: usize = 24;
pub(super) const FRAME_HEADER: usize = 12;
pub(super) const RECORD_HEADER: usize = 5;
/// The smallest unit a disk writes whole; a torn write leaves each one
/// either written or as it was (zeros, past the old end of the file).
pub(super) const SECTOR: usize = 512;

pub(super) const KIND_ENTRY: u8 = 1;
pub(super) const KIND_HARD_STATE: u8 = 2;
pub(super) const KIND_CONF_STATE: u8 = 3;
pub(super) const KIND_TRUNCATE: u8 = 4;

pub(super) fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    // A payload over 4 GiB would make its frame too long, which
    // `encode_frame` refuses, so the truncated length is never written.
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(payload);
}

pub(super) fn encode_message(out: &mut Vec<u8>, kind: u8, message: &impl protobuf::Message) {
    // Encoding a well-formed in-memory message into a Vec cannot fail.
    let payload = message.write_to_bytes().unwrap_or_default();
    encode_record(out, kind, &payload);
}

pub(super) fn encode_file_header(file_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER);
    out.extend(MAGIC);
    out.extend(VERSION.to_be_bytes());
    out.extend(file_id.to_be_bytes());
    out.extend(crc32c::crc32c(&out).to_be_bytes());
    out
}

/// The checksum of a frame header: `fields` are its length and body CRC.
pub(super) fn header_crc(file_id: u64, offset: u64, fields: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&file_id.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &offset.to_be_bytes());
    crc32c::crc32c_append(crc, fields)
}

/// Appends to `out` the frame of `body`, which will lie at `offset` of the
/// file `file_id`.
pub(super) fn encode_frame(
    out: &mut Vec<u8>,
    file_id: u64,
    offset: u64,
    body: &[u8],
) -> Result<(), std::io::Error> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len > 0)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a raft log write of {} bytes cannot be framed", body.len()),
            )
        })?;
    let mut fields = [0; 8];
    fields[..4].copy_from_slice(&len.to_be_bytes());
    fields[4..].copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend(fields);
    out.extend(header_crc(file_id, offset, &fields).to_be_bytes());
    out.extend(body);
    Ok(())
}

/// What lies at an offset of the log where a frame should start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// Both checksums hold; the next frame starts at `end`.
    Valid { body: &'a [u8], end: usize },
    /// Fewer bytes than a frame header are left.
    ShortHeader,
    /// The header's checksum does not hold (or it claims an empty body).
    BadHeader,
    /// The header holds but the frame would end past the end of the file.
    PastEnd { end: usize },
    /// The header holds, the body's checksum does not.
    BadBody { end: usize },
}

pub(super) fn read_frame(raw: &[u8], file_id: u64, offset: usize) -> Frame<'_> {
    let Some(header) = raw.get(offset..).and_then(|rest| rest.get(..FRAME_HEADER)) else {
        return Frame::ShortHeader;
    };
    let be = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (len, body_crc, crc) = (be(0) as usize, be(4), be(8));
    if len == 0 || header_crc(file_id, offset as u64, &header[..8]) != crc {
        return Frame::BadHeader;
    }
    let start = offset + FRAME_HEADER;
    let end = start + len;
    match raw.get(start..end) {
        None => Frame::PastEnd { end },
        Some(body) if crc32c::crc32c(body) != body_crc => Frame::BadBody { end },
        Some(body) => Frame::Valid { body, end },
    }
}

/// Whether the damaged frame at `offset` is the remains of a torn final
/// write (`Ok`, with a description for the log) or damage replay must not
/// cut (`Err`, with the reason). See the module docs for the rule.
pub(super) fn torn_or_damaged(raw: &[u8], file_id: u64, offset: usize) -> Result<String, String> {
    let left = raw.len() - offset;
    match read_frame(raw, file_id, offset) {
        Frame::Valid { .. } => Err("a valid frame was taken for a damaged one".into()),
        Frame::ShortHeader => Ok(format!("an incomplete frame header of {left} bytes")),
        Frame::PastEnd { end } => Ok(format!(
            "a frame of {} bytes of which {left} were written",
            end - offset
        )),
        Frame::BadBody { end } if end == raw.len() => Ok(format!(
            "a final frame of {left} bytes whose body fails its checksum"
        )),
        Frame::BadBody { end } => Err(format!(
            "checksum mismatch in the body of a write that {} more bytes follow; \
             records after it were fsynced, refusing to drop them",
            raw.len() - end
        )),
        Frame::BadHeader => {
            if let Some(later) = first_valid_frame(raw, file_id, offset + 1) {
                Err(format!(
                    "checksum mismatch in a frame header, and a complete write follows at \
                     byte {later}; records after it were fsynced, refusing to drop them"
                ))
            } else if header_has_unwritten_sector(raw, offset) {
                Ok(format!(
                    "{left} bytes of an unfinished write (its frame header was not written)"
                ))
            } else {
                Err(format!(
                    "checksum mismatch in a frame header that is not an unwritten (zeroed) \
                     sector; the {left} bytes from here to the end may hold fsynced writes, \
                     refusing to drop them"
                ))
            }
        }
    }
}

/// The offset of the first frame at or after `from` whose checksums hold.
pub(super) fn first_valid_frame(raw: &[u8], file_id: u64, from: usize) -> Option<usize> {
    let last = raw.len().checked_sub(FRAME_HEADER)?;
    (from..=last).find(|&at| matches!(read_frame(raw, file_id, at), Frame::Valid { .. }))
}

/// Whether a sector's share of the frame header at `offset` is all zeros,
/// as a sector of a torn write that never reached the disk reads.
pub(super) fn header_has_unwritten_sector(raw: &[u8], offset: usize) -> bool {
    let end = (offset + FRAME_HEADER).min(raw.len());
    let boundary = (offset / SECTOR + 1) * SECTOR;
    let pieces = if boundary < end {
        [&raw[offset..boundary], &raw[boundary..end]]
    } else {
        [&raw[offset..end], &[][..]]
    };
    pieces
        .iter()
        .any(|piece| !piece.is_empty() && piece.iter().all(|&b| b == 0))
}

/// The file id in the log's header, or why the file is not a log this
/// code reads.
pub(super) fn read_file_header(raw: &[u8], path: &Path) -> Result<u64, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if !raw.starts_with(&MAGIC) && !MAGIC.starts_with(raw) {
        return Err(corrupt(
            "not a Keel Raft log of a known format (no \"KEELRAFT\" header; an earlier \
             format?)"
                .into(),
        ));
    }
    let Some(header) = raw.get(..FILE_HEADER) else {
        return Err(StorageError::Damaged {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "the file is {} bytes, shorter than its {FILE_HEADER}-byte header",
                raw.len()
            ),
        });
    };
    let field = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if crc32c::crc32c(&header[..20]) != field(20) {
        return Err(StorageError::Damaged {
            path: path.to_path_buf(),
            offset: 0,
            reason: "checksum mismatch in the file header".into(),
        });
    }
    let version = field(8);
    if version != VERSION {
        return Err(corrupt(format!(
            "raft log format version {version}, this Keel reads version {VERSION}"
        )));
    }
    Ok(u64::from_be_bytes(
        header[12..20].try_into().unwrap_or_default(),
    ))
}

/// The records of a log in the format before file headers and frames (one
/// `length u32, crc32c u32, kind u8, payload` record after another, with
/// no file header), re-encoded as the body of one frame; `None` if `raw`
/// does not start with such a record. As that format was read, a record
/// that does not verify ends the log: it had no way to tell a torn tail
/// from damage.
pub(super) fn legacy_records(raw: &[u8]) -> Option<Vec<u8>> {
    const LEGACY_HEADER: usize = 8;
    let mut body = Vec::new();
    let mut position = 0;
    while let Some(header) = raw.get(position..position + LEGACY_HEADER) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let start = position + LEGACY_HEADER;
        let Some(record) = raw.get(start..start.saturating_add(len)) else {
            break;
        };
        if len == 0 || crc32c::crc32c(record) != crc {
            break;
        }
        encode_record(&mut body, record[0], &record[1..]);
        position = start + len;
    }
    (position > 0).then_some(body)
}
