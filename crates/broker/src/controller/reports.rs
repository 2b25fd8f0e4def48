//! What brokers report of their replicas' logs in their heartbeats, as the
//! controller keeps it: for the election's choice of the most caught-up
//! candidate and for the leadership history.

use std::{collections::HashMap, sync::PoisonError};

use keel_leader_elector::plan::ReplicaProgress;
use keel_raft_metadata::{MetadataImage, heartbeat::PartitionProgress};
use uuid::Uuid;

use crate::broker::Broker;

/// What is known here of `replica`'s log of `partition` of `topic`: this
/// broker's own if it is that replica, else the replica's last report if
/// this node is the controller that heard it.
pub fn replica_log(
    broker: &Broker,
    topic: &str,
    partition: i32,
    replica: i32,
) -> Option<ReplicaProgress> {
    if replica == broker.config.node_id {
        let local = broker.replicas.get(topic, partition)?;
        return Some(ReplicaProgress {
            leader_epoch: local.leader_epoch(),
            log_end_offset: local.log_end_offset(),
            high_watermark: local.high_watermark(),
        });
    }
    let state = broker
        .controller
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    state
        .reports
        .get(&broker.image(), topic, partition, replica)
}

/// Each replica's log as its broker last reported it, by topic, partition
/// and broker. A report counts only for the broker incarnation that made
/// it (a restarted broker's log may have changed) and the topic it was
/// made for (a topic deleted and created again under its name starts
/// afresh).
#[derive(Debug, Default)]
pub(super) struct Reports(HashMap<(String, i32, i32), Report>);

#[derive(Debug, Clone, Copy)]
struct Report {
    incarnation: u64,
    topic_id: Uuid,
    progress: ReplicaProgress,
}

impl Reports {
    /// Takes what `node_id`'s `incarnation` reported; reports on topics
    /// the image does not have are dropped.
    pub(super) fn record(
        &mut self,
        image: &MetadataImage,
        node_id: i32,
        incarnation: u64,
        reported: &[PartitionProgress],
    ) {
        for p in reported {
            let Some(topic) = image.topic(&p.topic) else {
                continue;
            };
            let report = Report {
                incarnation,
                topic_id: topic.id,
                progress: ReplicaProgress {
                    leader_epoch: p.leader_epoch,
                    log_end_offset: p.log_end_offset,
                    high_watermark: p.high_watermark,
                },
            };
            self.0
                .insert((p.topic.clone(), p.partition, node_id), report);
        }
    }

    /// `replica`'s last report of its log of `partition` of `topic`, if its
    /// current incarnation made it about the topic the image has now.
    pub(super) fn get(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        replica: i32,
    ) -> Option<ReplicaProgress> {
        let report = self.0.get(&(topic.to_string(), partition, replica))?;
        current(image, topic, partition, replica, report).then_some(report.progress)
    }

    /// Drops the reports no longer current: of deleted topics and
    /// partitions, and of broker incarnations since replaced.
    pub(super) fn forget_stale(&mut self, image: &MetadataImage) {
        self.0.retain(|(topic, partition, replica), report| {
            current(image, topic, *partition, *replica, report)
        });
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn current(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    replica: i32,
    report: &Report,
) -> bool {
    image.broker(replica).map(|b| b.incarnation) == Some(report.incarnation)
        && image
            .topic(topic)
            .is_some_and(|t| t.id == report.topic_id && t.partition(partition).is_some())
}

#[cfg(test)]
mod tests {
    use keel_raft_metadata::{Record, records::DeleteTopic};

    use super::*;
    use crate::test_image::{apply, create_topic, partition, register};

    fn create(image: &mut MetadataImage, id: u128) {
        create_topic(image, "t", id, vec![partition(0, &[1, 2], 1, &[1, 2])], 0);
    }

    fn report(topic: &str, log_end_offset: i64) -> PartitionProgress {
        PartitionProgress {
            topic: topic.into(),
            partition: 0,
            leader_epoch: 0,
            log_end_offset,
            high_watermark: log_end_offset,
        }
    }

    #[test]
    fn a_report_counts_for_its_broker_incarnation_and_its_topic_only() {
        let mut image = MetadataImage::default();
        register(&mut image, 1, 7);
        register(&mut image, 2, 7);
        create(&mut image, 1);
        let mut reports = Reports::default();
        reports.record(&image, 2, 7, &[report("t", 40), report("gone", 5)]);
        assert_eq!(reports.len(), 1, "a report on an unknown topic is dropped");
        let log_end = |reports: &Reports, image: &MetadataImage| {
            reports.get(image, "t", 0, 2).map(|p| p.log_end_offset)
        };
        assert_eq!(log_end(&reports, &image), Some(40));

        // Broker 2 restarts: its old report no longer counts.
        let mut restarted = image.clone();
        register(&mut restarted, 2, 8);
        assert_eq!(log_end(&reports, &restarted), None);

        // The topic is deleted and created again under its name.
        let mut recreated = image.clone();
        apply(
            &mut recreated,
            Record::DeleteTopic(DeleteTopic { name: "t".into() }),
        );
        create(&mut recreated, 2);
        assert_eq!(log_end(&reports, &recreated), None);

        reports.forget_stale(&image);
        assert_eq!(reports.len(), 1);
        reports.forget_stale(&recreated);
        assert_eq!(reports.len(), 0);
    }
}
