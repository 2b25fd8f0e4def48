//! Partition directories on disk: the `partition.metadata` file that
//! names what each holds (topic, topic id, partition), and how a directory
//! this broker does not host is got out of the way. Deleting renames the
//! directory at once (`-delete`) and removes it in the background, so a
//! partition of the same name can be created right away and a crash
//! mid-removal leaves only a renamed directory to finish; a stray is
//! renamed (`-stray`) and kept for the operator. When each is done is
//! `ReplicaManager`'s call (see the parent module).

use std::{
    fs,
    path::{Path, PathBuf},
};

use keel_log::{LogError, write_atomically};
use keel_raft_metadata::MetadataImage;
use uuid::Uuid;

const PARTITION_METADATA: &str = "partition.metadata";
pub(super) const DELETE_SUFFIX: &str = "-delete";
pub(super) const STRAY_SUFFIX: &str = "-stray";

/// What a partition directory says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirIdentity {
    pub(super) topic: String,
    pub(super) topic_id: Uuid,
    pub(super) partition: i32,
}

/// Every directory of `data_dir` that names a partition and was not set
/// aside (for deletion or as a stray).
pub(super) fn partition_directories(data_dir: &Path) -> Vec<(PathBuf, DirIdentity)> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            !name.ends_with(DELETE_SUFFIX) && !name.ends_with(STRAY_SUFFIX)
        })
        .filter_map(|entry| {
            let path = entry.path();
            let identity = read_identity(&path)?;
            Some((path, identity))
        })
        .collect()
}

/// Removes what deletions interrupted by a crash left behind.
pub(super) fn remove_interrupted_deletions(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(DELETE_SUFFIX) {
            remove_in_background(entry.path());
        }
    }
}

pub(super) fn read_identity(dir: &Path) -> Option<DirIdentity> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let mut topic = None;
    let mut topic_id = None;
    let mut partition = None;
    for line in text.lines() {
        match line.split_once(": ") {
            Some(("topic", v)) => topic = Some(v.to_string()),
            Some(("topic_id", v)) => topic_id = Uuid::parse_str(v).ok(),
            Some(("partition", v)) => partition = v.parse().ok(),
            _ => {}
        }
    }
    Some(DirIdentity {
        topic: topic?,
        topic_id: topic_id?,
        partition: partition?,
    })
}

pub(super) fn write_identity(dir: &Path, identity: &DirIdentity) -> Result<(), LogError> {
    if read_identity(dir).as_ref() == Some(identity) {
        return Ok(());
    }
    let text = format!(
        "version: 0\ntopic: {}\ntopic_id: {}\npartition: {}\n",
        identity.topic, identity.topic_id, identity.partition
    );
    write_atomically(&dir.join(PARTITION_METADATA), text.as_bytes())
}

/// Gets a directory this broker does not host out of the way, if it may be
/// judged: deleted if the image says its topic id was deleted; otherwise,
/// once the broker has caught up with the quorum (`caught_up`), moved aside
/// as stray and reported with `why` it is not hosted; otherwise left where
/// it is. Returns whether it was judged (and so moved).
pub(super) fn dispose(
    dir: &Path,
    identity: &DirIdentity,
    image: &MetadataImage,
    caught_up: bool,
    why: &str,
) -> bool {
    if image.was_deleted(&identity.topic_id) {
        delete(dir, identity, "its topic was deleted");
        return true;
    }
    if !caught_up {
        return false;
    }
    if let Some(stray) = rename_aside(dir, STRAY_SUFFIX) {
        tracing::warn!(
            dir = %dir.display(),
            kept_at = %stray.display(),
            topic = identity.topic,
            topic_id = %identity.topic_id,
            partition = identity.partition,
            reason = why,
            "moved aside a partition log this broker does not host; its records are kept \
             there until an operator removes the directory"
        );
    }
    true
}

/// Deletes a partition's directory: renamed at once, removed in the
/// background.
pub(super) fn delete(dir: &Path, identity: &DirIdentity, reason: &str) {
    tracing::info!(
        dir = %dir.display(),
        topic = identity.topic,
        partition = identity.partition,
        reason,
        "deleting a partition log"
    );
    if let Some(doomed) = rename_aside(dir, DELETE_SUFFIX) {
        remove_in_background(doomed);
    }
}

/// Renames `dir` to `<dir>.<uuid><suffix>`, at once, so that a partition
/// of the same name can be created right away.
fn rename_aside(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let name = dir.file_name()?;
    let aside = dir.with_file_name(format!(
        "{}.{}{suffix}",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    match fs::rename(dir, &aside) {
        Ok(()) => Some(aside),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "failed to move a partition directory aside");
            None
        }
    }
}

fn remove_in_background(dir: PathBuf) {
    std::thread::spawn(move || {
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "failed to remove deleted partition");
        }
    });
}
