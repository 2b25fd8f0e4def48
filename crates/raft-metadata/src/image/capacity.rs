//! How many partition replicas a broker may host: each registers how many
//! its open-file limit lets it keep open (`RegisterBroker::max_replicas`),
//! and new partitions that would give it more are refused when they are
//! applied, so a broker can always open again what it hosts, however many
//! requests race to create partitions.

use std::collections::BTreeMap;

use super::{ApplyError, MetadataImage};
use crate::records::PartitionAssignment;

impl MetadataImage {
    /// Refuses `added` partitions if one of their brokers would host more
    /// replicas than it registered it can keep open.
    pub fn check_replica_capacity(&self, added: &[PartitionAssignment]) -> Result<(), ApplyError> {
        let mut adding: BTreeMap<i32, u64> = BTreeMap::new();
        for replica in added.iter().flat_map(|p| &p.replicas) {
            *adding.entry(*replica).or_default() += 1;
        }
        for (broker, adding) in adding {
            let Some(max) = self.broker(broker).and_then(|b| b.max_replicas) else {
                continue;
            };
            let hosting = self
                .topics()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.replicas.contains(&broker))
                .count() as u64;
            if hosting + adding > max {
                return Err(ApplyError::ReplicaCapacity {
                    broker,
                    hosting,
                    adding,
                    max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CreateTopic, Record, RegisterBroker};

    fn register(image: &mut MetadataImage, node_id: i32, max_replicas: Option<u64>) {
        let record = Record::RegisterBroker(RegisterBroker {
            node_id,
            host: "h".into(),
            port: 9092,
            incarnation: 1,
            max_replicas,
            ..RegisterBroker::default()
        });
        image.apply(&record.into(), 1).unwrap();
    }

    fn topic(name: &str, id: u128, replicas: &[&[i32]]) -> Record {
        Record::CreateTopic(CreateTopic {
            name: name.into(),
            topic_id: uuid::Uuid::from_u128(id).as_bytes().to_vec(),
            partitions: replicas
                .iter()
                .enumerate()
                .map(|(i, replicas)| PartitionAssignment {
                    partition: i as i32,
                    leader: replicas[0],
                    isr: replicas.to_vec(),
                    replicas: replicas.to_vec(),
                    ..PartitionAssignment::default()
                })
                .collect(),
            ..CreateTopic::default()
        })
    }

    #[test]
    fn a_broker_gets_no_more_replicas_than_it_can_keep_open() {
        let mut image = MetadataImage::default();
        register(&mut image, 1, Some(3));
        register(&mut image, 2, None);
        image
            .apply(&topic("a", 1, &[&[1, 2], &[2, 1]]).into(), 1)
            .unwrap();
        // Broker 1 hosts 2 and may keep 3: one more fits, two do not.
        let refused = image.apply(&topic("b", 2, &[&[1], &[2, 1]]).into(), 1);
        assert_eq!(
            refused,
            Err(ApplyError::ReplicaCapacity {
                broker: 1,
                hosting: 2,
                adding: 2,
                max: 3
            })
        );
        assert!(image.topic("b").is_none());
        // Broker 2 registered no limit.
        image
            .apply(&topic("c", 3, &[&[2], &[2], &[1, 2]]).into(), 1)
            .unwrap();
        assert!(
            image
                .check_replica_capacity(&[PartitionAssignment {
                    replicas: vec![1],
                    ..PartitionAssignment::default()
                }])
                .is_err()
        );
    }
}
