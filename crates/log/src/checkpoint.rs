//! Small files that must be replaced atomically: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory.

use std::{
    fs::{self, File},
    io::Write,
    path::Path,
};

use crate::error::{LogError, Result};

/// Replaces `path` with `contents` so that a crash leaves either the old or
/// the new contents, never a mix.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| LogError::io("creating", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| LogError::io("renaming into place", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("syncing directory", dir, e))
}

/// Reads a checkpoint holding one decimal i64. A missing or unparsable file
/// yields `None`: the caller falls back to what the segments say.
pub(crate) fn read_offset(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn write_offset(path: &Path, offset: i64) -> Result<()> {
    write_atomically(path, format!("{offset}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_round_trips_and_garbage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        assert_eq!(read_offset(&path), None);
        write_offset(&path, 1234).unwrap();
        assert_eq!(read_offset(&path), Some(1234));
        fs::write(&path, b"12x").unwrap();
        assert_eq!(read_offset(&path), None);
    }
}
