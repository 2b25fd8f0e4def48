//! Checking the parsed flags and building the configuration the broker
//! runs with. Every bound a setting must respect is checked here, and a
//! value out of bounds is reported in one line naming its flag (and the
//! flag that sets the bound, where another flag does).

use std::{
    collections::HashSet,
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use keel_log::{FlushPolicy, LogConfig};
use keel_raft_metadata::ids;

use super::{
    BrokerConfig, ConfigError, LeaderRebalance, LivenessConfig, TestFaults, TopicDefaults,
    flags::Flags,
};
use crate::group::{ConsumerLimits, ConsumerSettings, CoordinatorConfig, MigrationPolicy};

pub(super) fn validate(
    flags: Flags,
    explicit: HashSet<String>,
) -> Result<BrokerConfig, ConfigError> {
    check_bounds(&flags)?;
    let addresses = Addresses::of(&flags)?;
    let groups = group_config(&flags)?;
    let topic_defaults = topic_defaults(&flags, &explicit);
    let test_faults = flags
        .test_faults
        .as_deref()
        .map(parse_test_faults)
        .transpose()?
        .unwrap_or_default();
    Ok(BrokerConfig {
        node_id: flags.node_id,
        listen: addresses.listen,
        advertised_host: addresses.advertised_host,
        advertised_port: addresses.advertised_port,
        data_dir: flags.data_dir,
        log_level: flags.log_level,
        rack: flags.rack,
        cluster_listen: addresses.cluster_listen,
        cluster_advertise: addresses.cluster_advertise,
        voters: addresses.voters,
        metrics_listen: addresses.metrics_listen,
        metrics_per_partition: flags.metrics_per_partition,
        worker_threads: flags.worker_threads,
        raft_tick_ms: flags.raft_tick_ms,
        raft_election_ticks: flags.raft_election_ticks,
        raft_heartbeat_ticks: flags.raft_heartbeat_ticks,
        raft_snapshot_entries: flags.raft_snapshot_entries,
        max_frame_bytes: flags.max_frame_bytes,
        fetch_max_bytes: flags.fetch_max_bytes,
        groups,
        num_partitions: flags.num_partitions,
        default_replication_factor: flags.default_replication_factor,
        offsets_topic_replication_factor: flags.offsets_topic_replication_factor,
        replica_lag_time_max_ms: flags.replica_lag_time_max_ms,
        replica_fetch_wait_max_ms: flags.replica_fetch_wait_max_ms,
        replica_fetch_max_bytes: flags.replica_fetch_max_bytes,
        replica_fetch_response_max_bytes: flags.replica_fetch_response_max_bytes,
        liveness: LivenessConfig {
            heartbeat_interval: Duration::from_millis(flags.broker_heartbeat_interval_ms),
            session_timeout: Duration::from_millis(flags.broker_session_timeout_ms),
            partition_stall_timeout: (flags.partition_stall_timeout_ms > 0)
                .then(|| Duration::from_millis(flags.partition_stall_timeout_ms)),
        },
        leader_rebalance: flags.auto_leader_rebalance_enable.then(|| LeaderRebalance {
            check_interval: Duration::from_secs(flags.leader_imbalance_check_interval_seconds),
            imbalance_percent: flags.leader_imbalance_per_broker_percentage,
        }),
        history_retention: flags.leadership_history_retention_entries,
        auto_create_topics: flags.auto_create_topics,
        retention_check_interval_ms: flags.log_retention_check_interval_ms,
        cleaner_backoff_ms: flags.log_cleaner_backoff_ms,
        topic_defaults,
        explicit,
        test_faults,
    })
}

/// The bounds of every numeric setting outside the group coordinator's,
/// and the log filter.
fn check_bounds(flags: &Flags) -> Result<(), ConfigError> {
    at_least("node-id", flags.node_id, 0)?;
    at_least("min-insync-replicas", flags.min_insync_replicas, 1)?;
    at_least(
        "default-replication-factor",
        flags.default_replication_factor,
        1,
    )?;
    at_least(
        "offsets-topic-replication-factor",
        flags.offsets_topic_replication_factor,
        1,
    )?;
    at_least(
        "replica-lag-time-max-ms",
        flags.replica_lag_time_max_ms,
        100,
    )?;
    at_least(
        "replica-fetch-wait-max-ms",
        flags.replica_fetch_wait_max_ms,
        0,
    )?;
    at_least(
        "broker-heartbeat-interval-ms",
        flags.broker_heartbeat_interval_ms,
        10,
    )?;
    at_least(
        "broker-session-timeout-ms",
        flags.broker_session_timeout_ms,
        3 * flags.broker_heartbeat_interval_ms,
    )
    .map_err(|_| {
        invalid(
            "broker-session-timeout-ms",
            format!(
                "must be at least three --broker-heartbeat-interval-ms ({}), got {}",
                3 * flags.broker_heartbeat_interval_ms,
                flags.broker_session_timeout_ms
            ),
        )
    })?;
    at_least(
        "leader-imbalance-check-interval-seconds",
        flags.leader_imbalance_check_interval_seconds,
        1,
    )?;
    if flags.leader_imbalance_per_broker_percentage > 100 {
        return Err(invalid(
            "leader-imbalance-per-broker-percentage",
            format!(
                "must be at most 100, got {}",
                flags.leader_imbalance_per_broker_percentage
            ),
        ));
    }
    if let Some(threads) = flags.worker_threads {
        at_least("worker-threads", threads, 1)?;
    }
    at_least("raft-tick-ms", flags.raft_tick_ms, 1)?;
    at_least("raft-heartbeat-ticks", flags.raft_heartbeat_ticks, 1)?;
    if flags.raft_election_ticks <= flags.raft_heartbeat_ticks {
        return Err(invalid(
            "raft-election-ticks",
            format!(
                "must be larger than --raft-heartbeat-ticks ({})",
                flags.raft_heartbeat_ticks
            ),
        ));
    }
    at_least("raft-snapshot-entries", flags.raft_snapshot_entries, 1)?;
    if tracing_subscriber::EnvFilter::try_new(&flags.log_level).is_err() {
        return Err(invalid(
            "log-level",
            format!("'{}' is not a level or filter directive", flags.log_level),
        ));
    }
    at_least("max-frame-bytes", flags.max_frame_bytes, 1024)?;
    at_least("fetch-max-bytes", flags.fetch_max_bytes, 1024)?;
    at_least(
        "replica-fetch-max-bytes",
        flags.replica_fetch_max_bytes,
        1024,
    )?;
    at_least(
        "replica-fetch-response-max-bytes",
        flags.replica_fetch_response_max_bytes,
        1024,
    )?;
    at_least("num-partitions", flags.num_partitions, 1)?;
    at_least("log-segment-bytes", flags.log_segment_bytes, 14)?;
    if flags.log_segment_bytes > i64::from(i32::MAX) {
        return Err(invalid("log-segment-bytes", "must be below 2 GiB"));
    }
    at_least("log-segment-ms", flags.log_segment_ms, 1)?;
    at_least("log-retention-ms", flags.log_retention_ms, -1)?;
    at_least("log-retention-bytes", flags.log_retention_bytes, -1)?;
    at_least(
        "log-retention-check-interval-ms",
        flags.log_retention_check_interval_ms,
        1,
    )?;
    at_least("log-cleaner-backoff-ms", flags.log_cleaner_backoff_ms, 1)?;
    at_least(
        "log-cleaner-delete-retention-ms",
        flags.log_cleaner_delete_retention_ms,
        0,
    )?;
    if let Some(messages) = flags.log_flush_messages {
        at_least("log-flush-messages", messages, 1)?;
    }
    at_least("message-max-bytes", flags.message_max_bytes, 0)?;
    Ok(())
}

/// Where the broker listens, what it advertises and who the voters are.
struct Addresses {
    listen: SocketAddr,
    advertised_host: String,
    advertised_port: u16,
    cluster_listen: SocketAddr,
    cluster_advertise: String,
    voters: Vec<(u64, String)>,
    metrics_listen: Option<SocketAddr>,
}

impl Addresses {
    /// A listener that binds every interface needs an address to
    /// advertise: no client or peer can connect to 0.0.0.0.
    fn of(flags: &Flags) -> Result<Self, ConfigError> {
        let listen = resolve("listen", &flags.listen)?;
        let (advertised_host, advertised_port) = match &flags.advertise {
            Some(advertise) => split_host_port("advertise", advertise)?,
            None => {
                if listen.ip().is_unspecified() {
                    return Err(invalid(
                        "advertise",
                        format!(
                            "the listener {listen} binds every interface; set --advertise to the address clients should use"
                        ),
                    ));
                }
                (listen.ip().to_string(), listen.port())
            }
        };
        let cluster_listen = resolve("cluster-listen", &flags.cluster_listen)?;
        let cluster_advertise = match &flags.cluster_advertise {
            Some(address) => {
                split_host_port("cluster-advertise", address)?;
                address.clone()
            }
            None if cluster_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "cluster-advertise",
                    format!(
                        "the cluster listener {cluster_listen} binds every interface; set --cluster-advertise"
                    ),
                ));
            }
            None => cluster_listen.to_string(),
        };
        let voters = match &flags.voters {
            Some(spec) => {
                keel_raft_metadata::node::parse_voters(spec).map_err(|e| invalid("voters", e))?
            }
            None => vec![(ids::raft_id(flags.node_id), cluster_advertise.clone())],
        };
        let metrics_listen = flags
            .metrics_listen
            .as_deref()
            .map(|address| resolve("metrics-listen", address))
            .transpose()?;
        Ok(Self {
            listen,
            advertised_host,
            advertised_port,
            cluster_listen,
            cluster_advertise,
            voters,
            metrics_listen,
        })
    }
}

