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
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use keel_log::LogConfig;

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
mod validate;

use self::{flags::Flags, validate::validate};

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
    /// The async runtime's worker threads; `None`: one per core.
    pub worker_threads: Option<usize>,
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
    /// `replica.fetch.max.bytes`.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub replica_fetch_response_max_bytes: i32,
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

#[cfg(test)]
mod tests;
