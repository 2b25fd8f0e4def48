//! The election policy: given a partition whose leader must change, who
//! leads next and with which ISR.
//!
//! Candidates, in Kafka 4.1's order: live members of the ISR; if none, live
//! Eligible Leader Replicas (KIP-966: they left the ISR while it was below
//! min.insync.replicas, so they hold every committed record); if none and
//! the topic allows unclean election, any live replica (records may be
//! lost). Among the candidates of a class: the preferred replica (first in
//! the assignment), then the one whose log reaches furthest, then the lowest
//! id.
//!
//! A broker is live if the caller says so (registered, unfenced, holding a
//! session); the leader being replaced never is.

use keel_raft_metadata::PartitionInfo;

/// Where the new leader came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Isr,
    EligibleLeaderReplicas,
    /// Outside the ISR and ELR: records the others held may be lost.
    Unclean,
}

/// The decision for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    Leader {
        leader: i32,
        /// The new ISR: the live members of the old one, or the new leader
        /// alone when it came from outside the ISR.
        isr: Vec<i32>,
        /// The candidates it was chosen among.
        eligible: Vec<i32>,
        source: Source,
    },
    /// Nobody may lead: the partition goes offline (leader -1) until a
    /// candidate comes back.
    Offline,
}

/// Chooses the next leader of `partition`, replacing `failed` (its current
/// leader, or -1). `is_live` says whether a broker may lead; `log_end_offset`
/// is what the controller last heard of a replica's log end, if anything.
pub fn elect(
    partition: &PartitionInfo,
    failed: i32,
    is_live: impl Fn(i32) -> bool,
    log_end_offset: impl Fn(i32) -> Option<i64>,
    unclean_allowed: bool,
) -> Election {
    let usable = |id: &i32| *id != failed && is_live(*id);
    let isr: Vec<i32> = partition.isr.iter().copied().filter(usable).collect();
    let classes = [
        (Source::Isr, isr.clone()),
        (
            Source::EligibleLeaderReplicas,
            partition.elr.iter().copied().filter(usable).collect(),
        ),
        (
            Source::Unclean,
            if unclean_allowed {
                partition.replicas.iter().copied().filter(usable).collect()
            } else {
                Vec::new()
            },
        ),
    ];
    for (source, candidates) in classes {
        let Some(leader) = best(partition, &candidates, &log_end_offset) else {
            continue;
        };
        let isr = match source {
            Source::Isr => isr,
            Source::EligibleLeaderReplicas | Source::Unclean => vec![leader],
        };
        return Election::Leader {
            leader,
            isr,
            eligible: candidates,
            source,
        };
    }
    Election::Offline
}

/// The preferred replica if it is a candidate, else the candidate whose log
/// reaches furthest, ties to the lowest id.
fn best(
    partition: &PartitionInfo,
    candidates: &[i32],
    log_end_offset: &impl Fn(i32) -> Option<i64>,
) -> Option<i32> {
    let preferred = partition.replicas.first().copied();
    if let Some(preferred) = preferred.filter(|p| candidates.contains(p)) {
        return Some(preferred);
    }
    candidates
        .iter()
        .copied()
        .max_by_key(|&id| (log_end_offset(id).unwrap_or(-1), std::cmp::Reverse(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[i32], leader: i32, isr: &[i32], elr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            partition: 0,
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 4,
            isr: isr.to_vec(),
            partition_epoch: 9,
            elr: elr.to_vec(),
            predecessor_lease_ms: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
            previous_leader: None,
        }
    }

    fn live(ids: &'static [i32]) -> impl Fn(i32) -> bool {
        move |id| ids.contains(&id)
    }

    fn nothing_known(_: i32) -> Option<i64> {
        None
    }

    #[test]
    fn the_preferred_replica_takes_over_when_it_is_in_sync_and_live() {
        let p = partition(&[2, 1, 3], 1, &[1, 2, 3], &[]);
        let election = elect(&p, 1, live(&[2, 3]), |id| Some(100 - i64::from(id)), false);
        assert_eq!(
            election,
            Election::Leader {
                leader: 2,
                isr: vec![2, 3],
                eligible: vec![2, 3],
                source: Source::Isr,
            }
        );
    }

    #[test]
    fn otherwise_the_most_caught_up_then_the_lowest_id() {
        let p = partition(&[1, 2, 3, 4], 1, &[1, 2, 3, 4], &[]);
        let leo = |id: i32| match id {
            3 => Some(120),
            2 | 4 => Some(110),
            _ => None,
        };
        let leader = |e: Election| match e {
            Election::Leader { leader, .. } => leader,
            Election::Offline => -1,
        };
        assert_eq!(leader(elect(&p, 1, live(&[2, 3, 4]), leo, false)), 3);
        assert_eq!(leader(elect(&p, 1, live(&[2, 4]), leo, false)), 2);
        assert_eq!(leader(elect(&p, 1, live(&[4, 2]), nothing_known, false)), 2);
    }

    #[test]
    fn the_failed_leader_and_dead_members_are_never_chosen_nor_kept_in_sync() {
        let p = partition(&[1, 2, 3], 1, &[1, 2, 3], &[]);
        // Broker 1 still looks live (its session has not lapsed yet) but is
        // the one being replaced, and 3 is dead.
        let election = elect(&p, 1, live(&[1, 2]), nothing_known, false);
        assert_eq!(
            election,
            Election::Leader {
                leader: 2,
                isr: vec![2],
                eligible: vec![2],
                source: Source::Isr,
            }
        );
    }

    #[test]
    fn eligible_leader_replicas_come_after_the_isr() {
        // The ISR shrank to the leader alone below min ISR: 2 and 3 hold
        // every committed record.
        let p = partition(&[1, 2, 3], 1, &[1], &[3, 2]);
        let election = elect(&p, 1, live(&[2, 3]), |id| Some(i64::from(id)), false);
        assert_eq!(
            election,
            Election::Leader {
                leader: 3,
                isr: vec![3],
                eligible: vec![3, 2],
                source: Source::EligibleLeaderReplicas,
            }
        );
    }

    #[test]
    fn without_a_candidate_the_partition_goes_offline_unless_unclean_is_allowed() {
        let p = partition(&[1, 2, 3], 1, &[1], &[]);
        assert_eq!(
            elect(&p, 1, live(&[2, 3]), nothing_known, false),
            Election::Offline
        );
        let election = elect(&p, 1, live(&[2, 3]), |id| Some(i64::from(10 * id)), true);
        assert_eq!(
            election,
            Election::Leader {
                leader: 3,
                isr: vec![3],
                eligible: vec![2, 3],
                source: Source::Unclean,
            }
        );
        assert_eq!(
            elect(&p, 1, live(&[]), nothing_known, true),
            Election::Offline
        );
    }
}
