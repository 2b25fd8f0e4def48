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
};

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use keel_log::{FlushPolicy, LogConfig};

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

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: a Kafka-compatible message broker",
    args_override_self = true
)]
struct Flags {
    /// TOML file with any of the settings below (keys without the leading dashes).
    #[arg(long, env = "KEEL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id.
    #[arg(long, env = "KEEL_NODE_ID", default_value_t = 1, value_name = "N")]
    node_id: i32,
    /// Address the Kafka listener binds.
    #[arg(
        long,
        env = "KEEL_LISTEN",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    listen: String,
    /// Address clients are told to connect to [default: the listener].
    #[arg(long, env = "KEEL_ADVERTISE", value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Directory for partition logs and metadata.
    #[arg(
        long,
        env = "KEEL_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(
        long,
        env = "KEEL_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    log_level: String,
    /// Rack of this broker, reported to clients and used to spread replicas.
    #[arg(long, env = "KEEL_RACK")]
    rack: Option<String>,
    /// Address the Raft listener binds (metadata replication between nodes).
    #[arg(
        long,
        env = "KEEL_CLUSTER_LISTEN",
        default_value = "127.0.0.1:9093",
        value_name = "HOST:PORT"
    )]
    cluster_listen: String,
    /// Address other nodes reach this node's Raft listener at [default: the cluster listener].
    #[arg(long, env = "KEEL_CLUSTER_ADVERTISE", value_name = "HOST:PORT")]
    cluster_advertise: Option<String>,
    /// The controller quorum, ID@HOST:PORT,... [default: this node alone].
    /// Nodes not listed join as learners.
    #[arg(long, env = "KEEL_VOTERS", value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// Address serving Prometheus metrics on /metrics [default: none].
    #[arg(long, env = "KEEL_METRICS_LISTEN", value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Raft tick interval.
    #[arg(long, env = "KEEL_RAFT_TICK_MS", default_value_t = 50)]
    raft_tick_ms: u64,
    /// Ticks without a leader before a voter may campaign (it does after a
    /// random number of ticks up to twice this).
    #[arg(long, env = "KEEL_RAFT_ELECTION_TICKS", default_value_t = 8)]
    raft_election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    #[arg(long, env = "KEEL_RAFT_HEARTBEAT_TICKS", default_value_t = 2)]
    raft_heartbeat_ticks: usize,
    /// Applied metadata entries between two snapshots (the log is compacted at each).
    #[arg(long, env = "KEEL_RAFT_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    raft_snapshot_entries: u64,
    /// Largest request frame accepted; larger ones close the connection.
    #[arg(long, env = "KEEL_MAX_FRAME_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_frame_bytes: u32,
    /// Partitions of a topic created without a count (auto-created topics too).
    #[arg(long, env = "KEEL_NUM_PARTITIONS", default_value_t = 1)]
    num_partitions: i32,
    /// Replicas of a topic created without a replication factor.
    #[arg(long, env = "KEEL_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    default_replication_factor: i16,
    /// Create unknown topics when a client asks for their metadata.
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", default_value_t = true, action = ArgAction::Set)]
    auto_create_topics: bool,
    /// Default `segment.bytes`.
    #[arg(long, env = "KEEL_LOG_SEGMENT_BYTES", default_value_t = 1 << 30)]
    log_segment_bytes: i64,
    /// Default `segment.ms`.
    #[arg(long, env = "KEEL_LOG_SEGMENT_MS", default_value_t = 7 * 24 * 3_600_000)]
    log_segment_ms: i64,
    /// Default `retention.ms`; -1 keeps data forever.
    #[arg(long, env = "KEEL_LOG_RETENTION_MS", default_value_t = 7 * 24 * 3_600_000, allow_negative_numbers = true)]
    log_retention_ms: i64,
    /// Default `retention.bytes` per partition; -1 means no limit.
    #[arg(long, env = "KEEL_LOG_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    log_retention_bytes: i64,
    /// How often retention is enforced.
    #[arg(
        long,
        env = "KEEL_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    log_retention_check_interval_ms: u64,
    /// How often the log cleaner looks for compacted partitions to clean.
    #[arg(long, env = "KEEL_LOG_CLEANER_BACKOFF_MS", default_value_t = 15_000)]
    log_cleaner_backoff_ms: u64,
    /// Default `delete.retention.ms`: how long compacted topics keep tombstones.
    #[arg(
        long,
        env = "KEEL_LOG_CLEANER_DELETE_RETENTION_MS",
        default_value_t = 24 * 3_600_000
    )]
    log_cleaner_delete_retention_ms: i64,
    /// Default `flush.messages`: fsync after this many messages (1 = every batch).
    #[arg(long, env = "KEEL_LOG_FLUSH_MESSAGES")]
    log_flush_messages: Option<u64>,
    /// Default `flush.ms`: fsync data at most this long after it was appended.
    #[arg(long, env = "KEEL_LOG_FLUSH_MS", default_value_t = 1_000)]
    log_flush_ms: u64,
    /// Most bytes one Fetch response carries, whatever the client asks for.
    #[arg(long, env = "KEEL_FETCH_MAX_BYTES", default_value_t = 55 * 1024 * 1024)]
    fetch_max_bytes: i32,
    /// Partitions of `__consumer_offsets`, created when a group first needs it.
    #[arg(long, env = "KEEL_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50)]
    offsets_topic_partitions: i32,
    /// How long committed offsets of a group without members are kept.
    #[arg(long, env = "KEEL_OFFSETS_RETENTION_MINUTES", default_value_t = 7 * 24 * 60)]
    offsets_retention_minutes: i64,
    /// How long the first rebalance of an empty group waits for more members.
    #[arg(
        long,
        env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    group_initial_rebalance_delay_ms: i64,
    /// Shortest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KEEL_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    group_min_session_timeout_ms: i32,
    /// Longest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KEEL_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    group_max_session_timeout_ms: i32,
    /// Session timeout of members under the consumer protocol (KIP-848):
    /// the broker sets it, not the member.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
        default_value_t = 45_000
    )]
    group_consumer_session_timeout_ms: i32,
    /// How often members under the consumer protocol heartbeat.
    #[arg(
        long,
        env = "KEEL_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000
    )]
    group_consumer_heartbeat_interval_ms: i32,
    /// Default `max.message.bytes`: the largest record batch accepted.
    #[arg(long, env = "KEEL_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    message_max_bytes: i32,
}

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
    pub raft_tick_ms: u64,
    pub raft_election_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    pub raft_snapshot_entries: u64,
    pub max_frame_bytes: u32,
    pub fetch_max_bytes: i32,
    pub groups: crate::group::CoordinatorConfig,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub retention_check_interval_ms: u64,
    pub cleaner_backoff_ms: u64,
    /// Topic config defaults, keyed by topic config name.
    pub topic_defaults: TopicDefaults,
    /// Flags set explicitly (command line, environment or file), by flag name.
    pub explicit: HashSet<String>,
}