/// The group coordinator's settings, with the bounds each must respect.
fn group_config(flags: &Flags) -> Result<CoordinatorConfig, ConfigError> {
    at_least(
        "offsets-topic-partitions",
        flags.offsets_topic_partitions,
        1,
    )?;
    at_least(
        "offsets-retention-minutes",
        flags.offsets_retention_minutes,
        1,
    )?;
    at_least(
        "group-initial-rebalance-delay-ms",
        flags.group_initial_rebalance_delay_ms,
        0,
    )?;
    at_least(
        "group-min-session-timeout-ms",
        flags.group_min_session_timeout_ms,
        1,
    )?;
    at_least(
        "group-consumer-heartbeat-interval-ms",
        flags.group_consumer_heartbeat_interval_ms,
        1,
    )?;
    within(
        "group-consumer-session-timeout-ms",
        flags.group_consumer_session_timeout_ms,
        (
            "group-consumer-min-session-timeout-ms",
            flags.group_consumer_min_session_timeout_ms,
        ),
        (
            "group-consumer-max-session-timeout-ms",
            flags.group_consumer_max_session_timeout_ms,
        ),
    )?;
    within(
        "group-consumer-heartbeat-interval-ms",
        flags.group_consumer_heartbeat_interval_ms,
        (
            "group-consumer-min-heartbeat-interval-ms",
            flags.group_consumer_min_heartbeat_interval_ms,
        ),
        (
            "group-consumer-max-heartbeat-interval-ms",
            flags.group_consumer_max_heartbeat_interval_ms,
        ),
    )?;
    let migration_policy: MigrationPolicy = flags
        .group_consumer_migration_policy
        .parse()
        .map_err(|problem| invalid("group-consumer-migration-policy", problem))?;
    if flags.group_consumer_session_timeout_ms <= flags.group_consumer_heartbeat_interval_ms {
        return Err(invalid(
            "group-consumer-session-timeout-ms",
            format!(
                "must be longer than --group-consumer-heartbeat-interval-ms ({})",
                flags.group_consumer_heartbeat_interval_ms
            ),
        ));
    }
    if flags.group_max_session_timeout_ms < flags.group_min_session_timeout_ms {
        return Err(invalid(
            "group-max-session-timeout-ms",
            format!(
                "must be at least --group-min-session-timeout-ms ({})",
                flags.group_min_session_timeout_ms
            ),
        ));
    }
    Ok(CoordinatorConfig {
        partitions: flags.offsets_topic_partitions,
        offsets_retention_ms: flags.offsets_retention_minutes * 60_000,
        initial_rebalance_delay_ms: flags.group_initial_rebalance_delay_ms,
        min_session_timeout_ms: flags.group_min_session_timeout_ms,
        max_session_timeout_ms: flags.group_max_session_timeout_ms,
        consumer: ConsumerSettings {
            session_timeout_ms: flags.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: flags.group_consumer_heartbeat_interval_ms,
        },
        migration_policy,
        consumer_limits: ConsumerLimits {
            session_timeout_ms: (
                flags.group_consumer_min_session_timeout_ms,
                flags.group_consumer_max_session_timeout_ms,
            ),
            heartbeat_interval_ms: (
                flags.group_consumer_min_heartbeat_interval_ms,
                flags.group_consumer_max_heartbeat_interval_ms,
            ),
        },
    })
}

