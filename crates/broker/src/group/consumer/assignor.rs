//! The server-side assignors of the consumer protocol. Both spread each
//! topic's partitions over the members subscribed to it, every member
//! getting its share or one more. `uniform` keeps what a member already
//! had where it can (so a rebalance moves as little as possible) and gives
//! a topic's odd partitions to the members holding the fewest overall, so
//! that many small topics still spread evenly; `range` hands out
//! contiguous ranges in member order, as Kafka's range assignor does.

use std::collections::{BTreeMap, BTreeSet};

use super::{Partitions, TopicShape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// The assignor a client names, as Kafka names them.
    pub(crate) fn named(name: &str) -> Option<Self> {
        match name {
            "uniform" => Some(Self::Uniform),
            "range" => Some(Self::Range),
            _ => None,
        }
    }

    /// The target assignment of every member, given each member's
    /// subscription, the subscribed topics and the previous target.
    pub(crate) fn assign(
        self,
        subscriptions: &BTreeMap<&str, &BTreeSet<String>>,
        topics: &BTreeMap<String, TopicShape>,
        previous: &BTreeMap<String, Partitions>,
    ) -> BTreeMap<String, Partitions> {
        let mut target: BTreeMap<String, Partitions> = subscriptions
            .keys()
            .map(|member| (member.to_string(), Partitions::new()))
            .collect();
        let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, shape) in topics {
            let subscribers: Vec<&str> = subscriptions
                .iter()
                .filter(|(_, topics)| topics.contains(name))
                .map(|(member, _)| *member)
                .collect();
            if subscribers.is_empty() || shape.partitions <= 0 {
                continue;
            }
            let shares = match self {
                Self::Range => range(&subscribers, shape.partitions),
                Self::Uniform => uniform(&subscribers, shape, previous, &totals),
            };
            for (member, partitions) in shares {
                *totals.entry(member).or_default() += partitions.len();
                if !partitions.is_empty() {
                    if let Some(assignment) = target.get_mut(member) {
                        assignment.insert(shape.id, partitions);
                    }
                }
            }
        }
        target
    }
}

/// How many partitions each subscriber gets: `count / n`, and one more for
/// the first `count % n` of them.
fn quotas(subscribers: usize, count: i32) -> (usize, usize) {
    let count = usize::try_from(count).unwrap_or(0);
    (count / subscribers, count % subscribers)
}

fn range<'a>(subscribers: &[&'a str], count: i32) -> Vec<(&'a str, BTreeSet<i32>)> {
    let (base, extra) = quotas(subscribers.len(), count);
    let mut next = 0;
    subscribers
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let take = base + usize::from(i < extra);
            let share = (next..next + take)
                .filter_map(|p| i32::try_from(p).ok())
                .collect();
            next += take;
            (*member, share)
        })
        .collect()
}

