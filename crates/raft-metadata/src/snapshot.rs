//! The state machine's snapshot: the metadata image and the Raft peers'
//! addresses at one applied index, encoded with prost. A lagging or new
//! node installs it instead of replaying compacted log entries.

use std::collections::BTreeMap;

use prost::Message;
use uuid::Uuid;

use crate::{
    image::{BrokerInfo, MetadataImage, PartitionInfo, TopicInfo},
    records::{LeadershipChange, PartitionAssignment},
};

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotData {
    #[prost(message, repeated, tag = "1")]
    brokers: Vec<BrokerEntry>,
    #[prost(message, repeated, tag = "2")]
    topics: Vec<TopicEntry>,
    #[prost(int64, tag = "3")]
    next_producer_id: i64,
    #[prost(message, repeated, tag = "4")]
    history: Vec<LeadershipChange>,
    #[prost(uint64, tag = "5")]
    next_history_sequence: u64,
    #[prost(btree_map = "uint64, string", tag = "6")]
    peers: BTreeMap<u64, String>,
    #[prost(string, optional, tag = "7")]
    cluster_id: Option<String>,
    /// Ids of deleted topics, 16 bytes each, oldest first.
    #[prost(bytes = "vec", repeated, tag = "8")]
    deleted_topics: Vec<Vec<u8>>,
    /// Nodes taken back after losing their Raft log, with the nonce of the
    /// run that was taken back (see `core::membership`).
    #[prost(btree_map = "uint64, uint64", tag = "9")]
    rejoined: BTreeMap<u64, u64>,
    /// How many leadership changes the history keeps; 0 for the default.
    #[prost(uint32, tag = "10")]
    history_retention: u32,
    /// Consumer groups' config overrides, by group.
    #[prost(btree_map = "string, message", tag = "11")]
    group_configs: BTreeMap<String, GroupConfigEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GroupConfigEntry {
    #[prost(btree_map = "string, string", tag = "1")]
    configs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BrokerEntry {
    #[prost(int32, tag = "1")]
    node_id: i32,
    #[prost(string, tag = "2")]
    host: String,
    #[prost(int32, tag = "3")]
    port: i32,
    #[prost(string, optional, tag = "4")]
    rack: Option<String>,
    #[prost(uint64, tag = "5")]
    incarnation: u64,
    #[prost(bool, tag = "6")]
    fenced: bool,
    #[prost(uint64, optional, tag = "7")]
    max_replicas: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TopicEntry {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "2")]
    id: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    partitions: Vec<PartitionAssignment>,
    #[prost(btree_map = "string, string", tag = "4")]
    configs: BTreeMap<String, String>,
}

/// Why snapshot data could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("snapshot data is damaged: {0}")]
pub struct SnapshotError(String);

/// The Raft group's members as a snapshot carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Every member's cluster address.
    pub peers: BTreeMap<u64, String>,
    /// Nodes taken back after losing their Raft log, with the nonce of the
    /// run that was taken back.
    pub rejoined: BTreeMap<u64, u64>,
}

