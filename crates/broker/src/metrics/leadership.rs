//! Leadership metrics counted as this node applies the history: leader
//! changes by reason, and how long this broker's leaderships lasted. The
//! history itself is bounded, so neither can be counted at scrape time.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Mutex, PoisonError},
};

use keel_raft_metadata::{MetadataImage, records::LeaderChangeReason};

/// The reasons a partition's leader changes, as the history labels them.
const REASONS: [LeaderChangeReason; 8] = [
    LeaderChangeReason::TopicCreated,
    LeaderChangeReason::BrokerFailure,
    LeaderChangeReason::PartitionStall,
    LeaderChangeReason::ControlledShutdown,
    LeaderChangeReason::PreferredRebalance,
    LeaderChangeReason::Manual,
    LeaderChangeReason::Unclean,
    LeaderChangeReason::Reassignment,
];

/// Upper bounds of the tenure buckets, in seconds: a leadership that lasts
/// seconds is flapping; one that lasts days is the normal case.
const TENURE_BUCKETS: [f64; 8] = [
    1.0, 10.0, 60.0, 600.0, 3_600.0, 21_600.0, 86_400.0, 604_800.0,
];

/// Leader changes by reason and this broker's leadership tenures.
#[derive(Debug, Default)]
pub struct Transitions(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// The history sequence the next change will have; `None` until the
    /// first image, whose history happened before this process started.
    next_sequence: Option<u64>,
    by_reason: BTreeMap<i32, u64>,
    /// When this broker took the leadership of each partition it leads,
    /// as the history dates it (ms since the Unix epoch).
    led_since_ms: HashMap<(String, i32), i64>,
    /// Ended leaderships of this broker, per tenure bucket (not
    /// cumulative), with their count and total length.
    tenures: [u64; TENURE_BUCKETS.len()],
    tenure_count: u64,
    tenure_sum_ms: i64,
}

impl Transitions {
    /// Counts the changes `image` records that were not counted yet; those
    /// giving broker `node` a leadership or taking one from it date its
    /// tenures. The first image's history happened before this process:
    /// it only dates the leaderships `node` holds.
    pub fn observe(&self, image: &MetadataImage, node: i32) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(last) = image.history().next_back() else {
            return;
        };
        let next = last.sequence + 1;
        let first_image = counts.next_sequence.is_none();
        let from = counts.next_sequence.unwrap_or(0);
        let new: Vec<_> = image
            .history()
            .rev()
            .take_while(|c| c.sequence >= from)
            .collect();
        for change in new.into_iter().rev() {
            if !first_image {
                *counts.by_reason.entry(change.reason).or_default() += 1;
            }
            let key = (change.topic.clone(), change.partition);
            if change.previous_leader == node {
                if let Some(since) = counts.led_since_ms.remove(&key) {
                    if !first_image {
                        counts.end_tenure(change.timestamp_ms - since);
                    }
                }
            }
            if change.new_leader == node {
                counts.led_since_ms.insert(key, change.timestamp_ms);
            }
        }
        counts.next_sequence = Some(next);
    }

    pub fn render(&self, out: &mut String) {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        super::labelled_counter(
            out,
            "keel_leader_transitions_total",
            "Partition leader changes this node applied, by reason.",
            "reason",
            REASONS.map(|reason| {
                let count = counts.by_reason.get(&(reason as i32)).copied().unwrap_or(0);
                (reason.label(), count)
            }),
        );
        let name = "keel_leadership_tenure_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long this broker's partition leaderships lasted, counted as they end.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (count, bound) in counts.tenures.iter().zip(TENURE_BUCKETS) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = counts.tenure_count;
        let sum = counts.tenure_sum_ms as f64 / 1e3;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
        );
    }
}

impl Counts {
    fn end_tenure(&mut self, lasted_ms: i64) {
        let lasted_ms = lasted_ms.max(0);
        let seconds = lasted_ms as f64 / 1e3;
        if let Some(bucket) = TENURE_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.tenures[bucket] += 1;
        }
        self.tenure_count += 1;
        self.tenure_sum_ms = self.tenure_sum_ms.saturating_add(lasted_ms);
    }
}

#[cfg(test)]
mod tests {
    use keel_raft_metadata::{Record, records::SetPartitionLeader};

    use super::*;
    use crate::test_image::{apply, create_topic, partition, register};

    fn move_to(image: &mut MetadataImage, leader: i32, leader_epoch: i32, at_ms: i64) {
        let change = SetPartitionLeader {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch,
            isr: vec![1, 2],
            reason: LeaderChangeReason::BrokerFailure as i32,
            timestamp_ms: at_ms,
            ..Default::default()
        };
        apply(image, Record::SetPartitionLeader(change));
    }

    #[test]
    fn tenures_and_reasons_count_from_the_first_image_on() {
        let mut image = MetadataImage::default();
        for node_id in [1, 2] {
            register(&mut image, node_id, 1);
        }
        let partitions = vec![partition(0, &[1, 2], 1, &[1, 2])];
        create_topic(&mut image, "t", 1, partitions, 1_000);
        let transitions = Transitions::default();
        // Started while leading since 1,000: dated, but not counted.
        transitions.observe(&image, 1);
        move_to(&mut image, 2, 1, 31_000);
        move_to(&mut image, 1, 2, 32_000);
        move_to(&mut image, 2, 3, 32_500);
        transitions.observe(&image, 1);
        transitions.observe(&image, 1);
        let mut out = String::new();
        transitions.render(&mut out);
        assert!(
            out.contains("keel_leader_transitions_total{reason=\"broker_failure\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("keel_leader_transitions_total{reason=\"topic_created\"} 0"),
            "{out}"
        );
        // 30 s and 0.5 s as leader.
        assert!(
            out.contains("keel_leadership_tenure_seconds_bucket{le=\"1\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("keel_leadership_tenure_seconds_bucket{le=\"10\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("keel_leadership_tenure_seconds_bucket{le=\"60\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("keel_leadership_tenure_seconds_sum 30.5"),
            "{out}"
        );
        assert!(
            out.contains("keel_leadership_tenure_seconds_count 2"),
            "{out}"
        );
    }
}
