//! Topic configs: which keys exist, what values they take, their defaults,
//! and how a topic's overrides and the broker defaults combine into the
//! partition log's settings.

use std::collections::BTreeMap;

use keel_log::{FlushPolicy, LogConfig};

use crate::config::TopicDefaults;

/// The value types DescribeConfigs reports (Kafka's `ConfigType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where an effective value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// A topic config key.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// The Kafka broker setting that provides the default, reported as a
    /// synonym by DescribeConfigs.
    pub broker_synonym: &'static str,
    /// Checks a value and returns it in canonical form (trimmed, booleans
    /// lower-cased), which is what gets stored.
    validate: fn(&str) -> Result<String, String>,
}

/// Every topic config Keel understands, in Kafka's order (alphabetical).
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        doc: "What happens to old data: 'delete' removes segments by retention.ms and retention.bytes; 'compact' keeps the latest record of every key; both may be given.",
        broker_synonym: "log.cleanup.policy",
        validate: validate_cleanup_policy,
    },
    ConfigDef {
        name: "compression.type",
        config_type: ConfigType::String,
        doc: "Batches are stored as the producer compressed them ('producer').",
        broker_synonym: "compression.type",
        validate: validate_compression_type,
    },
    ConfigDef {
        name: "delete.retention.ms",
        config_type: ConfigType::Long,
        doc: "How long a compacted topic keeps a tombstone (a record with a null value).",
        broker_synonym: "log.cleaner.delete.retention.ms",
        validate: |v| parse_at_least::<i64>(v, 0),
    },
    ConfigDef {
        name: "flush.messages",
        config_type: ConfigType::Long,
        doc: "fsync the log after this many messages; 1 fsyncs every batch before it is acknowledged.",
        broker_synonym: "log.flush.interval.messages",
        validate: |v| parse_at_least::<i64>(v, 1),
    },
    ConfigDef {
        name: "flush.ms",
        config_type: ConfigType::Long,
        doc: "fsync data at most this many milliseconds after it was appended.",
        broker_synonym: "log.flush.interval.ms",
        validate: |v| parse_at_least::<i64>(v, 0),
    },
    ConfigDef {
        name: "index.interval.bytes",
        config_type: ConfigType::Int,
        doc: "Bytes of log between two offset index entries.",
        broker_synonym: "log.index.interval.bytes",
        validate: |v| parse_at_least::<i32>(v, 0),
    },
    ConfigDef {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        doc: "The largest record batch accepted, in bytes.",
        broker_synonym: "message.max.bytes",
        validate: |v| parse_at_least::<i32>(v, 0),
    },
    ConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches on append.",
        broker_synonym: "log.message.timestamp.type",
        validate: |v| match v.trim() {
            t @ ("CreateTime" | "LogAppendTime") => Ok(t.to_string()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        config_type: ConfigType::Double,
        doc: "Clean a compacted partition once this share of its bytes was written since it was last cleaned.",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        validate: validate_ratio,
    },
    ConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        doc: "In-sync replicas an acks=all write needs before it is accepted.",
        broker_synonym: "min.insync.replicas",
        validate: |v| parse_at_least::<i32>(v, 1),
    },
    ConfigDef {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        doc: "Delete the oldest segments while a partition is larger than this; -1 means no limit.",
        broker_synonym: "log.retention.bytes",
        validate: |v| parse_at_least::<i64>(v, -1),
    },
    ConfigDef {
        name: "retention.ms",
        config_type: ConfigType::Long,
        doc: "Delete segments whose newest record is older than this; -1 keeps data forever.",
        broker_synonym: "log.retention.ms",
        validate: |v| parse_at_least::<i64>(v, -1),
    },
    ConfigDef {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        doc: "Roll to a new segment file once the active one reaches this size.",
        broker_synonym: "log.segment.bytes",
        validate: |v| parse_at_least::<i32>(v, 14),
    },
    ConfigDef {
        name: "segment.ms",
        config_type: ConfigType::Long,
        doc: "Roll to a new segment file once the active one is this old.",
        broker_synonym: "log.roll.ms",
        validate: |v| parse_at_least::<i64>(v, 1),
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        doc: "Allow a replica outside the ISR to become leader, at the risk of losing data.",
        broker_synonym: "unclean.leader.election.enable",
        validate: |v| parse_bool(v),
    },
];

/// A rejected topic config: which key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value '{value}' for config '{key}': {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub value: String,
    pub reason: String,
}

pub fn definition(key: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == key)
}

/// Checks one key and value; returns the value in canonical form.
pub fn validate(key: &str, value: &str) -> Result<String, InvalidConfig> {
    let invalid = |reason: String| InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let def = definition(key).ok_or_else(|| invalid("unknown topic config".into()))?;
    (def.validate)(value).map_err(invalid)
}

