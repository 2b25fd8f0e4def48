//! The one place where internal errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use keel_log::{BatchError, LogError, RecordFault, RejectedRecord};

use keel_raft_metadata::{ApplyError, ProposalError, image::reassignment::ReassignmentError};

use crate::topic_config::InvalidConfig;

/// Why a request about one partition failed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error(
        "this broker's lease lapsed (the controller has not answered its heartbeats), so another may lead now"
    )]
    LeaseLapsed,
    #[error(
        "this broker just became leader and takes writes in at most {0} ms, once no earlier leader can"
    )]
    AwaitingSuccession(i64),
    #[error(
        "an earlier batch of this producer was refused on this connection and is to be retried first"
    )]
    EarlierBatchRefused,
    #[error(
        "appended, but this broker's lease lapsed before the write could be acknowledged: it may or may not survive"
    )]
    LeaseLapsedAfterAppend,
    #[error(
        "appended at leader epoch {0}, but leadership moved before the write could be acknowledged: it may or may not survive"
    )]
    DeposedAfterAppend(i32),
    #[error("partition has no leader")]
    LeaderNotAvailable,
    #[error("request leader epoch {request} is older than the current {current}")]
    FencedLeaderEpoch { request: i32, current: i32 },
    #[error("request leader epoch {request} is newer than the current {current}")]
    UnknownLeaderEpoch { request: i32, current: i32 },
    #[error("{isr} in-sync replicas, min.insync.replicas is {required}")]
    NotEnoughReplicas { isr: usize, required: usize },
    #[error(
        "appended, but the ISR fell to {isr} below min.insync.replicas {required} before the write was replicated"
    )]
    NotEnoughReplicasAfterAppend { isr: usize, required: usize },
    #[error("timed out waiting for the in-sync replicas")]
    RequestTimedOut,
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(i32),
    #[error("broker {node_id} fetched with incarnation {got}; the registered one is {current}")]
    StaleReplica {
        node_id: i32,
        got: u64,
        current: u64,
    },
    #[error("this replica is not following leader epoch {0}")]
    NotFollowing(i32),
    #[error("invalid offset {offset}: {reason}")]
    InvalidOffset { offset: i64, reason: &'static str },
    #[error("transactions are not supported")]
    TransactionsUnsupported,
    #[error("{0} is internal; only the broker writes to it")]
    InternalTopic(String),
    #[error("acks must be -1, 0 or 1, got {0}")]
    InvalidRequiredAcks(i16),
    #[error("reading the log: {0}")]
    Storage(#[source] std::io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl PartitionError {
    /// The records of a batch the topic refused, when that is why: the
    /// first ones named, and how many in all.
    pub fn rejected_records(&self) -> Option<(&[RejectedRecord], usize)> {
        match self {
            Self::Log(LogError::Batch(BatchError::RejectedRecords { named, total })) => {
                Some((named, *total))
            }
            _ => None,
        }
    }

    /// Whether a produce batch failing this way was certainly not
    /// appended, and the client may send it again (here or to a new
    /// leader).
    pub fn refused_before_append(&self) -> bool {
        matches!(
            self,
            Self::NotLeader
                | Self::LeaseLapsed
                | Self::AwaitingSuccession(_)
                | Self::EarlierBatchRefused
                | Self::LeaderNotAvailable
                | Self::NotEnoughReplicas { .. }
                | Self::UnknownTopicOrPartition
        )
    }

    pub fn code(&self) -> ResponseError {
        match self {
            Self::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            Self::UnknownTopicId => ResponseError::UnknownTopicId,
            // Retriable: the client refreshes its metadata and tries again.
            Self::NotLeader
            | Self::LeaseLapsed
            | Self::AwaitingSuccession(_)
            | Self::EarlierBatchRefused => ResponseError::NotLeaderOrFollower,
            Self::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
            Self::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            Self::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            Self::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            Self::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            // The outcome is unknown, as after a timeout: the client must
            // not take it for "not written" (NOT_LEADER_OR_FOLLOWER).
            Self::RequestTimedOut | Self::LeaseLapsedAfterAppend | Self::DeposedAfterAppend(_) => {
                ResponseError::RequestTimedOut
            }
            Self::NotAReplica(_) | Self::NotFollowing(_) => ResponseError::NotLeaderOrFollower,
            Self::StaleReplica { .. } => ResponseError::StaleBrokerEpoch,
            Self::InvalidOffset { .. } => ResponseError::OffsetOutOfRange,
            Self::TransactionsUnsupported => ResponseError::InvalidRequest,
            Self::InternalTopic(_) => ResponseError::InvalidTopicException,
            Self::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            Self::Storage(_) => ResponseError::KafkaStorageError,
            Self::Log(e) => log_error_code(e),
        }
    }
}

pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        // A read that may not wait is retried where it may: `WouldWait`
        // reaches no client, and would be a retriable storage error if it did.
        LogError::Io { .. } | LogError::Failed { .. } | LogError::WouldWait => {
            ResponseError::KafkaStorageError
        }
        LogError::Batch(BatchError::UnsupportedMagic(_)) => {
            ResponseError::UnsupportedForMessageFormat
        }
        LogError::Batch(e) if e.is_corruption() => ResponseError::CorruptMessage,
        LogError::Batch(BatchError::RejectedRecords { named: records, .. })
            if records
                .iter()
                .any(|r| matches!(r.reason, RecordFault::TimestampOutOfRange { .. })) =>
        {
            ResponseError::InvalidTimestamp
        }
        LogError::Batch(_) => ResponseError::InvalidRecord,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::Closed => ResponseError::NotLeaderOrFollower,
    }
}

