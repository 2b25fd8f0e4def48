//! Broker configuration from command-line flags, `KEEL_*` environment
//! variables and a TOML file, in that order of precedence.
//!
//! Every setting is a flag; the same name (without the dashes) is a key in
//! the TOML file and, upper-cased with `_` for `-`, an environment variable:
//! `--log-retention-ms`, `log-retention-ms = 1000`, `KEEL_LOG_RETENTION_MS`.
//! Anything invalid is reported in one line that names the key.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::OsString,
    net::{SocketAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use keel_log::{FlushPolicy, LogConfig};
use keel_raft_metadata::ids;

/// A configuration problem, in one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What the command line asks for: run, or print help/version and exit.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<BrokerConfig>),
    Print { text: String, success: bool },
}

mod flags;

use self::flags::Flags;

/// The validated configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub rack: Option<String>,
    pub cluster_listen: SocketAddr,
    pub cluster_advertise: String,
    /// The controller quorum: node ids and Raft addresses.
    pub voters: Vec<(u64, String)>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_per_partition: bool,
    pub raft_tick_ms: u64,
    pub raft_election_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    pub raft_snapshot_entries: u64,
    pub max_frame_bytes: u32,
    pub fetch_max_bytes: i32,
    pub groups: crate::group::CoordinatorConfig,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub offsets_topic_replication_factor: i16,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`.
    pub replica_fetch_wait_max_ms: i32,
    pub liveness: LivenessConfig,
    /// Kafka's auto leader rebalance; `None` when off.
    pub leader_rebalance: Option<LeaderRebalance>,
    /// How many changes the leadership history keeps, cluster-wide while
    /// this node is the active controller.
    pub history_retention: u32,
    pub auto_create_topics: bool,
    pub retention_check_interval_ms: u64,
    pub cleaner_backoff_ms: u64,
    /// Topic config defaults, keyed by topic config name.
    pub topic_defaults: TopicDefaults,
    /// Flags set explicitly (command line, environment or file), by flag name.
    pub explicit: HashSet<String>,
    /// Test-only faults (`--test-faults`).
    pub test_faults: TestFaults,
}

/// What `--test-faults` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestFaults {
    /// Slow disks, by `(topic, partition)`.
    pub logs: BTreeMap<(String, i32), keel_log::Faults>,
    /// How much later than it could this node applies committed metadata.
    pub apply_metadata_late: std::time::Duration,
    /// How long a stopping broker keeps serving after it moved its
    /// leaderships away (clients slow to leave it).
    pub linger_on_stop: std::time::Duration,
}

/// Broker heartbeats, sessions and leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    pub heartbeat_interval: Duration,
    /// How long the controller lets a broker be silent before fencing it.
    pub session_timeout: Duration,
    /// How long produce requests may wait on a leader without progress
    /// before the controller moves the partition; `None`: never, and the
    /// broker then neither tracks its produce heartbeats nor reports them.
    pub partition_stall_timeout: Option<Duration>,
}

impl LivenessConfig {
    /// How long after sending an answered heartbeat a broker may still
    /// take writes: two heartbeat intervals short of the session timeout,
    /// so it has stopped before the controller can elect a successor.
    pub fn lease(&self) -> Duration {
        self.session_timeout
            .saturating_sub(2 * self.heartbeat_interval)
    }

    /// How old the quorum's confirmation of the controller may be when it
    /// renews a lease: heartbeats that arrive within this of a round of
    /// Raft heartbeats share it instead of each sending one. The broker
    /// starts the renewed lease that much earlier (see `Lease::renew`),
    /// so the lease never outlasts a controller deposed after the round.
    pub fn confirmation_max_age(&self) -> Duration {
        self.heartbeat_interval / 2
    }

    /// The longest a new leader waits for earlier leaders to stop taking
    /// writes (see `replication::succession`): a lease, plus a heartbeat
    /// interval for clocks that run at slightly different rates.
    pub fn succession_wait(&self) -> Duration {
        self.lease() + self.heartbeat_interval
    }
}

/// When leadership moves back to preferred replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderRebalance {
    pub check_interval: Duration,
    /// A broker's share of its preferred partitions led elsewhere above
    /// which they move back.
    pub imbalance_percent: u32,
}

/// Broker-wide defaults of topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    pub log: LogConfig,
    pub min_insync_replicas: usize,
    /// Which defaults were set explicitly, by topic config name.
    pub explicit: HashSet<&'static str>,
}

impl BrokerConfig {
    /// A single-node configuration with every default but ephemeral ports,
    /// for tests.
    pub fn for_tests(data_dir: &Path) -> Self {
        let args = [
            OsString::from("keel"),
            "--data-dir".into(),
            data_dir.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--cluster-listen".into(),
            "127.0.0.1:0".into(),
            "--offsets-topic-partitions".into(),
            "3".into(),
            "--group-initial-rebalance-delay-ms".into(),
            "0".into(),
        ];
        match parse_from(args) {
            Ok(Invocation::Run(config)) => *config,
            other => unreachable!("default configuration must parse: {other:?}"),
        }
    }
}

/// Parses the process's own arguments and environment.
pub fn parse() -> Result<Invocation, ConfigError> {
    parse_from(std::env::args_os())
}

/// Parses `args` (program name first) plus the environment and the TOML
/// file named by `--config` or `KEEL_CONFIG`.
pub fn parse_from<I, T>(args: I) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Flags::command();
    // A first pass only to find the config file.
    let first = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => return clap_failure(e, &BTreeMap::new()),
    };
    let file_settings = match first.get_one::<PathBuf>("config") {
        Some(path) => read_config_file(path, &command)?,
        None => BTreeMap::new(),
    };
    // File settings go first so that flags override them; a setting whose
    // environment variable is set is left to the environment.
    let mut merged = vec![args.first().cloned().unwrap_or_else(|| "keel".into())];
    for (key, value) in &file_settings {
        if std::env::var_os(env_name(key)).is_none() {
            merged.push(format!("--{key}={value}").into());
        }
    }
    merged.extend(args.iter().skip(1).cloned());
    let matches = match command.try_get_matches_from(&merged) {
        Ok(matches) => matches,
        Err(e) => return clap_failure(e, &file_settings),
    };
    let flags = Flags::from_arg_matches(&matches).map_err(|e| ConfigError(first_line(&e)))?;
    let explicit = matches
        .ids()
        .filter(|id| {
            matches!(
                matches.value_source(id.as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|id| id.as_str().replace('_', "-"))
        .collect();
    validate(flags, explicit).map(|config| Invocation::Run(Box::new(config)))
}

fn env_name(key: &str) -> String {
    format!("KEEL_{}", key.to_uppercase().replace('-', "_"))
}

fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .to_string()
}

fn clap_failure(
    error: clap::Error,
    file_settings: &BTreeMap<String, String>,
) -> Result<Invocation, ConfigError> {
    use clap::error::{ContextKind, ErrorKind};
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(Invocation::Print {
            text: error.render().to_string(),
            success: true,
        }),
        _ => {
            let mut line = first_line(&error);
            let from_file = error
                .get(ContextKind::InvalidArg)
                .map(ToString::to_string)
                .and_then(|arg| {
                    let name = arg.trim_start_matches("--");
                    let name = name.split([' ', '=']).next().unwrap_or(name).to_string();
                    file_settings.contains_key(&name).then_some(name)
                });
            if let Some(key) = from_file {
                line.push_str(&format!(" (key '{key}' in the config file)"));
            }
            Err(ConfigError(line))
        }
    }
}

/// Reads the TOML file into flag-name/value pairs, rejecting keys that are
/// not flags and values that are not scalars.
fn read_config_file(
    path: &Path,
    command: &clap::Command,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "error: cannot read config file {}: {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let message = e.message().replace('\n', " ");
        ConfigError(format!(
            "error: config file {} is not valid TOML: {message}",
            path.display()
        ))
    })?;
    let known: HashSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|name| name != "config" && name != "help" && name != "version")
        .collect();
    let mut settings = BTreeMap::new();
    for (key, value) in table {
        let key = key.replace('_', "-");
        if !known.contains(&key) {
            return Err(ConfigError(format!(
                "error: unknown key '{key}' in config file {}",
                path.display()
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, ConfigError>>()?
                .join(","),
            _ => {
                return Err(ConfigError(format!(
                    "error: key '{key}' in config file {} must be a string, number, boolean or list",
                    path.display()
                )));
            }
        };
        settings.insert(key, value);
    }
    Ok(settings)
}

fn invalid(key: &str, problem: impl std::fmt::Display) -> ConfigError {
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

fn validate(flags: Flags, explicit: HashSet<String>) -> Result<BrokerConfig, ConfigError> {
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
    at_least("num-partitions", flags.num_partitions, 1)?;
    at_least(
        "default-replication-factor",
        flags.default_replication_factor,
        1,
    )?;
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
    let migration_policy: crate::group::MigrationPolicy = flags
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

    let topic_explicit = [
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
    let test_faults = flags
        .test_faults
        .as_deref()
        .map(parse_test_faults)
        .transpose()?
        .unwrap_or_default();
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
    Ok(BrokerConfig {
        node_id: flags.node_id,
        listen,
        advertised_host,
        advertised_port,
        data_dir: flags.data_dir,
        log_level: flags.log_level,
        rack: flags.rack,
        cluster_listen,
        cluster_advertise,
        voters,
        metrics_listen,
        metrics_per_partition: flags.metrics_per_partition,
        raft_tick_ms: flags.raft_tick_ms,
        raft_election_ticks: flags.raft_election_ticks,
        raft_heartbeat_ticks: flags.raft_heartbeat_ticks,
        raft_snapshot_entries: flags.raft_snapshot_entries,
        max_frame_bytes: flags.max_frame_bytes,
        fetch_max_bytes: flags.fetch_max_bytes,
        groups: crate::group::CoordinatorConfig {
            partitions: flags.offsets_topic_partitions,
            offsets_retention_ms: flags.offsets_retention_minutes * 60_000,
            initial_rebalance_delay_ms: flags.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: flags.group_min_session_timeout_ms,
            max_session_timeout_ms: flags.group_max_session_timeout_ms,
            consumer: crate::group::ConsumerSettings {
                session_timeout_ms: flags.group_consumer_session_timeout_ms,
                heartbeat_interval_ms: flags.group_consumer_heartbeat_interval_ms,
            },
            migration_policy,
            consumer_limits: crate::group::ConsumerLimits {
                session_timeout_ms: (
                    flags.group_consumer_min_session_timeout_ms,
                    flags.group_consumer_max_session_timeout_ms,
                ),
                heartbeat_interval_ms: (
                    flags.group_consumer_min_heartbeat_interval_ms,
                    flags.group_consumer_max_heartbeat_interval_ms,
                ),
            },
        },
        num_partitions: flags.num_partitions,
        default_replication_factor: flags.default_replication_factor,
        offsets_topic_replication_factor: flags.offsets_topic_replication_factor,
        replica_lag_time_max_ms: flags.replica_lag_time_max_ms,
        replica_fetch_wait_max_ms: flags.replica_fetch_wait_max_ms,
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
        topic_defaults: TopicDefaults {
            log,
            min_insync_replicas: flags.min_insync_replicas as usize,
            explicit: topic_explicit,
        },
        explicit,
        test_faults,
    })
}

#[cfg(test)]
mod tests;
