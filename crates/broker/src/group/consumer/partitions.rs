//! Sets of partitions by topic id, and the set operations reconciliation
//! is written in.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub(crate) type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

pub(super) fn without_empty_topics(partitions: Partitions) -> Partitions {
    partitions
        .into_iter()
        .filter(|(_, set)| !set.is_empty())
        .collect()
}

pub(super) fn is_subset(a: &Partitions, b: &Partitions) -> bool {
    a.iter()
        .all(|(topic, partitions)| b.get(topic).is_some_and(|held| partitions.is_subset(held)))
}

pub(super) fn intersects(a: &Partitions, b: &Partitions) -> bool {
    a.iter().any(|(topic, partitions)| {
        b.get(topic)
            .is_some_and(|other| !partitions.is_disjoint(other))
    })
}

pub(super) fn difference(a: &Partitions, b: &Partitions) -> Partitions {
    a.iter()
        .filter_map(|(topic, partitions)| {
            let left: BTreeSet<i32> = match b.get(topic) {
                Some(other) => partitions.difference(other).copied().collect(),
                None => partitions.clone(),
            };
            (!left.is_empty()).then_some((*topic, left))
        })
        .collect()
}

pub(super) fn intersection(a: &Partitions, b: &Partitions) -> Partitions {
    a.iter()
        .filter_map(|(topic, partitions)| {
            let both: BTreeSet<i32> = b
                .get(topic)
                .map(|other| partitions.intersection(other).copied().collect())
                .unwrap_or_default();
            (!both.is_empty()).then_some((*topic, both))
        })
        .collect()
}
