//! Authorized operations (KIP-430), as the Metadata, DescribeCluster,
//! DescribeGroups, ConsumerGroupDescribe and DescribeTopicPartitions
//! responses carry them: a bit field with bit `code` set for each ACL
//! operation allowed on the resource. Keel has no authorizer, so, as Kafka
//! without one, every operation a resource type supports is allowed.

/// ACL operation codes (Kafka's `AclOperation`).
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

pub(super) const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DELETE,
    ALTER,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);
pub(super) const GROUP: i32 = bits(&[READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);
pub(super) const CLUSTER: i32 = bits(&[
    CREATE,
    ALTER,
    DESCRIBE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
]);

/// What a response carries where operations were not asked for.
pub(super) const NOT_REQUESTED: i32 = i32::MIN;

const fn bits(operations: &[u8]) -> i32 {
    let mut field = 0;
    let mut i = 0;
    while i < operations.len() {
        field |= 1 << operations[i];
        i += 1;
    }
    field
}

/// `operations` if the client asked for them, else the "not requested"
/// marker.
pub(super) fn if_requested(requested: bool, operations: i32) -> i32 {
    if requested { operations } else { NOT_REQUESTED }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sets_are_kafkas() {
        assert_eq!(TOPIC, 3576);
        assert_eq!(GROUP, 3400);
        assert_eq!(CLUSTER, 8096);
    }
}
