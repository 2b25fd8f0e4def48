//! Metadata images built record by record, for unit tests.

use keel_raft_metadata::{
    MetadataImage, MetadataRecord, PartitionAssignment, Record,
    records::{CreateTopic, RegisterBroker},
};

/// Applies `record` in term 1; it must apply.
pub(crate) fn apply(image: &mut MetadataImage, record: Record) {
    image.apply(&MetadataRecord::from(record), 1).unwrap();
}

pub(crate) fn register(image: &mut MetadataImage, node_id: i32, incarnation: u64) {
    apply(
        image,
        Record::RegisterBroker(RegisterBroker {
            node_id,
            incarnation,
            ..Default::default()
        }),
    );
}

/// Topic `name` with id `id` and `partitions`, created at `timestamp_ms`.
pub(crate) fn create_topic(
    image: &mut MetadataImage,
    name: &str,
    id: u128,
    partitions: Vec<PartitionAssignment>,
    timestamp_ms: i64,
) {
    apply(
        image,
        Record::CreateTopic(CreateTopic {
            name: name.into(),
            topic_id: uuid::Uuid::from_u128(id).as_bytes().to_vec(),
            partitions,
            timestamp_ms,
            ..Default::default()
        }),
    );
}

/// Partition `partition` on `replicas`, led by `leader`, with `isr`.
pub(crate) fn partition(
    partition: i32,
    replicas: &[i32],
    leader: i32,
    isr: &[i32],
) -> PartitionAssignment {
    PartitionAssignment {
        partition,
        replicas: replicas.to_vec(),
        leader,
        isr: isr.to_vec(),
        ..Default::default()
    }
}