/// The log settings a topic gets unless its own config overrides them,
/// and which of them an operator set on purpose (DescribeConfigs reports
/// those as the broker's, the rest as defaults).
fn topic_defaults(flags: &Flags, explicit: &HashSet<String>) -> TopicDefaults {
    let explicit = [
        ("log-segment-bytes", "segment.bytes"),
        ("log-segment-ms", "segment.ms"),
        ("log-retention-ms", "retention.ms"),
        ("log-retention-bytes", "retention.bytes"),
        ("log-flush-messages", "flush.messages"),
        ("log-flush-ms", "flush.ms"),
        ("log-cleaner-delete-retention-ms", "delete.retention.ms"),
        ("message-max-bytes", "max.message.bytes"),
        ("min-insync-replicas", "min.insync.replicas"),
    ]
    .into_iter()
    .filter(|(flag, _)| explicit.contains(*flag))
    .map(|(_, topic_key)| topic_key)
    .collect();
    let log = LogConfig {
        segment_bytes: flags.log_segment_bytes as u64,
        segment_ms: flags.log_segment_ms,
        retention_ms: flags.log_retention_ms,
        retention_bytes: flags.log_retention_bytes,
        max_message_bytes: flags.message_max_bytes as usize,
        delete_retention_ms: flags.log_cleaner_delete_retention_ms,
        flush: FlushPolicy {
            messages: flags.log_flush_messages,
            interval_ms: Some(flags.log_flush_ms),
        },
        ..LogConfig::default()
    };
    TopicDefaults {
        log,
        min_insync_replicas: flags.min_insync_replicas as usize,
        explicit,
    }
}