/// Encodes the image and the members.
pub fn encode(image: &MetadataImage, members: &Members) -> Vec<u8> {
    SnapshotData {
        brokers: image
            .brokers()
            .map(|b| BrokerEntry {
                node_id: b.node_id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                incarnation: b.incarnation,
                fenced: b.fenced,
                max_replicas: b.max_replicas,
            })
            .collect(),
        topics: image
            .topics()
            .map(|t| TopicEntry {
                name: t.name.clone(),
                id: t.id.as_bytes().to_vec(),
                partitions: t.partitions.iter().map(PartitionAssignment::from).collect(),
                configs: t.configs.clone(),
            })
            .collect(),
        next_producer_id: image.next_producer_id(),
        history: image.history().cloned().collect(),
        next_history_sequence: image.next_history_sequence(),
        history_retention: image
            .configured_history_retention()
            .map_or(0, |entries| u32::try_from(entries).unwrap_or(u32::MAX)),
        peers: members.peers.clone(),
        rejoined: members.rejoined.clone(),
        cluster_id: image.cluster_id().map(str::to_string),
        deleted_topics: image
            .deleted_topics()
            .map(|id| id.as_bytes().to_vec())
            .collect(),
        group_configs: image
            .all_group_configs()
            .iter()
            .map(|(group, configs)| {
                (
                    group.clone(),
                    GroupConfigEntry {
                        configs: configs.clone(),
                    },
                )
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes what [`encode`] produced.
pub fn decode(bytes: &[u8]) -> Result<(MetadataImage, Members), SnapshotError> {
    let data = SnapshotData::decode(bytes).map_err(|e| SnapshotError(e.to_string()))?;
    let brokers = data
        .brokers
        .into_iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id,
            host: b.host,
            port: b.port,
            rack: b.rack,
            incarnation: b.incarnation,
            fenced: b.fenced,
            max_replicas: b.max_replicas,
        })
        .collect();
    let topics = data
        .topics
        .into_iter()
        .map(|t| {
            let id = Uuid::from_slice(&t.id).map_err(|e| SnapshotError(e.to_string()))?;
            Ok(TopicInfo {
                name: t.name,
                id,
                partitions: t.partitions.iter().map(PartitionInfo::from).collect(),
                configs: t.configs,
            })
        })
        .collect::<Result<Vec<_>, SnapshotError>>()?;
    let deleted_topics = data
        .deleted_topics
        .iter()
        .map(|id| Uuid::from_slice(id).map_err(|e| SnapshotError(e.to_string())))
        .collect::<Result<Vec<_>, SnapshotError>>()?;
    let mut image = MetadataImage::from_parts(
        data.cluster_id,
        brokers,
        topics,
        data.next_producer_id,
        data.history,
        data.next_history_sequence,
        deleted_topics,
    );
    image.restore_history_retention(
        (data.history_retention > 0)
            .then(|| usize::try_from(data.history_retention).unwrap_or(usize::MAX)),
    );
    image.restore_group_configs(
        data.group_configs
            .into_iter()
            .filter(|(_, entry)| !entry.configs.is_empty())
            .map(|(group, entry)| (group, entry.configs))
            .collect(),
    );
    let members = Members {
        peers: data.peers,
        rejoined: data.rejoined,
    };
    Ok((image, members))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CreateTopic, MetadataRecord, Record, RegisterBroker};

    #[test]
    fn an_image_round_trips() {
        let mut image = MetadataImage::default();
        let records: Vec<MetadataRecord> = vec![
            Record::SetClusterId(crate::records::SetClusterId {
                cluster_id: "c1".into(),
            })
            .into(),
            Record::RegisterBroker(RegisterBroker {
                node_id: 3,
                host: "h".into(),
                port: 1,
                rack: Some("r1".into()),
                incarnation: 8,
                timestamp_ms: 0,
                max_replicas: Some(768),
            })
            .into(),
            Record::RegisterBroker(RegisterBroker {
                node_id: 4,
                host: "h".into(),
                port: 2,
                rack: None,
                incarnation: 1,
                timestamp_ms: 0,
                max_replicas: None,
            })
            .into(),
            Record::CreateTopic(CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(5).as_bytes().to_vec(),
                partitions: vec![PartitionAssignment {
                    partition: 0,
                    replicas: vec![3],
                    leader: 3,
                    leader_epoch: 0,
                    isr: vec![3],
                    partition_epoch: 0,
                    elr: vec![],
                    predecessor_lease_ms: 0,
                    adding_replicas: vec![],
                    removing_replicas: vec![],
                    previous_leader: None,
                }],
                configs: [("retention.ms".to_string(), "1".to_string())].into(),
                timestamp_ms: 1,
                controller: 3,
            })
            .into(),
        ];
        for r in &records {
            image.apply(r, 2).unwrap();
        }
        let retention =
            Record::SetHistoryRetention(crate::records::SetHistoryRetention { entries: 50 });
        image.apply(&retention.into(), 2).unwrap();
        let gone = Record::CreateTopic(CreateTopic {
            name: "gone".into(),
            topic_id: Uuid::from_u128(6).as_bytes().to_vec(),
            ..Default::default()
        });
        image.apply(&gone.into(), 2).unwrap();
        let delete = Record::DeleteTopic(crate::records::DeleteTopic {
            name: "gone".into(),
        });
        image.apply(&delete.into(), 2).unwrap();
        assert!(image.was_deleted(&Uuid::from_u128(6)));
        let group_config = Record::AlterGroupConfig(crate::records::AlterGroupConfig {
            group: "g".into(),
            set: [("consumer.session.timeout.ms".into(), "50000".into())].into(),
            delete: vec![],
        });
        image.apply(&group_config.into(), 2).unwrap();
        let partition = &image.topic("t").unwrap().partitions[0];
        let reassign = crate::image::reassignment::start("t", partition, &[3, 4])
            .unwrap()
            .unwrap();
        image
            .apply(&Record::ChangePartitionReplicas(reassign).into(), 2)
            .unwrap();
        assert!(image.topic("t").unwrap().partitions[0].is_reassigning());
        let members = Members {
            peers: [(1, "127.0.0.1:1".to_string())].into(),
            rejoined: [(2, 77)].into(),
        };
        let (restored, restored_members) = decode(&encode(&image, &members)).unwrap();
        assert_eq!(restored, image);
        assert_eq!(
            restored.group_configs("g").unwrap()["consumer.session.timeout.ms"],
            "50000"
        );
        assert_eq!(restored_members, members);
        assert!(decode(b"\xff\xff").is_err());
    }
}