fn uniform<'a>(
    subscribers: &[&'a str],
    shape: &TopicShape,
    previous: &BTreeMap<String, Partitions>,
    totals: &BTreeMap<&str, usize>,
) -> Vec<(&'a str, BTreeSet<i32>)> {
    let (base, mut extra) = quotas(subscribers.len(), shape.partitions);
    let mut shares: Vec<(&str, BTreeSet<i32>)> = Vec::with_capacity(subscribers.len());
    let mut taken = BTreeSet::new();
    // Keep what each member had, up to its share; the members keeping the
    // most get the extra partitions first.
    let mut kept: Vec<(&str, Vec<i32>)> = subscribers
        .iter()
        .map(|member| {
            let had = previous
                .get(*member)
                .and_then(|assignment| assignment.get(&shape.id))
                .map(|partitions| {
                    partitions
                        .iter()
                        .copied()
                        .filter(|p| *p < shape.partitions)
                        .collect()
                })
                .unwrap_or_default();
            (*member, had)
        })
        .collect();
    kept.sort_by_key(|(member, had)| (std::cmp::Reverse(had.len()), *member));
    for (member, had) in kept {
        let mut limit = base;
        if had.len() > base && extra > 0 {
            limit += 1;
            extra -= 1;
        }
        let share: BTreeSet<i32> = had.into_iter().take(limit).collect();
        taken.extend(share.iter().copied());
        shares.push((member, share));
    }
    // Hand out the rest to whoever is below its share, fewest first.
    for partition in (0..shape.partitions).filter(|p| !taken.contains(p)) {
        let below: Vec<usize> = (0..shares.len())
            .filter(|i| shares[*i].1.len() < base)
            .collect();
        let candidates = if below.is_empty() {
            if extra == 0 {
                break;
            }
            extra -= 1;
            (0..shares.len())
                .filter(|i| shares[*i].1.len() == base)
                .collect()
        } else {
            below
        };
        let held = |i: usize| totals.get(shares[i].0).copied().unwrap_or(0);
        if let Some(i) = candidates
            .into_iter()
            .min_by_key(|i| (shares[*i].1.len(), held(*i), shares[*i].0))
        {
            shares[i].1.insert(partition);
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn subscriptions<'a>(
        members: &'a [(&'a str, BTreeSet<String>)],
    ) -> BTreeMap<&'a str, &'a BTreeSet<String>> {
        members.iter().map(|(m, t)| (*m, t)).collect()
    }

    fn topic(count: i32) -> (BTreeMap<String, TopicShape>, Uuid) {
        let id = Uuid::from_u128(7);
        (
            BTreeMap::from([(
                "t".to_string(),
                TopicShape {
                    id,
                    partitions: count,
                },
            )]),
            id,
        )
    }

    fn every_partition_once(target: &BTreeMap<String, Partitions>, id: Uuid, count: i32) {
        let mut all: Vec<i32> = target
            .values()
            .flat_map(|a| a.get(&id).into_iter().flatten().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..count).collect::<Vec<_>>());
    }

    #[test]
    fn both_assignors_give_every_partition_to_exactly_one_member_evenly() {
        let t: BTreeSet<String> = ["t".to_string()].into();
        let members = [("a", t.clone()), ("b", t.clone()), ("c", t)];
        let (topics, id) = topic(7);
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let target = assignor.assign(&subscriptions(&members), &topics, &BTreeMap::new());
            every_partition_once(&target, id, 7);
            let sizes: Vec<usize> = target.values().map(|a| a[&id].len()).collect();
            assert_eq!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap(), 1);
        }
    }

    #[test]
    fn uniform_keeps_what_members_had_when_one_joins() {
        let t: BTreeSet<String> = ["t".to_string()].into();
        let (topics, id) = topic(6);
        let pair = [("a", t.clone()), ("b", t.clone())];
        let before = Assignor::Uniform.assign(&subscriptions(&pair), &topics, &BTreeMap::new());
        let trio = [("a", t.clone()), ("b", t.clone()), ("c", t)];
        let after = Assignor::Uniform.assign(&subscriptions(&trio), &topics, &before);
        every_partition_once(&after, id, 6);
        for member in ["a", "b"] {
            assert_eq!(after[member][&id].len(), 2);
            assert!(after[member][&id].is_subset(&before[member][&id]));
        }
    }

    #[test]
    fn uniform_spreads_many_small_topics_evenly() {
        let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let all: BTreeSet<String> = names.iter().cloned().collect();
        let topics: BTreeMap<String, TopicShape> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let shape = TopicShape {
                    id: Uuid::from_u128(i as u128 + 1),
                    partitions: 1,
                };
                (name.clone(), shape)
            })
            .collect();
        let members = [("a", all.clone()), ("b", all)];
        let target = Assignor::Uniform.assign(&subscriptions(&members), &topics, &BTreeMap::new());
        let held = |m: &str| target[m].values().map(BTreeSet::len).sum::<usize>();
        assert_eq!((held("a"), held("b")), (5, 5));
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let only_t: BTreeSet<String> = ["t".to_string()].into();
        let none: BTreeSet<String> = ["other".to_string()].into();
        let members = [("a", only_t), ("b", none)];
        let (topics, id) = topic(3);
        let target = Assignor::Uniform.assign(&subscriptions(&members), &topics, &BTreeMap::new());
        assert_eq!(target["a"][&id].len(), 3);
        assert!(target["b"].is_empty(), "an empty but present assignment");
    }
}