pub(super) fn invalid(key: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("error: invalid value for '--{key}': {problem}"))
}

fn resolve(key: &str, address: &str) -> Result<SocketAddr, ConfigError> {
    address
        .to_socket_addrs()
        .map_err(|e| invalid(key, format!("'{address}' is not a HOST:PORT address ({e})")))?
        .next()
        .ok_or_else(|| invalid(key, format!("'{address}' resolves to no address")))
}

fn split_host_port(key: &str, address: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, format!("'{address}' is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(key, format!("'{port}' is not a port number")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(key, format!("'{address}' has no host")));
    }
    Ok((host.to_string(), port))
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be at least {min}, got {value}")));
    }
    Ok(value)
}

/// Checks that `value` of flag `key` lies within the bounds other flags
/// set, which must be at least 1 and in order.
fn within(key: &str, value: i32, min: (&str, i32), max: (&str, i32)) -> Result<(), ConfigError> {
    at_least(min.0, min.1, 1)?;
    if max.1 < min.1 {
        return Err(invalid(
            max.0,
            format!("must be at least --{} ({}), got {}", min.0, min.1, max.1),
        ));
    }
    if !(min.1..=max.1).contains(&value) {
        return Err(invalid(
            key,
            format!(
                "must be between --{} ({}) and --{} ({}), got {value}",
                min.0, min.1, max.0, max.1
            ),
        ));
    }
    Ok(())
}

/// Parses `--test-faults`: `stall-fsync:TOPIC:PARTITION:MS`,
/// `stall-append:TOPIC:PARTITION:MS`, `apply-metadata-late:MS` or
/// `linger-on-stop:MS`, comma-separated.
fn parse_test_faults(spec: &str) -> Result<TestFaults, ConfigError> {
    let mut faults = TestFaults::default();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || {
            invalid(
                "test-faults",
                format!(
                    "'{item}' is not stall-fsync|stall-append:TOPIC:PARTITION:MS or apply-metadata-late|linger-on-stop:MS"
                ),
            )
        };
        let parts: Vec<&str> = item.split(':').collect();
        if let [kind @ ("apply-metadata-late" | "linger-on-stop"), ms] = parts.as_slice() {
            let delay = std::time::Duration::from_millis(ms.parse().map_err(|_| bad())?);
            if *kind == "apply-metadata-late" {
                faults.apply_metadata_late = delay;
            } else {
                faults.linger_on_stop = delay;
            }
            continue;
        }
        let [kind, topic, partition, ms] = parts.as_slice() else {
            return Err(bad());
        };
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let stall = std::time::Duration::from_millis(ms.parse().map_err(|_| bad())?);
        let entry = faults
            .logs
            .entry((topic.to_string(), partition))
            .or_default();
        match *kind {
            "stall-fsync" => entry.fsync_stall = stall,
            "stall-append" => entry.append_stall = stall,
            _ => return Err(bad()),
        }
    }
    Ok(faults)
}
