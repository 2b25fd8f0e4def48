//! The durable metadata log of a single-node cluster: records appended to
//! one file, fsynced before they are applied, replayed on start.
//!
//! File format: a sequence of frames `length u32, crc32c u32, payload`,
//! big-endian, the payload a prost-encoded [`MetadataRecord`]. A frame that
//! is incomplete or fails its CRC ends the log; it and anything after it are
//! cut off on open (a write torn by a crash was never acknowledged).
//!
//! Invariant: the published image is the result of applying, in order,
//! every record in the file that applied cleanly.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use prost::Message;
use tokio::sync::watch;

use super::{
    image::{ApplyError, MetadataImage},
    records::MetadataRecord,
};

const LOG_FILE: &str = "metadata.log";
const FRAME_HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata change rejected: {0}")]
    Rejected(#[from] ApplyError),
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    file: File,
}

#[derive(Debug)]
pub struct MetadataStore {
    writer: Mutex<Writer>,
    image: watch::Sender<Arc<MetadataImage>>,
}

impl MetadataStore {
    /// Opens the log in `dir`, replaying every intact record.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.join(LOG_FILE),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(io)?;

        let mut image = MetadataImage::default();
        let mut position = 0;
        while let Some((record, len)) = decode_frame(&raw[position..]) {
            // A record that was rejected when proposed was never written;
            // one rejected now would mean the file was edited, so skip it
            // exactly as every replay does.
            let _ = image.apply(&record);
            position += len;
        }
        if position < raw.len() {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = raw.len() - position,
                "cutting a torn tail off the metadata log"
            );
            file.set_len(position as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let (image, _) = watch::channel(Arc::new(image));
        Ok(Self {
            writer: Mutex::new(Writer { path, file }),
            image,
        })
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.borrow())
    }

    /// Notified with every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Validates `record` against the current image, makes it durable and
    /// publishes the image that results. Returns that image.
    pub fn propose(&self, record: MetadataRecord) -> Result<Arc<MetadataImage>, StoreError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = MetadataImage::clone(&self.image.borrow());
        next.apply(&record)?;
        let payload = record.encode_to_vec();
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend(crc32c::crc32c(&payload).to_be_bytes());
        frame.extend(payload);
        let Writer { path, file } = &mut *writer;
        file.write_all(&frame)
            .and_then(|()| file.sync_data())
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let next = Arc::new(next);
        self.image.send_replace(Arc::clone(&next));
        Ok(next)
    }
}

fn decode_frame(bytes: &[u8]) -> Option<(MetadataRecord, usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let record = MetadataRecord::decode(payload).ok()?;
    Some((record, FRAME_HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::{AllocateProducerIds, DeleteTopic, Record};

    fn block(start: i64) -> MetadataRecord {
        Record::AllocateProducerIds(AllocateProducerIds {
            node_id: 1,
            start,
            size: 10,
        })
        .into()
    }

    #[test]
    fn records_survive_reopen_and_rejections_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetadataStore::open(dir.path()).unwrap();
            store.propose(block(0)).unwrap();
            assert!(matches!(
                store.propose(Record::DeleteTopic(DeleteTopic { name: "x".into() }).into()),
                Err(StoreError::Rejected(_))
            ));
            store.propose(block(10)).unwrap();
        }
        let store = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.image().next_producer_id(), 20);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetadataStore::open(dir.path()).unwrap();
            store.propose(block(0)).unwrap();
            store.propose(block(10)).unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.image().next_producer_id(), 10);
        store.propose(block(10)).unwrap();
        drop(store);
        let store = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.image().next_producer_id(), 20);
    }
}
