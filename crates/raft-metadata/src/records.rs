//! The records of the metadata log. Every change to cluster metadata is one
//! of these, carried by a Raft entry and applied in order by every node;
//! prost encodes them.

use std::collections::BTreeMap;

/// One entry of the metadata log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataRecord {
    #[prost(
        oneof = "Record",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16"
    )]
    pub record: Option<Record>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Record {
    #[prost(message, tag = "1")]
    RegisterBroker(RegisterBroker),
    #[prost(message, tag = "2")]
    CreateTopic(CreateTopic),
    #[prost(message, tag = "3")]
    DeleteTopic(DeleteTopic),
    #[prost(message, tag = "4")]
    CreatePartitions(CreatePartitions),
    #[prost(message, tag = "5")]
    AlterTopicConfig(AlterTopicConfig),
    #[prost(message, tag = "6")]
    AllocateProducerIds(AllocateProducerIds),
    #[prost(message, tag = "7")]
    FenceBroker(FenceBroker),
    #[prost(message, tag = "8")]
    UnfenceBroker(UnfenceBroker),
    #[prost(message, tag = "9")]
    SetPartitionLeader(SetPartitionLeader),
    #[prost(message, tag = "10")]
    UpdateIsr(UpdateIsr),
    #[prost(message, tag = "11")]
    SetClusterId(SetClusterId),
    #[prost(message, tag = "12")]
    Batch(RecordBatch),
    #[prost(message, tag = "13")]
    SetHistoryRetention(SetHistoryRetention),
    #[prost(message, tag = "14")]
    LeadershipChangesCommitted(LeadershipChangesCommitted),
    #[prost(message, tag = "15")]
    AlterGroupConfig(AlterGroupConfig),
    #[prost(message, tag = "16")]
    ChangePartitionReplicas(ChangePartitionReplicas),
}

/// Records that apply together or not at all, in one Raft entry: the
/// controller fences a broker and moves every leadership it held in one
/// round trip, and no node ever sees the broker fenced with its partitions
/// half moved. A batch holds no batch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordBatch {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<MetadataRecord>,
}

/// How many leadership changes the history keeps. The active controller
/// proposes its configured value when the image holds another, so every
/// node keeps the same history whatever its own setting.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetHistoryRetention {
    /// At least 1.
    #[prost(uint32, tag = "1")]
    pub entries: u32,
}

/// When the changes `[first_sequence, first_sequence + count)` of the
/// history committed, as the controller that proposed them saw it apply
/// them: what gives each its detection-to-commit latency. A commit time
/// is known only after the commit, so it follows the changes in an entry of
/// its own; changes retention has dropped meanwhile are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeadershipChangesCommitted {
    #[prost(uint64, tag = "1")]
    pub first_sequence: u64,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(int64, tag = "3")]
    pub committed_at_ms: i64,
}

/// Names the cluster. Only the first one applies: every node proposes one
/// when it finds none, and the rest are rejected.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetClusterId {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
}

impl From<Record> for MetadataRecord {
    fn from(record: Record) -> Self {
        Self {
            record: Some(record),
        }
    }
}

/// A broker announcing itself; a newer incarnation replaces the old entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterBroker {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(int32, tag = "3")]
    pub port: i32,
    #[prost(string, optional, tag = "4")]
    pub rack: Option<String>,
    #[prost(uint64, tag = "5")]
    pub incarnation: u64,
    /// When the broker asked, for the leadership history of the partitions
    /// a restart takes it off.
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
    /// How many partition replicas the broker can keep open under its
    /// open-file limit; `None` when unlimited.
    #[prost(uint64, optional, tag = "7")]
    pub max_replicas: Option<u64>,
}

