//! Every flag of `keel`, as clap parses it. The same names (without the
//! dashes) are the keys of the TOML file, and `KEEL_` plus the upper-cased
//! name the environment variables; `validate` turns them into a
//! [`BrokerConfig`](super::BrokerConfig).

use std::path::PathBuf;

use clap::{ArgAction, Parser};

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: a Kafka-compatible message broker",
    after_help = "`keel history --server HOST:PORT [--topic T] [--partition P] [--since TIME] [--json]` prints the cluster's leadership history, from any node's metrics listener.",
    args_override_self = true
)]
pub(super) struct Flags {
    /// TOML file with any of the settings below (keys without the leading dashes).
    #[arg(long, env = "KEEL_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// This node's id.
    #[arg(long, env = "KEEL_NODE_ID", default_value_t = 1, value_name = "N")]
    pub(super) node_id: i32,
    /// Address the Kafka listener binds.
    #[arg(
        long,
        env = "KEEL_LISTEN",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub(super) listen: String,
    /// Address clients are told to connect to [default: the listener].
    #[arg(long, env = "KEEL_ADVERTISE", value_name = "HOST:PORT")]
    pub(super) advertise: Option<String>,
    /// Directory for partition logs and metadata.
    #[arg(
        long,
        env = "KEEL_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub(super) data_dir: PathBuf,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(
        long,
        env = "KEEL_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub(super) log_level: String,
    /// Rack of this broker, reported to clients and used to spread replicas.
    #[arg(long, env = "KEEL_RACK")]
    pub(super) rack: Option<String>,
    /// Address the Raft listener binds (metadata replication between nodes).
    #[arg(
        long,
        env = "KEEL_CLUSTER_LISTEN",
        default_value = "127.0.0.1:9093",
        value_name = "HOST:PORT"
    )]
    pub(super) cluster_listen: String,
    /// Address other nodes reach this node's Raft listener at [default: the cluster listener].
    #[arg(long, env = "KEEL_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    pub(super) cluster_advertise: Option<String>,
    /// The controller quorum, ID@HOST:PORT,... [default: this node alone].
    /// Nodes not listed join as learners.
    #[arg(long, env = "KEEL_VOTERS", value_name = "ID@HOST:PORT,...")]
    pub(super) voters: Option<String>,
    /// Address serving Prometheus metrics on /metrics [default: none].
    #[arg(long, env = "KEEL_METRICS_LISTEN", value_name = "HOST:PORT")]
    pub(super) metrics_listen: Option<String>,
    /// Also export each hosted partition's high watermark and log end
    /// offset (two series per partition).
    #[arg(long, env = "KEEL_METRICS_PER_PARTITION", default_value_t = false, action = ArgAction::Set)]
    pub(super) metrics_per_partition: bool,
    /// Threads serving client and cluster connections [default: one per
    /// core]. Nodes that share a machine do better with a share of its
    /// cores each: `scripts/cluster` gives each node cores / nodes.
    #[arg(long, env = "KEEL_WORKER_THREADS", value_name = "N")]
    pub(super) worker_threads: Option<usize>,
    /// Raft tick interval.
    #[arg(long, env = "KEEL_RAFT_TICK_MS", default_value_t = 50)]
    pub(super) raft_tick_ms: u64,
    /// Ticks without a leader before a voter may campaign (it does after a
    /// random number of ticks up to twice this).
    #[arg(long, env = "KEEL_RAFT_ELECTION_TICKS", default_value_t = 8)]
    pub(super) raft_election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    #[arg(long, env = "KEEL_RAFT_HEARTBEAT_TICKS", default_value_t = 2)]
    pub(super) raft_heartbeat_ticks: usize,
    /// Applied metadata entries between two snapshots (the log is compacted at each).
    #[arg(long, env = "KEEL_RAFT_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    pub(super) raft_snapshot_entries: u64,
    /// Largest request frame accepted; larger ones close the connection.
    #[arg(long, env = "KEEL_MAX_FRAME_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub(super) max_frame_bytes: u32,
    /// Partitions of a topic created without a count (auto-created topics too).
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    pub(super) num_partitions: i32,
    /// Replicas of a topic created without a replication factor.
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub(super) default_replication_factor: i16,
    /// Default `min.insync.replicas`: the in-sync replicas an acks=all write
    /// needs, and below which the high watermark stops.
    #[arg(long, env = "KEEL_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub(super) min_insync_replicas: i32,
    /// How long a follower may go without catching up before its leader
    /// asks the controller to take it out of the ISR.
    #[arg(long, env = "KEEL_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    pub(super) replica_lag_time_max_ms: i64,
    /// How long a follower's fetch waits at the leader for new records.
    #[arg(long, env = "KEEL_REPLICA_FETCH_WAIT_MAX_MS", default_value_t = 500)]
    pub(super) replica_fetch_wait_max_ms: i32,
    /// Most bytes a follower asks for per partition in one fetch; a larger
    /// first batch still comes whole, so a follower never stalls on one.
    #[arg(long, env = "KEEL_REPLICA_FETCH_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub(super) replica_fetch_max_bytes: i32,
    /// Most bytes a follower asks for in one fetch over all its partitions.
    #[arg(
        long,
        env = "KEEL_REPLICA_FETCH_RESPONSE_MAX_BYTES",
        default_value_t = 10 * 1024 * 1024
    )]
    pub(super) replica_fetch_response_max_bytes: i32,
    /// How often a broker heartbeats to the active controller; each
    /// answered heartbeat renews its lease.
    #[arg(long, env = "KEEL_BROKER_HEARTBEAT_INTERVAL_MS", default_value_t = 100)]
    pub(super) broker_heartbeat_interval_ms: u64,
    /// How long the controller waits for a silent broker before fencing it
    /// and electing new leaders for its partitions. A broker's lease, after
    /// which it refuses produce, is two heartbeat intervals shorter.
    #[arg(long, env = "KEEL_BROKER_SESSION_TIMEOUT_MS", default_value_t = 600)]
    pub(super) broker_session_timeout_ms: u64,
    /// How long produce requests may wait on a partition's leader without
    /// any append completing before the controller moves its leadership to
    /// another in-sync replica (a stalled disk, a wedged task); 0 turns
    /// the produce heartbeat off. An idle partition never stalls.
    #[arg(long, env = "KEEL_PARTITION_STALL_TIMEOUT_MS", default_value_t = 2000)]
    pub(super) partition_stall_timeout_ms: u64,
    /// Move leadership back to preferred replicas (the first of each
    /// partition's replicas) when a broker leads too few of its own.
    #[arg(long, env = "KEEL_AUTO_LEADER_REBALANCE_ENABLE", default_value_t = true, action = ArgAction::Set)]
    pub(super) auto_leader_rebalance_enable: bool,
    /// How often the controller looks for brokers leading too few of the
    /// partitions they are the preferred replica of.
    #[arg(
        long,
        env = "KEEL_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub(super) leader_imbalance_check_interval_seconds: u64,
    /// The share of a broker's preferred partitions led elsewhere above
    /// which they move back to it.
    #[arg(
        long,
        env = "KEEL_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE",
        default_value_t = 10
    )]
    pub(super) leader_imbalance_per_broker_percentage: u32,
    /// How many leadership changes the leadership history keeps (the
    /// oldest go first). Cluster-wide: the active controller's setting
    /// applies to every node.
    #[arg(
        long,
        env = "KEEL_LEADERSHIP_HISTORY_RETENTION_ENTRIES",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(super) leadership_history_retention_entries: u32,
    /// Replicas of `__consumer_offsets`, capped at the live brokers when
    /// the topic is first needed.
    #[arg(
        long,
        env = "KEEL_OFFSETS_TOPIC_REPLICATION_FACTOR",
        default_value_t = 3
    )]
    pub(super) offsets_topic_replication_factor: i16,
    /// Create unknown topics when a client asks for their metadata.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", default_value_t = true, action = ArgAction::Set)]
    pub(super) auto_create_topics: bool,
    /// Default `segment.bytes`.
    #[arg(long, env = "KEEL_LOG_SEGMENT_BYTES", default_value_t = 1 << 30)]
    pub(super) log_segment_bytes: i64,
    /// Default `segment.ms`.
    #[arg(long, env = "KEEL_LOG_SEGMENT_MS", default_value_t = 7 * 24 * 3_600_000)]
    pub(super) log_segment_ms: i64,
    /// Default `retention.ms`; -1 keeps data forever.
    #[arg(long, env = "KEEL_LOG_RETENTION_MS", default_value_t = 7 * 24 * 3_600_000, allow_negative_numbers = true)]
    pub(super) log_retention_ms: i64,
    /// Default `retention.bytes` per partition; -1 means no limit.
    #[arg(long, env = "KEEL_LOG_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub(super) log_retention_bytes: i64,
    /// How often retention is enforced.
    #[arg(
        long,
        env = "KEEL_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub(super) log_retention_check_interval_ms: u64,
    /// How often the log cleaner looks for compacted partitions to clean.
    #[arg(long, env = "KEEL_LOG_CLEANER_BACKOFF_MS", default_value_t = 15_000)]
    pub(super) log_cleaner_backoff_ms: u64,
    /// Default `delete.retention.ms`: how long compacted topics keep tombstones.
    #[arg(
        long,
        env = "KEEL_LOG_CLEANER_DELETE_RETENTION_MS",
        default_value_t = 24 * 3_600_000
    )]
    pub(super) log_cleaner_delete_retention_ms: i64,
    /// Default `flush.messages`: fsync after this many messages (1 = every batch).
    #[arg(long, env = "KEEL_LOG_FLUSH_MESSAGES")]
    pub(super) log_flush_messages: Option<u64>,
    /// Default `flush.ms`: fsync data at most this long after it was appended.
    #[arg(long, env = "KEEL_LOG_FLUSH_MS", default_value_t = 1_000)]
    pub(super) log_flush_ms: u64,
    /// Most bytes one Fetch response carries, whatever the client asks for.
    #[arg(long, env = "KEEL_FETCH_MAX_BYTES", default_value_t = 55 * 1024 * 1024)]
    pub(super) fetch_max_bytes: i32,
    /// Partitions of `__consumer_offsets`, created when a group first needs it.
    #[arg(long, env = "KEEL_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50)]
    pub(super) offsets_topic_partitions: i32,
    /// How long committed offsets of a group without members are kept.
    #[arg(long, env = "KEEL_OFFSETS_RETENTION_MINUTES", default_value_t = 7 * 24 * 60)]
    pub(super) offsets_retention_minutes: i64,
    /// How long the first rebalance of an empty group waits for more members.
    #[arg(
        long,
        env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    pub(super) group_initial_rebalance_delay_ms: i64,
    /// Shortest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KEEL_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    pub(super) group_min_session_timeout_ms: i32,
    /// Longest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KEEL_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub(super) group_max_session_timeout_ms: i32,
    /// Session timeout of members under the consumer protocol (KIP-848):
    /// the broker sets it, not the member.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub(super) group_consumer_session_timeout_ms: i32,
    /// How often members under the consumer protocol heartbeat.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub(super) group_consumer_heartbeat_interval_ms: i32,
    /// Which ways a group with members may move between the classic and
    /// the consumer protocol (KIP-848 online migration): bidirectional,
    /// upgrade, downgrade or disabled.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_MIGRATION_POLICY",
        default_value = "bidirectional",
        value_name = "POLICY"
    )]
    pub(super) group_consumer_migration_policy: String,
    /// Shortest session timeout a consumer-protocol group may be given
    /// (`consumer.session.timeout.ms` of a GROUP resource).
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    pub(super) group_consumer_min_session_timeout_ms: i32,
    /// Longest session timeout a consumer-protocol group may be given.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub(super) group_consumer_max_session_timeout_ms: i32,
    /// Shortest heartbeat interval a consumer-protocol group may be given
    /// (`consumer.heartbeat.interval.ms` of a GROUP resource).
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    pub(super) group_consumer_min_heartbeat_interval_ms: i32,
    /// Longest heartbeat interval a consumer-protocol group may be given.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_MAX_HEARTBEAT_INTERVAL_MS",
        default_value_t = 15_000
    )]
    pub(super) group_consumer_max_heartbeat_interval_ms: i32,
    /// Default `max.message.bytes`: the largest record batch accepted.
    #[arg(long, env = "KEEL_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    pub(super) message_max_bytes: i32,
    /// For tests only: make one partition's disk slow, as
    /// `stall-fsync:TOPIC:PARTITION:MS` or `stall-append:TOPIC:PARTITION:MS`,
    /// or this node apply committed metadata late, as
    /// `apply-metadata-late:MS`, or keep serving after moving its
    /// leaderships away when stopping, as `linger-on-stop:MS`
    /// (comma-separated for several).
    #[arg(long, env = "KEEL_TEST_FAULTS", hide = true, value_name = "FAULT,...")]
    pub(super) test_faults: Option<String>,
}
