//! The files of the Raft log as wholes: writing a new log file, rewriting
//! one of the earlier format, and reading and writing the snapshot file.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::Path,
};

use protobuf::Message as _;
use raft::eraftpb::Snapshot;

use super::{
    LOG_FILE, SNAPSHOT_FILE, StorageError,
    frame::{FILE_HEADER, MAGIC, encode_file_header, encode_frame, legacy_records},
};

pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a new log file holding `body` as its one frame (temporary file,
/// fsync, rename, directory fsync) and opens it for appending.
pub(super) fn write_log_file(dir: &Path, body: &[u8]) -> Result<(File, u64, u64), StorageError> {
    let path = dir.join(LOG_FILE);
    let tmp = dir.join(format!("{LOG_FILE}.tmp"));
    let file_id = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut buf = encode_file_header(file_id);
    encode_frame(&mut buf, file_id, FILE_HEADER as u64, body).map_err(io_error(&path))?;
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&buf)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    let log = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    Ok((log, file_id, buf.len() as u64))
}

/// Rewrites a log of the format before file headers and frames in the
/// current one (a new file, fsynced, renamed over the old), so a node keeps
/// its votes and entries across the upgrade; `None` if `raw` is not such a
/// log.
pub(super) fn migrate_legacy(
    dir: &Path,
    raw: &[u8],
) -> Result<Option<(File, Vec<u8>)>, StorageError> {
    if raw.starts_with(&MAGIC) || MAGIC.starts_with(raw) {
        return Ok(None);
    }
    let Some(body) = legacy_records(raw) else {
        return Ok(None);
    };
    let path = dir.join(LOG_FILE);
    tracing::info!(path = %path.display(), "rewriting the raft log in the current format");
    let (log, _, _) = write_log_file(dir, &body)?;
    let mut migrated = Vec::new();
    (&log).read_to_end(&mut migrated).map_err(io_error(&path))?;
    Ok(Some((log, migrated)))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

pub(super) fn read_snapshot(path: &Path) -> Result<Snapshot, StorageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (crc, payload) = bytes
        .split_at_checked(4)
        .ok_or_else(|| corrupt("too short"))?;
    if crc32c::crc32c(payload).to_be_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Snapshot::parse_from_bytes(payload).map_err(|e| corrupt(&e.to_string()))
}

pub(super) fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<(), StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let payload = snapshot
        .write_to_bytes()
        .map_err(|e| StorageError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&crc32c::crc32c(&payload).to_be_bytes())
        .and_then(|()| file.write_all(&payload))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}
