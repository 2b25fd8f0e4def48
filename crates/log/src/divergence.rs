//! Where a follower's log stops agreeing with its leader's, decided from
//! leader epochs alone (KIP-101, KIP-279, KIP-320).
//!
//! After a leader change a follower cannot trust its tail: it may hold
//! records of a deposed leader that the new leader never had, at offsets
//! the new leader has filled with other records. Truncating to the high
//! watermark is not the answer (it can drop acknowledged records a replica
//! held but had not yet learnt were committed, and keeps a diverged tail
//! above it). Instead the follower asks the leader where its own latest
//! epoch ends there, through OffsetForLeaderEpoch or the LastFetchedEpoch
//! of a Fetch (v12+, answered by a DivergingEpoch), and compares the
//! answer with its own epoch cache. [`truncation_point`] is that
//! comparison, Kafka's `AbstractFetcherThread.getOffsetTruncationState`.
//!
//! Invariant: the offset returned never exceeds the follower's log end
//! offset, so truncating there never needs data the follower lacks, and it
//! never cuts below the first offset where the two logs may differ.

use crate::epoch_cache::{EpochEntry, end_offset_for};

/// Where to truncate, and whether that settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Truncate the log to this offset (`PartitionLog::truncate_to`).
    pub offset: i64,
    /// `false` when the leader answered with an epoch this follower never
    /// saw: the follower truncated to the end of its own latest epoch below
    /// it and must ask again with its new latest epoch.
    pub complete: bool,
}

/// Decides where a follower truncates given the leader's answer
/// `(leader_epoch, leader_end_offset)` to "where does my latest epoch end"
/// (OffsetForLeaderEpoch, or a Fetch response's DivergingEpoch):
///
/// - end offset undefined (-1): the leader could not say. Kafka falls back
///   to the fetch offset it was about to use, which only the caller knows;
///   this answers the follower's log end offset, which cuts nothing.
/// - epoch undefined (-1) with an end offset: a leader that does not track
///   epochs; truncate to `min(leader_end_offset, follower LEO)`.
/// - Otherwise the follower looks up its own end of `leader_epoch` the way
///   the leader answers (largest own epoch not above it, ending where the
///   next starts, or at the LEO for the latest):
///   - none (its cache is empty, or `leader_epoch` is newer than all of
///     it, which a leader answering the follower's latest epoch never
///     says): `min(leader_end_offset, follower LEO)`, complete;
///   - an older epoch than `leader_epoch`: the follower never saw the
///     leader's epoch; truncate to the end of its own, not complete;
///   - the same epoch: `min(own end, leader_end_offset, follower LEO)`,
///     complete. An epoch older than all the follower's entries counts as
///     the same, ending where its first entry starts.
pub fn truncation_point(
    follower_epochs: &[EpochEntry],
    follower_log_end_offset: i64,
    leader_epoch: i32,
    leader_end_offset: i64,
) -> Truncation {
    let leo = follower_log_end_offset;
    let complete = |offset: i64| Truncation {
        offset,
        complete: true,
    };
    if leader_end_offset < 0 {
        return complete(leo);
    }
    if leader_epoch < 0 {
        return complete(leader_end_offset.min(leo));
    }
    let (own_epoch, own_end) = end_offset_for(follower_epochs, leader_epoch, leo);
    if own_end < 0 {
        complete(leader_end_offset.min(leo))
    } else if own_epoch != leader_epoch {
        Truncation {
            offset: own_end.min(leo),
            complete: false,
        }
    } else {
        complete(own_end.min(leader_end_offset).min(leo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::epochs;

    fn complete(offset: i64) -> Truncation {
        Truncation {
            offset,
            complete: true,
        }
    }

    fn intermediate(offset: i64) -> Truncation {
        Truncation {
            offset,
            complete: false,
        }
    }

    #[test]
    fn the_same_epoch_truncates_to_the_smaller_end() {
        let follower = epochs(&[(0, 0), (2, 10)]);
        // The leader's epoch 2 ended at 15, the follower wrote on to 20.
        assert_eq!(truncation_point(&follower, 20, 2, 15), complete(15));
        // The follower's epoch 0 ends at 10, before the leader's at 12.
        assert_eq!(truncation_point(&follower, 20, 0, 12), complete(10));
        // The leader holds more of the epoch than the follower: no cut.
        assert_eq!(truncation_point(&follower, 20, 2, 30), complete(20));
    }

    #[test]
    fn an_epoch_the_follower_never_saw_truncates_to_the_end_of_its_older_one() {
        // The leader answers epoch 3; the follower's largest epoch not above
        // it is 2, which ends where its epoch 5 starts.
        let follower = epochs(&[(0, 0), (2, 10), (5, 18)]);
        assert_eq!(truncation_point(&follower, 25, 3, 30), intermediate(18));
        // The follower asks again for epoch 2 and learns where it ends.
        let follower = epochs(&[(0, 0), (2, 10)]);
        assert_eq!(truncation_point(&follower, 18, 2, 14), complete(14));
    }

    #[test]
    fn an_epoch_older_than_the_followers_first_ends_where_its_first_starts() {
        // Nothing in the follower's log is known to be of epoch 1 or older.
        let follower = epochs(&[(3, 10), (4, 20)]);
        assert_eq!(truncation_point(&follower, 25, 1, 50), complete(10));
        assert_eq!(truncation_point(&follower, 25, 1, 5), complete(5));
    }

    #[test]
    fn a_follower_without_epochs_trusts_the_leaders_offset() {
        assert_eq!(truncation_point(&[], 25, 3, 12), complete(12));
        assert_eq!(truncation_point(&[], 25, 3, 40), complete(25));
        // An answer newer than every epoch the follower tracks.
        let follower = epochs(&[(0, 0)]);
        assert_eq!(truncation_point(&follower, 25, 2, 12), complete(12));
    }

    #[test]
    fn undefined_answers() {
        let follower = epochs(&[(0, 0), (2, 10)]);
        // A leader that does not track epochs: its offset, capped.
        assert_eq!(truncation_point(&follower, 20, -1, 14), complete(14));
        assert_eq!(truncation_point(&follower, 20, -1, 40), complete(20));
        // A leader that could not say: nothing is cut here.
        assert_eq!(truncation_point(&follower, 20, -1, -1), complete(20));
        assert_eq!(truncation_point(&follower, 20, 2, -1), complete(20));
    }

    #[test]
    fn never_past_the_followers_log_end() {
        let follower = epochs(&[(0, 0), (2, 10)]);
        for (epoch, end) in [(0, 100), (1, 100), (2, 100), (7, 100), (-1, 100)] {
            assert!(truncation_point(&follower, 20, epoch, end).offset <= 20);
        }
    }
}