/// Where a partition's replicas live and who leads it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionAssignment {
    #[prost(int32, tag = "1")]
    pub partition: i32,
    #[prost(int32, repeated, tag = "2")]
    pub replicas: Vec<i32>,
    #[prost(int32, tag = "3")]
    pub leader: i32,
    #[prost(int32, tag = "4")]
    pub leader_epoch: i32,
    #[prost(int32, repeated, tag = "5")]
    pub isr: Vec<i32>,
    /// Bumped by every leader or ISR change, so an ISR update computed from
    /// an older state of the partition is rejected (KRaft's partition
    /// epoch). A new partition starts at 0.
    #[prost(int32, tag = "6")]
    pub partition_epoch: i32,
    /// Eligible Leader Replicas (KIP-966): replicas out of the ISR that
    /// still hold every committed record, because they left it while the
    /// ISR was below min.insync.replicas and the high watermark could not
    /// move without them. Never overlaps the ISR.
    #[prost(int32, repeated, tag = "7")]
    pub elr: Vec<i32>,
    /// How long the previous leader may still have held a lease when the
    /// current leadership was decided: the leader takes no write before
    /// that long after it applied the change (see `SetPartitionLeader`).
    #[prost(int64, tag = "8")]
    pub predecessor_lease_ms: i64,
    /// While a reassignment is in progress: the replicas it adds, which
    /// are in `replicas` but not yet known to be caught up...
    #[prost(int32, repeated, tag = "9")]
    pub adding_replicas: Vec<i32>,
    /// ...and the replicas it removes, which stay in `replicas` (and may
    /// lead) until the target replicas are all in the ISR.
    #[prost(int32, repeated, tag = "10")]
    pub removing_replicas: Vec<i32>,
    /// Who led before the current leader, if anyone did.
    #[prost(int32, optional, tag = "11")]
    pub previous_leader: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTopic {
    /// When the proposer created the record, for the leadership history.
    #[prost(int64, tag = "5")]
    pub timestamp_ms: i64,
    /// The node that decided the placement.
    #[prost(int32, tag = "6")]
    pub controller: i32,
    #[prost(string, tag = "1")]
    pub name: String,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub partitions: Vec<PartitionAssignment>,
    /// Topic config overrides.
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePartitions {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The new partitions, numbered from the current count upwards.
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionAssignment>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterTopicConfig {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Overrides to set.
    #[prost(btree_map = "string, string", tag = "2")]
    pub set: BTreeMap<String, String>,
    /// Overrides to remove (back to the broker default).
    #[prost(string, repeated, tag = "3")]
    pub delete: Vec<String>,
}

/// Changes a consumer group's config overrides (Kafka's GROUP resource).
/// A group needs no other record to have configs: they apply whenever a
/// group of that name exists, and a group left with none has no entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterGroupConfig {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub set: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "3")]
    pub delete: Vec<String>,
}

/// A partition's replica set as a reassignment changes it (Kafka's
/// PartitionChangeRecord for AlterPartitionReassignments): started,
/// cancelled, or completed once every target replica is in the ISR. The
/// leader and its epoch stay: a leader being removed is moved first, by a
/// `SetPartitionLeader` (reason `reassignment`). Computed from the
/// partition at `partition_epoch`, and refused if it has changed since.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangePartitionReplicas {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    #[prost(int32, tag = "3")]
    pub partition_epoch: i32,
    #[prost(int32, repeated, tag = "4")]
    pub replicas: Vec<i32>,
    #[prost(int32, repeated, tag = "5")]
    pub adding_replicas: Vec<i32>,
    #[prost(int32, repeated, tag = "6")]
    pub removing_replicas: Vec<i32>,
    /// The ISR afterwards: the current one, less replicas that leave.
    #[prost(int32, repeated, tag = "7")]
    pub isr: Vec<i32>,
}

/// Hands the block `[start, start + size)` of producer ids to a broker.
/// Applies only if `start` is the next unallocated id, so two brokers asking
/// at once cannot get the same block.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateProducerIds {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(int64, tag = "2")]
    pub start: i64,
    #[prost(int64, tag = "3")]
    pub size: i64,
}

/// Stops a broker from leading or receiving new partitions until it is
/// unfenced (it registered again, or its session resumed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FenceBroker {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    /// Only fences this incarnation, so a fence decided before a restart
    /// does not hit the restarted broker.
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnfenceBroker {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
}

/// Why a partition's leader changed, as the leadership history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LeaderChangeReason {
    Unspecified = 0,
    TopicCreated = 1,
    BrokerFailure = 2,
    PartitionStall = 3,
    ControlledShutdown = 4,
    PreferredRebalance = 5,
    Manual = 6,
    /// A replica outside the ISR and ELR took over: records may be lost.
    Unclean = 7,
    /// A reassignment removes the leader: a target replica in the ISR
    /// takes over before the old one leaves.
    Reassignment = 8,
}

impl LeaderChangeReason {
    /// The label of a reason as a record carries it; an unknown value is
    /// `unspecified`.
    pub fn label_of(reason: i32) -> &'static str {
        Self::try_from(reason).unwrap_or(Self::Unspecified).label()
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::TopicCreated => "topic_created",
            Self::BrokerFailure => "broker_failure",
            Self::PartitionStall => "partition_stall",
            Self::ControlledShutdown => "controlled_shutdown",
            Self::PreferredRebalance => "preferred_rebalance",
            Self::Manual => "manual",
            Self::Unclean => "unclean",
            Self::Reassignment => "reassignment",
        }
    }
}