/// Checks a whole set of overrides; returns them in canonical form.
pub fn validate_all(
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, InvalidConfig> {
    configs
        .iter()
        .map(|(k, v)| Ok((k.clone(), validate(k, v)?)))
        .collect()
}

/// The effective value of `def` and where it comes from.
pub fn effective_value(
    def: &ConfigDef,
    overrides: &BTreeMap<String, String>,
    defaults: &TopicDefaults,
) -> (String, ConfigSource) {
    if let Some(value) = overrides.get(def.name) {
        return (value.clone(), ConfigSource::DynamicTopic);
    }
    let source = if defaults.explicit.contains(def.name) {
        ConfigSource::StaticBroker
    } else {
        ConfigSource::Default
    };
    (default_value(def.name, defaults), source)
}

fn default_value(name: &str, defaults: &TopicDefaults) -> String {
    let log = &defaults.log;
    match name {
        "cleanup.policy" => "delete".into(),
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        "compression.type" => "producer".into(),
        "flush.messages" => log.flush.messages.unwrap_or(i64::MAX as u64).to_string(),
        "flush.ms" => log
            .flush
            .interval_ms
            .map_or(i64::MAX, |ms| ms as i64)
            .to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.cleanable.dirty.ratio" => DEFAULT_MIN_CLEANABLE_DIRTY_RATIO.to_string(),
        "min.insync.replicas" => defaults.min_insync_replicas.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "retention.ms" => log.retention_ms.to_string(),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "unclean.leader.election.enable" => "false".into(),
        _ => String::new(),
    }
}

/// The partition log settings for a topic with these overrides.
pub fn log_config(overrides: &BTreeMap<String, String>, defaults: &TopicDefaults) -> LogConfig {
    let get = |key: &str| overrides.get(key).map(String::as_str);
    let long = |key: &str| get(key).and_then(|v| v.parse::<i64>().ok());
    let base = &defaults.log;
    // Time and size retention apply only with the delete policy; a
    // compact-only topic keeps the latest record of every key forever.
    let (delete, compact) = cleanup_policy(overrides);
    let unless_compact_only = |limit: i64| if delete { limit } else { -1 };
    LogConfig {
        segment_bytes: long("segment.bytes").map_or(base.segment_bytes, |v| v as u64),
        segment_ms: long("segment.ms").unwrap_or(base.segment_ms),
        retention_ms: unless_compact_only(long("retention.ms").unwrap_or(base.retention_ms)),
        retention_bytes: unless_compact_only(
            long("retention.bytes").unwrap_or(base.retention_bytes),
        ),
        index_interval_bytes: long("index.interval.bytes")
            .map_or(base.index_interval_bytes, |v| v as u64),
        max_message_bytes: long("max.message.bytes").map_or(base.max_message_bytes, |v| v as usize),
        log_append_time: get("message.timestamp.type")
            .map_or(base.log_append_time, |v| v == "LogAppendTime"),
        producer_expiration_ms: base.producer_expiration_ms,
        compact,
        delete_retention_ms: long("delete.retention.ms").unwrap_or(base.delete_retention_ms),
        flush: FlushPolicy {
            messages: long("flush.messages")
                .map(|v| v as u64)
                .or(base.flush.messages)
                .filter(|&v| v != i64::MAX as u64),
            interval_ms: long("flush.ms")
                .map(|v| v as u64)
                .or(base.flush.interval_ms)
                .filter(|&v| v != i64::MAX as u64),
        },
    }
}

const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;

/// `min.cleanable.dirty.ratio` of a topic.
pub fn min_cleanable_dirty_ratio(overrides: &BTreeMap<String, String>) -> f64 {
    overrides
        .get("min.cleanable.dirty.ratio")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MIN_CLEANABLE_DIRTY_RATIO)
}

/// `min.insync.replicas` of a topic.
pub fn min_insync_replicas(
    overrides: &BTreeMap<String, String>,
    defaults: &TopicDefaults,
) -> usize {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(defaults.min_insync_replicas)
}

/// `unclean.leader.election.enable` of a topic (off unless set on it).
pub fn unclean_leader_election(overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("unclean.leader.election.enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_at_least<T>(value: &str, min: T) -> Result<String, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let parsed: T = value
        .trim()
        .parse()
        .map_err(|_| "not a number in range".to_string())?;
    if parsed < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(parsed.to_string())
}

fn validate_ratio(value: &str) -> Result<String, String> {
    match value.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio.to_string()),
        _ => Err("must be a number between 0 and 1".into()),
    }
}

fn parse_bool(value: &str) -> Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        b @ ("true" | "false") => Ok(b.to_string()),
        _ => Err("must be true or false".into()),
    }
}