/// Broker-wide defaults of topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    pub log: LogConfig,
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

fn validate(flags: Flags, explicit: HashSet<String>) -> Result<BrokerConfig, ConfigError> {
    at_least("node-id", flags.node_id, 1)?;
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
        None => vec![(flags.node_id as u64, cluster_advertise.clone())],
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
        },
        num_partitions: flags.num_partitions,
        default_replication_factor: flags.default_replication_factor,
        auto_create_topics: flags.auto_create_topics,
        retention_check_interval_ms: flags.log_retention_check_interval_ms,
        cleaner_backoff_ms: flags.log_cleaner_backoff_ms,
        topic_defaults: TopicDefaults {
            log,
            explicit: topic_explicit,
        },
        explicit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<BrokerConfig, String> {
        let argv = std::iter::once("keel").chain(args.iter().copied());
        match parse_from(argv) {
            Ok(Invocation::Run(config)) => Ok(*config),
            Ok(Invocation::Print { text, .. }) => Err(format!("printed: {text}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let config = run(&[]).unwrap();
        assert_eq!(config.node_id, 1);
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.cluster_listen.to_string(), "127.0.0.1:9093");
        assert_eq!(config.voters, vec![(1, "127.0.0.1:9093".to_string())]);
        assert!(config.auto_create_topics);
        assert!(config.explicit.is_empty());
    }

    #[test]
    fn flags_are_parsed_and_recorded_as_explicit() {
        let config = run(&[
            "--node-id",
            "7",
            "--listen",
            "127.0.0.1:19092",
            "--advertise",
            "broker7.example:9092",
            "--log-retention-bytes",
            "-1",
            "--auto-create-topics",
            "false",
        ])
        .unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.advertised_host, "broker7.example");
        assert!(!config.auto_create_topics);
        assert!(config.explicit.contains("node-id"));
        assert!(config.topic_defaults.explicit.contains("retention.bytes"));
    }

    #[test]
    fn bad_input_yields_one_line_naming_the_key() {
        for (args, key) in [
            (vec!["--node-id", "abc"], "--node-id"),
            (vec!["--bogus"], "--bogus"),
            (vec!["--num-partitions", "0"], "--num-partitions"),
            (vec!["--listen", "nonsense"], "--listen"),
            (vec!["--log-level", "loud=???"], "--log-level"),
            (vec!["--listen", "0.0.0.0:9092"], "--advertise"),
            (vec!["--node-id", "0"], "--node-id"),
            (vec!["--voters", "1@a"], "--voters"),
            (vec!["--voters", "1@a:1,1@b:2"], "--voters"),
            (vec!["--raft-election-ticks", "2"], "--raft-election-ticks"),
        ] {
            let error = run(&args).unwrap_err();
            assert!(!error.contains('\n'), "multi-line error: {error}");
            assert!(error.contains(key), "{error} does not name {key}");
        }
    }

    #[test]
    fn the_config_file_is_read_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            "node-id = 3\nnum_partitions = 4\nlisten = \"127.0.0.1:29092\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = run(&["--config", file, "--node-id", "5"]).unwrap();
        assert_eq!(config.node_id, 5);
        assert_eq!(config.num_partitions, 4);
        assert_eq!(config.listen.port(), 29092);
        assert!(config.explicit.contains("num-partitions"));
    }

    #[test]
    fn config_file_problems_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        let file = path.to_str().unwrap().to_string();
        let error = run(&["--config", &file]).unwrap_err();
        assert!(error.contains("cannot read config file"), "{error}");

        std::fs::write(&path, "nodeid = 3\n").unwrap();
        let error = run(&["--config", &file]).unwrap_err();
        assert!(error.contains("unknown key 'nodeid'"), "{error}");

        std::fs::write(&path, "node-id = \"x\"\n").unwrap();
        let error = run(&["--config", &file]).unwrap_err();
        assert!(
            error.contains("--node-id") && error.contains("config file"),
            "{error}"
        );

        std::fs::write(&path, "node-id = = 3\n").unwrap();
        let error = run(&["--config", &file]).unwrap_err();
        assert!(
            error.contains("not valid TOML") && !error.contains('\n'),
            "{error}"
        );
    }

    #[test]
    fn help_is_printed_not_an_error() {
        assert!(run(&["--help"]).unwrap_err().starts_with("printed:"));
    }
}
