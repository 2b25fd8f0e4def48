//! Reading the log: batches from an offset, and lookups by timestamp.

use std::ops::ControlFlow;

use super::PartitionLog;
use crate::{
    error::{LogError, Result},
    read::{ReadMode, ReadSlice},
    records::visit_records,
    segment::{LocatedBatch, Segment},
};

impl PartitionLog {
    /// Whole batches from `offset` up to (excluding) `upper_bound`, at most
    /// `max_bytes` unless `min_one_batch` lets a single larger first batch
    /// through. Reads stop at a segment boundary. `None` when there is
    /// nothing to return.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>> {
        self.read_in(
            offset,
            max_bytes,
            upper_bound,
            min_one_batch,
            ReadMode::MayWait,
        )
    }

    /// [`Self::read`], waiting on the disk only if `mode` allows it: with
    /// [`ReadMode::CachedOnly`] a read that needs a file opened or a page
    /// not cached fails with [`LogError::WouldWait`].
    pub fn read_in(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
        mode: ReadMode,
    ) -> Result<Option<ReadSlice>> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        let upper_bound = upper_bound.min(log_end_offset);
        if offset >= upper_bound {
            return Ok(None);
        }
        let Some(first) = self.locate(offset, mode)? else {
            return Ok(None);
        };
        let (segment, first) = first;
        if first.header.base_offset >= upper_bound {
            return Ok(None);
        }
        let mut len = first.header.total_len();
        if len > max_bytes && !min_one_batch {
            return Ok(None);
        }
        // Held across the walk, so the segment's file opens once.
        let file = segment.file_in(mode)?;
        let mut last_offset = first.header.last_offset();
        let mut current = first;
        while let Some(next) = segment.next_batch_in(&current, mode)? {
            let next_len = next.header.total_len();
            if next.header.base_offset >= upper_bound || len + next_len > max_bytes {
                break;
            }
            len += next_len;
            last_offset = next.header.last_offset();
            current = next;
        }
        Ok(Some(ReadSlice::new(
            file,
            first.position,
            len,
            first.header.base_offset,
            last_offset,
        )))
    }

    /// The segment and batch holding `offset`, or the first batch after it.
    fn locate(&self, offset: i64, mode: ReadMode) -> Result<Option<(&Segment, LocatedBatch)>> {
        let floor = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            if let Some(batch) = segment.find_batch_in(offset, mode)? {
                return Ok(Some((segment, batch)));
            }
        }
        Ok(None)
    }

    /// The first record at or after `timestamp` as `(timestamp, offset)`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            // Held across the walk: an older segment's file opens once.
            let _file = segment.file()?;
            let mut located = segment.find_batch_by_timestamp(timestamp)?;
            while let Some(batch) = located {
                if batch.header.last_offset() >= self.log_start_offset {
                    if let Some(found) =
                        self.first_record_at_or_after(segment, &batch, timestamp)?
                    {
                        return Ok(Some(found));
                    }
                }
                located = segment.next_batch(&batch)?;
            }
        }
        Ok(None)
    }

    fn first_record_at_or_after(
        &self,
        segment: &Segment,
        batch: &LocatedBatch,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let bytes = segment.read_bytes(batch.position, batch.header.total_len())?;
        let mut found = None;
        let decoded = visit_records(&bytes, &batch.header, |record| {
            if record.timestamp >= timestamp && record.offset >= self.log_start_offset {
                found = Some((record.timestamp, record.offset));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if decoded.is_none() && batch.header.max_timestamp >= timestamp {
            // Undecodable payload: the batch as a whole is the best answer.
            let offset = batch.header.base_offset.max(self.log_start_offset);
            return Ok(Some((batch.header.max_timestamp, offset)));
        }
        Ok(found)
    }

    /// The record with the largest timestamp as `(timestamp, offset)`
    /// (ListOffsets with timestamp -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>> {
        let Some(segment) = self
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        let max_timestamp = segment.max_timestamp();
        let Some(batch) = segment.find_batch(segment.offset_of_max_timestamp())? else {
            return Ok(None);
        };
        let found = self.first_record_at_or_after(segment, &batch, max_timestamp)?;
        Ok(found.or(Some((max_timestamp, batch.header.base_offset))))
    }
}
