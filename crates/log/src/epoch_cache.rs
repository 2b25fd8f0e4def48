//! The leader epoch cache: for each leader epoch, the first offset written
//! in it. It answers OffsetForLeaderEpoch, which a follower or a consumer
//! uses after a leader change to find where its copy diverges.
//!
//! Invariant: entries are strictly increasing in both epoch and start
//! offset. The file `leader-epoch-checkpoint` holds them in Kafka's text
//! format (version line, count line, then `epoch offset` lines) and is
//! replaced atomically on every change.

use std::path::{Path, PathBuf};

use crate::{checkpoint::write_atomically, error::Result};

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint; unreadable lines are dropped, which at worst
    /// makes the cache answer more conservatively.
    pub(crate) fn open(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        let entries = std::fs::read_to_string(&path)
            .map(|text| parse(&text))
            .unwrap_or_default();
        Self { path, entries }
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than
    /// every epoch seen so far.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return Ok(());
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()
    }

    /// Kafka's `endOffsetFor` on this cache (see [`end_offset_for`]).
    pub(crate) fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        end_offset_for(&self.entries, requested, log_end_offset)
    }

    /// Forgets epochs that start at or after `end_offset` (log truncation).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() == before {
            return Ok(());
        }
        self.persist()
    }

    /// Moves the start of the oldest kept epoch to `start_offset` and drops
    /// epochs wholly below it (log start offset moved).
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let Some(containing) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return Ok(());
        };
        if self.entries[containing].start_offset == start_offset && containing == 0 {
            return Ok(());
        }
        self.entries.drain(..containing);
        self.entries[0].start_offset = start_offset;
        self.persist()
    }

    /// Forgets every epoch (the log was emptied and restarts elsewhere).
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.entries.clear();
        self.persist()
    }

    fn persist(&self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        write_atomically(&self.path, text.as_bytes())
    }
}

/// Kafka's `endOffsetFor` over `entries` of a log ending at
/// `log_end_offset`: the largest epoch not above `requested` and the offset
/// where the next epoch starts (the log end offset for the latest epoch).
/// An epoch older than every entry answers with itself and the first
/// entry's start, since the log holds nothing of it. `(-1, -1)` when the
/// epoch is unknown or newer than anything in the log.
pub(crate) fn end_offset_for(
    entries: &[EpochEntry],
    requested: i32,
    log_end_offset: i64,
) -> (i32, i64) {
    if requested < 0 {
        return (-1, -1);
    }
    if entries.last().map(|e| e.epoch) == Some(requested) {
        return (requested, log_end_offset);
    }
    let higher = entries.iter().find(|e| e.epoch > requested);
    let floor = entries.iter().rev().find(|e| e.epoch <= requested);
    match (floor, higher) {
        (_, None) => (-1, -1),
        (None, Some(higher)) => (requested, higher.start_offset),
        (Some(floor), Some(higher)) => (floor.epoch, higher.start_offset),
    }
}

fn parse(text: &str) -> Vec<EpochEntry> {
    let mut entries: Vec<EpochEntry> = Vec::new();
    for line in text.lines().skip(2) {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(offset)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(epoch), Ok(start_offset)) = (epoch.parse(), offset.parse()) else {
            continue;
        };
        let increasing = entries
            .last()
            .is_none_or(|last| epoch > last.epoch && start_offset > last.start_offset);
        if increasing {
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::open(dir.path());
        for &(epoch, offset) in entries {
            cache.assign(epoch, offset).unwrap();
        }
        (dir, cache)
    }

    #[test]
    fn end_offset_follows_kafka_semantics() {
        let (_dir, cache) = cache_with(&[(1, 0), (3, 100), (5, 250)]);
        assert_eq!(cache.end_offset_for(5, 300), (5, 300));
        assert_eq!(cache.end_offset_for(3, 300), (3, 250));
        assert_eq!(cache.end_offset_for(4, 300), (3, 250));
        assert_eq!(cache.end_offset_for(0, 300), (0, 0));
        assert_eq!(cache.end_offset_for(6, 300), (-1, -1));
        assert_eq!(cache.end_offset_for(-1, 300), (-1, -1));
    }

    #[test]
    fn survives_reopen_and_ignores_stale_epochs() {
        let (dir, mut cache) = cache_with(&[(0, 0), (2, 10)]);
        cache.assign(1, 20).unwrap();
        let reopened = LeaderEpochCache::open(dir.path());
        assert_eq!(
            reopened.entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 10
                }
            ]
        );
    }

    #[test]
    fn truncation_from_both_ends() {
        let (_dir, mut cache) = cache_with(&[(0, 0), (2, 10), (4, 20)]);
        cache.truncate_from_end(20).unwrap();
        assert_eq!(cache.latest_epoch(), Some(2));
        cache.truncate_from_start(15).unwrap();
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 15
            }]
        );
    }
}
