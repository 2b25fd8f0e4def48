//! A segment's log file handle.
//!
//! A segment that takes appends, or holds data not yet flushed, keeps its
//! file open ("pinned"): appends and the next flush's fsync need it, and a
//! flush must never fail to find it. Any other segment opens its file when
//! it is read and closes it when the last reader lets go; readers at the
//! same time share one descriptor. A partition therefore holds one
//! descriptor for its active segment however many segments it has, plus
//! one per segment being read.

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::error::{LogError, Result};

/// Tells files apart: a cleaner's rewrite of a segment is another file.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct SegmentFile {
    path: PathBuf,
    id: u64,
    pinned: Option<Arc<File>>,
    /// The handle readers share while any of them holds it.
    shared: Mutex<Weak<File>>,
}

impl SegmentFile {
    /// `file`, just opened at `path`, kept open until unpinned.
    pub(crate) fn new(path: PathBuf, file: File) -> Self {
        let file = Arc::new(file);
        Self {
            path,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared: Mutex::new(Arc::downgrade(&file)),
            pinned: Some(file),
        }
    }

    /// The file, opened if no one holds it open.
    pub(crate) fn handle(&self) -> Result<Arc<File>> {
        if let Some(file) = &self.pinned {
            return Ok(Arc::clone(file));
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = shared.upgrade() {
            return Ok(file);
        }
        let file = Arc::new(open(&self.path)?);
        *shared = Arc::downgrade(&file);
        Ok(file)
    }

    /// The file if it is open now (pinned, or held by a reader): opening
    /// it may wait on the disk.
    pub(crate) fn open_handle(&self) -> Option<Arc<File>> {
        if let Some(file) = &self.pinned {
            return Some(Arc::clone(file));
        }
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
    }

    /// Keeps the file open from now on.
    pub(crate) fn pin(&mut self) -> Result<()> {
        if self.pinned.is_none() {
            self.pinned = Some(self.handle()?);
        }
        Ok(())
    }

    /// Lets the file close once no reader holds it.
    pub(crate) fn unpin(&mut self) {
        self.pinned = None;
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// Takes `file`, just opened at the same path, in place of the current
    /// one (a rewrite renamed over it), pinned as the current one was.
    pub(crate) fn replace(&mut self, file: File) {
        let pinned = self.is_pinned();
        *self = Self::new(self.path.clone(), file);
        if !pinned {
            self.unpin();
        }
    }

    /// Which file this is; another after [`Self::replace`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens an existing segment file for reading and writing.
pub(crate) fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("opening segment", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether some handle to the file is still open.
    fn is_open(file: &SegmentFile) -> bool {
        file.is_pinned() || file.shared.lock().unwrap().upgrade().is_some()
    }

    #[test]
    fn an_unpinned_file_is_open_only_while_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"records").unwrap();
        let mut file = SegmentFile::new(path.clone(), open(&path).unwrap());
        assert!(Arc::ptr_eq(
            &file.handle().unwrap(),
            &file.handle().unwrap()
        ));

        file.unpin();
        assert!(!is_open(&file));
        let reader = file.handle().unwrap();
        let other_reader = file.handle().unwrap();
        assert!(Arc::ptr_eq(&reader, &other_reader), "readers share one");
        drop(reader);
        assert!(is_open(&file));
        drop(other_reader);
        assert!(!is_open(&file), "closed with its last reader");

        file.pin().unwrap();
        let id = file.id();
        file.replace(open(&path).unwrap());
        assert!(file.is_pinned());
        assert_ne!(file.id(), id);
        file.unpin();
        file.replace(open(&path).unwrap());
        assert!(!is_open(&file));
    }
}