/// Why a topic-level admin request (create, delete, alter, describe)
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic id does not exist")]
    UnknownTopicId,
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    PolicyViolation(String),
    #[error(transparent)]
    Metadata(#[from] ProposalError),
}

impl AdminError {
    pub fn code(&self) -> ResponseError {
        match self {
            Self::InvalidTopic(_) => ResponseError::InvalidTopicException,
            Self::TopicExists(_) => ResponseError::TopicAlreadyExists,
            Self::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            Self::UnknownTopicId => ResponseError::UnknownTopicId,
            Self::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            Self::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            Self::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            Self::InvalidConfig(_) => ResponseError::InvalidConfig,
            Self::InvalidRequest(_) => ResponseError::InvalidRequest,
            Self::PolicyViolation(_) => ResponseError::PolicyViolation,
            Self::Metadata(ProposalError::Rejected(ApplyError::TopicExists(_))) => {
                ResponseError::TopicAlreadyExists
            }
            Self::Metadata(ProposalError::Rejected(ApplyError::UnknownTopic(_))) => {
                ResponseError::UnknownTopicOrPartition
            }
            Self::Metadata(ProposalError::Rejected(ApplyError::ReplicaCapacity { .. })) => {
                ResponseError::PolicyViolation
            }
            Self::Metadata(ProposalError::Rejected(_)) => ResponseError::InvalidRequest,
            // Retriable: the client tries again, as it would against a Kafka
            // controller that is being elected.
            Self::Metadata(ProposalError::Timeout) => ResponseError::RequestTimedOut,
            Self::Metadata(ProposalError::LeadershipChanged | ProposalError::Stopped) => {
                ResponseError::NotController
            }
        }
    }
}

/// Why leadership could not be moved (ElectLeaders, or an operator's
/// move).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ElectionError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("broker {0} already leads the partition")]
    NotNeeded(i32),
    #[error("the preferred leader {0} is not a live member of the ISR")]
    PreferredNotAvailable(i32),
    #[error("broker {0} is not a live member of the ISR")]
    NotEligible(i32),
    #[error("no live replica can lead the partition")]
    NoLiveReplica,
    #[error(transparent)]
    Metadata(#[from] ProposalError),
}

impl ElectionError {
    pub fn code(&self) -> ResponseError {
        match self {
            Self::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            Self::NotNeeded(_) => ResponseError::ElectionNotNeeded,
            Self::PreferredNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
            Self::NotEligible(_) | Self::NoLiveReplica => {
                ResponseError::EligibleLeadersNotAvailable
            }
            Self::Metadata(error) => AdminError::Metadata(error.clone()).code(),
        }
    }
}

/// Why a partition's reassignment could not be started or cancelled
/// (AlterPartitionReassignments).
#[derive(Debug, thiserror::Error)]
pub enum ReassignError {
    #[error("Unable to find a topic named {0}.")]
    UnknownTopic(String),
    #[error("Unable to find partition {topic}:{partition}.")]
    UnknownPartition { topic: String, partition: i32 },
    #[error(transparent)]
    Refused(#[from] ReassignmentError),
    #[error(transparent)]
    Metadata(#[from] ProposalError),
}

impl ReassignError {
    pub fn code(&self) -> ResponseError {
        match self {
            Self::UnknownTopic(_) | Self::UnknownPartition { .. } => {
                ResponseError::UnknownTopicOrPartition
            }
            Self::Refused(ReassignmentError::ReplicationFactorChanged { .. }) => {
                ResponseError::InvalidReplicationFactor
            }
            Self::Refused(ReassignmentError::NotInProgress) => {
                ResponseError::NoReassignmentInProgress
            }
            Self::Refused(
                ReassignmentError::EmptyReplicas
                | ReassignmentError::DuplicateReplica(_)
                | ReassignmentError::UnknownBroker(_)
                | ReassignmentError::RevertNeedsUncleanElection { .. }
                | ReassignmentError::LeaderBeingAdded { .. },
            ) => ResponseError::InvalidReplicaAssignment,
            Self::Metadata(error) => AdminError::Metadata(error.clone()).code(),
        }
    }
}

/// The wire value of an optional error.
pub fn code_of(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_map_to_the_codes_clients_expect() {
        let crc = LogError::Batch(BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
        });
        assert_eq!(log_error_code(&crc).code(), 2);
        let count = LogError::Batch(BatchError::InvalidRecordCount {
            records_count: 1,
            last_offset_delta: 3,
        });
        assert_eq!(log_error_code(&count).code(), 87);
        assert_eq!(
            PartitionError::Log(LogError::OutOfOrderSequence {
                producer_id: 1,
                expected: 1,
                received: 5
            })
            .code()
            .code(),
            45
        );
        assert_eq!(PartitionError::NotLeader.code().code(), 6);
    }
}