fn validate_cleanup_policy(value: &str) -> Result<String, String> {
    let (mut delete, mut compact) = (false, false);
    for policy in value.split(',').map(str::trim) {
        match policy {
            "delete" => delete = true,
            "compact" => compact = true,
            other => return Err(format!("unknown cleanup policy '{other}'")),
        }
    }
    Ok(match (delete, compact) {
        (true, true) => "compact,delete",
        (false, true) => "compact",
        _ => "delete",
    }
    .into())
}

/// Which of retention (`delete`) and compaction (`compact`) a topic uses.
pub fn cleanup_policy(overrides: &BTreeMap<String, String>) -> (bool, bool) {
    let policy = overrides
        .get("cleanup.policy")
        .map_or("delete", String::as_str);
    (policy.contains("delete"), policy.contains("compact"))
}

fn validate_compression_type(value: &str) -> Result<String, String> {
    match value.trim() {
        "producer" => Ok("producer".into()),
        "gzip" | "snappy" | "lz4" | "zstd" | "uncompressed" => Err(
            "batches are stored as the producer compressed them; only 'producer' is supported"
                .into(),
        ),
        _ => Err("unknown compression type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn defaults() -> TopicDefaults {
        BrokerConfig::for_tests(std::path::Path::new("/tmp")).topic_defaults
    }

    #[test]
    fn validation_names_the_key_and_reason() {
        assert_eq!(validate("retention.ms", " -1 ").unwrap(), "-1");
        assert_eq!(validate("min.insync.replicas", " 2").unwrap(), "2");
        assert_eq!(
            validate("unclean.leader.election.enable", "TRUE").unwrap(),
            "true"
        );
        let error = validate("retention.ms", "-5").unwrap_err();
        assert_eq!(error.key, "retention.ms");
        assert!(error.to_string().contains("at least -1"));
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("cleanup.policy", "delete").is_ok());
        assert_eq!(
            validate("cleanup.policy", "delete, compact").unwrap(),
            "compact,delete"
        );
        assert!(validate("cleanup.policy", "shred").is_err());
    }

    #[test]
    fn overrides_win_over_defaults_and_report_their_source() {
        let defaults = defaults();
        let overrides: BTreeMap<String, String> = [("retention.ms".into(), "1000".into())].into();
        let def = definition("retention.ms").unwrap();
        assert_eq!(
            effective_value(def, &overrides, &defaults),
            ("1000".into(), ConfigSource::DynamicTopic)
        );
        let def = definition("segment.bytes").unwrap();
        assert_eq!(
            effective_value(def, &overrides, &defaults),
            ((1u64 << 30).to_string(), ConfigSource::Default)
        );
        let log = log_config(&overrides, &defaults);
        assert_eq!(log.retention_ms, 1000);
        assert_eq!(log.segment_bytes, 1 << 30);
    }

    #[test]
    fn flush_settings_map_to_the_flush_policy() {
        let overrides: BTreeMap<String, String> = [("flush.messages".into(), "1".into())].into();
        let log = log_config(&overrides, &defaults());
        assert_eq!(log.flush.messages, Some(1));
        assert_eq!(log.flush.interval_ms, Some(1_000));
    }

    #[test]
    fn cleanup_policy_decides_compaction_and_retention() {
        let defaults = defaults();
        let with = |policy: &str| {
            let overrides: BTreeMap<String, String> = [
                ("cleanup.policy".into(), policy.into()),
                ("retention.ms".into(), "1000".into()),
            ]
            .into();
            let log = log_config(&overrides, &defaults);
            (log.compact, log.retention_ms, log.retention_bytes)
        };
        assert_eq!(with("delete"), (false, 1000, -1));
        assert_eq!(with("compact"), (true, -1, -1));
        assert_eq!(with("compact,delete"), (true, 1000, -1));
    }

    #[test]
    fn the_dirty_ratio_is_a_share() {
        assert_eq!(
            validate("min.cleanable.dirty.ratio", " 0.01").unwrap(),
            "0.01"
        );
        assert_eq!(validate("min.cleanable.dirty.ratio", "1").unwrap(), "1");
        for bad in ["-0.1", "1.5", "half", "NaN"] {
            let error = validate("min.cleanable.dirty.ratio", bad).unwrap_err();
            assert!(error.reason.contains("between 0 and 1"), "{bad}: {error}");
        }
        let overrides = [("min.cleanable.dirty.ratio".into(), "0.25".into())].into();
        assert_eq!(min_cleanable_dirty_ratio(&overrides), 0.25);
        assert_eq!(min_cleanable_dirty_ratio(&BTreeMap::new()), 0.5);
    }
}