/// A new leader (or none: -1) at the next leader epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetPartitionLeader {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    #[prost(int32, tag = "3")]
    pub leader: i32,
    /// Must be the partition's current leader epoch + 1.
    #[prost(int32, tag = "4")]
    pub leader_epoch: i32,
    #[prost(int32, repeated, tag = "5")]
    pub isr: Vec<i32>,
    #[prost(enumeration = "LeaderChangeReason", tag = "6")]
    pub reason: i32,
    /// The controller that decided.
    #[prost(int32, tag = "7")]
    pub controller: i32,
    /// The ISR members that were eligible.
    #[prost(int32, repeated, tag = "8")]
    pub eligible: Vec<i32>,
    /// Log end offset and high watermark of the old leader as it last
    /// reported them to the deciding controller, -1 when unknown; without
    /// the old leader's word (none, or the partition was offline), the high
    /// watermark is the highest any replica reported.
    #[prost(int64, tag = "9")]
    pub log_end_offset: i64,
    #[prost(int64, tag = "10")]
    pub high_watermark: i64,
    #[prost(int64, tag = "11")]
    pub timestamp_ms: i64,
    /// The topic's min.insync.replicas: members leaving the ISR below it
    /// become eligible leader replicas (KIP-966), as with an ISR update.
    #[prost(int32, tag = "12")]
    pub min_insync_replicas: i32,
    /// The new leader's log end offset as it last reported it, if known:
    /// below the old leader's high watermark, an unclean election lost the
    /// difference.
    #[prost(int64, optional, tag = "13")]
    pub new_leader_log_end_offset: Option<i64>,
    /// How long the old leader may still hold a lease, as the deciding
    /// controller reckons from the last heartbeat it renewed: more than 0
    /// only when the controller moved on before the old leader's lease ran
    /// out (its process was seen gone). The new leader takes no write
    /// before that long after it applies this change, so the two never
    /// accept writes at once even if the old one was alive after all.
    #[prost(int64, tag = "14")]
    pub predecessor_lease_ms: i64,
    /// The partition epoch the change was decided at; a change decided
    /// from an older state of the partition (its ISR changed since, or a
    /// replica restarted) is refused, so a replica that left the ISR
    /// meanwhile is never elected on the strength of the old ISR. Absent
    /// from records written before it existed.
    #[prost(int32, optional, tag = "15")]
    pub partition_epoch: Option<i32>,
}

/// A leader's change to its partition's ISR within its own epoch (Kafka's
/// AlterPartition). The leader must stay in the new ISR.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateIsr {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    /// Must equal the partition's current leader epoch.
    #[prost(int32, tag = "3")]
    pub leader_epoch: i32,
    #[prost(int32, repeated, tag = "4")]
    pub isr: Vec<i32>,
    /// Must equal the partition's current partition epoch: the leader
    /// computed this ISR from that state, and any change since (another
    /// ISR update, a leader change) makes it stale.
    #[prost(int32, tag = "5")]
    pub partition_epoch: i32,
    /// The incarnation of each `isr` member, in the same order, as the
    /// leader saw it. A member joining the ISR must be registered, unfenced
    /// and still at this incarnation (KIP-903), so a broker that restarted
    /// with an empty disk is not taken back on the strength of its old
    /// run's fetches.
    #[prost(uint64, repeated, tag = "6")]
    pub isr_incarnations: Vec<u64>,
    /// The min.insync.replicas the leader applies to the partition; decides
    /// whether members leaving the ISR become eligible leader replicas.
    #[prost(int32, tag = "7")]
    pub min_insync_replicas: i32,
}

/// One entry of the leadership history: every leader change, as applied.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeadershipChange {
    /// Position in the history, increasing by one per change.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(string, tag = "2")]
    pub topic: String,
    #[prost(int32, tag = "3")]
    pub partition: i32,
    #[prost(int32, tag = "4")]
    pub leader_epoch: i32,
    /// The Raft term of the entry that made the change.
    #[prost(uint64, tag = "5")]
    pub raft_term: u64,
    #[prost(int32, tag = "6")]
    pub previous_leader: i32,
    #[prost(int32, tag = "7")]
    pub new_leader: i32,
    #[prost(int32, tag = "8")]
    pub controller: i32,
    #[prost(enumeration = "LeaderChangeReason", tag = "9")]
    pub reason: i32,
    #[prost(int32, repeated, tag = "10")]
    pub isr: Vec<i32>,
    #[prost(int32, repeated, tag = "11")]
    pub eligible: Vec<i32>,
    #[prost(int64, tag = "12")]
    pub log_end_offset: i64,
    #[prost(int64, tag = "13")]
    pub high_watermark: i64,
    /// When the deciding controller detected the need for the change and
    /// decided it.
    #[prost(int64, tag = "14")]
    pub timestamp_ms: i64,
    /// The new leader's log end offset as the deciding controller last
    /// heard it, if it did.
    #[prost(int64, optional, tag = "16")]
    pub new_leader_log_end_offset: Option<i64>,
    /// When the change committed, as its controller saw it; 0 until a
    /// [`LeadershipChangesCommitted`] says (and for changes no controller
    /// decided: topic creation, a restart).
    #[prost(int64, tag = "15")]
    pub committed_at_ms: i64,
}
