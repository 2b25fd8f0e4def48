//! Topic configs: which keys exist, what values they take, their defaults,
//! and how a topic's overrides and the broker defaults combine into the
//! partition log's settings.

use std::collections::BTreeMap;

use keel_log::{Codec, FlushPolicy, LogConfig, TopicCompression};

use crate::config::TopicDefaults;

mod definitions;

pub use self::definitions::{ConfigDef, ConfigType, TOPIC_CONFIGS};

/// Where an effective value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
    DynamicGroup = 8,
}

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
    let canonical = configs
        .iter()
        .map(|(k, v)| Ok((k.clone(), validate(k, v)?)))
        .collect::<Result<_, InvalidConfig>>()?;
    validate_together(&canonical)?;
    Ok(canonical)
}

/// Checks what Kafka checks across keys, on a topic's whole set of
/// overrides (each already valid alone): the minimum compaction lag may not
/// exceed the maximum.
pub fn validate_together(configs: &BTreeMap<String, String>) -> Result<(), InvalidConfig> {
    let (min_lag, max_lag) = (
        long_or_default(configs, "min.compaction.lag.ms"),
        long_or_default(configs, "max.compaction.lag.ms"),
    );
    if min_lag > max_lag {
        return Err(InvalidConfig {
            key: "min.compaction.lag.ms".into(),
            value: min_lag.to_string(),
            reason: format!(
                "conflict topic config setting min.compaction.lag.ms ({min_lag}) > \
                 max.compaction.lag.ms ({max_lag})"
            ),
        });
    }
    Ok(())
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
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        "flush.messages" => log.flush.messages.unwrap_or(i64::MAX as u64).to_string(),
        "flush.ms" => log
            .flush
            .interval_ms
            .map_or(i64::MAX, |ms| ms as i64)
            .to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        "min.cleanable.dirty.ratio" => DEFAULT_MIN_CLEANABLE_DIRTY_RATIO.to_string(),
        "min.insync.replicas" => defaults.min_insync_replicas.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "retention.ms" => log.retention_ms.to_string(),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        other => kafka_default(other).to_string(),
    }
}

/// Kafka 4's default of a key no broker flag sets: what DescribeConfigs
/// reports and what the log runs with when the topic does not set it.
fn kafka_default(name: &str) -> &'static str {
    match name {
        "cleanup.policy" => "delete",
        "compression.type" => "producer",
        "message.timestamp.type" => "CreateTime",
        "unclean.leader.election.enable"
        | "preallocate"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable"
        | "remote.storage.enable" => "false",
        "compression.gzip.level" => "-1",
        "compression.lz4.level" => "9",
        "compression.zstd.level" => "3",
        "file.delete.delay.ms" => "60000",
        "local.retention.bytes" | "local.retention.ms" => "-2",
        // i64::MAX: no bound.
        "max.compaction.lag.ms" | "message.timestamp.before.max.ms" => "9223372036854775807",
        // Records more than an hour ahead of the broker's clock are refused.
        "message.timestamp.after.max.ms" => "3600000",
        "min.compaction.lag.ms" | "segment.jitter.ms" => "0",
        "segment.index.bytes" => "10485760",
        _ => "",
    }
}

/// A key's value as a number: the topic's override, else Kafka's default.
fn long_or_default(overrides: &BTreeMap<String, String>, key: &str) -> i64 {
    overrides
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| kafka_default(key).parse().unwrap_or_default())
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
    // A compacted topic's active segment rolls by the maximum compaction
    // lag, so that its records can be cleaned by then (as in Kafka).
    let segment_ms = long("segment.ms").unwrap_or(base.segment_ms);
    let segment_ms = if compact {
        segment_ms.min(long_or_default(overrides, "max.compaction.lag.ms"))
    } else {
        segment_ms
    };
    LogConfig {
        segment_bytes: long("segment.bytes").map_or(base.segment_bytes, |v| v as u64),
        segment_ms,
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
        timestamp_before_max_ms: long_or_default(overrides, "message.timestamp.before.max.ms"),
        timestamp_after_max_ms: long_or_default(overrides, "message.timestamp.after.max.ms"),
        min_compaction_lag_ms: long_or_default(overrides, "min.compaction.lag.ms"),
        compression: compression(overrides),
        segment_jitter_ms: long_or_default(overrides, "segment.jitter.ms"),
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

/// The codec `compression.type` stores batches in, with its level; `None`
/// for `producer`.
fn compression(overrides: &BTreeMap<String, String>) -> Option<TopicCompression> {
    let level = |key: &str| overrides.get(key).and_then(|v| v.parse::<i32>().ok());
    let (codec, level) = match overrides.get("compression.type").map(String::as_str) {
        Some("gzip") => (
            Codec::Gzip,
            level("compression.gzip.level").filter(|l| *l >= 0),
        ),
        Some("snappy") => (Codec::Snappy, None),
        Some("lz4") => (Codec::Lz4, level("compression.lz4.level")),
        Some("zstd") => (Codec::Zstd, level("compression.zstd.level")),
        Some("uncompressed") => (Codec::Uncompressed, None),
        _ => return None,
    };
    Some(TopicCompression { codec, level })
}

/// `max.compaction.lag.ms` of a topic: the longest a record of a compacted
/// topic may stay uncleaned.
pub fn max_compaction_lag_ms(overrides: &BTreeMap<String, String>) -> i64 {
    long_or_default(overrides, "max.compaction.lag.ms")
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

/// Which of retention (`delete`) and compaction (`compact`) a topic uses;
/// an empty policy uses neither.
pub fn cleanup_policy(overrides: &BTreeMap<String, String>) -> (bool, bool) {
    let policy = overrides
        .get("cleanup.policy")
        .map_or("delete", String::as_str);
    (policy.contains("delete"), policy.contains("compact"))
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
    fn every_kafka_topic_config_is_known_and_checked_as_kafka_checks_it() {
        assert_eq!(TOPIC_CONFIGS.len(), 33);
        let names: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "Kafka lists them alphabetically");
        // Removed in Kafka 4.
        for removed in [
            "message.format.version",
            "message.downconversion.enable",
            "message.timestamp.difference.max.ms",
        ] {
            assert!(validate(removed, "1").is_err(), "{removed}");
        }
        // Every default passes its own validation.
        for def in TOPIC_CONFIGS {
            let (value, _) = effective_value(def, &BTreeMap::new(), &defaults());
            assert!(validate(def.name, &value).is_ok(), "{}={value}", def.name);
        }
        assert_eq!(validate("cleanup.policy", "").unwrap(), "");
        assert_eq!(
            validate("cleanup.policy", "delete,delete").unwrap(),
            "delete"
        );
        assert!(validate("cleanup.policy", "compact,").is_err());
        assert_eq!(
            validate("leader.replication.throttled.replicas", "0:1, 1:2").unwrap(),
            "0:1,1:2"
        );
        assert_eq!(
            validate("follower.replication.throttled.replicas", "*").unwrap(),
            "*"
        );
        assert!(validate("leader.replication.throttled.replicas", "0-1").is_err());
        assert!(validate("remote.storage.enable", "false").is_ok());
        let tiered = validate("remote.storage.enable", "true").unwrap_err();
        assert!(tiered.reason.contains("Tiered Storage"), "{tiered}");
        assert_eq!(validate("compression.gzip.level", "-1").unwrap(), "-1");
        assert!(validate("compression.gzip.level", "0").is_err());
        assert!(validate("compression.zstd.level", "23").is_err());
        assert_eq!(validate("retention.bytes", "-5").unwrap(), "-5");
        let lags: BTreeMap<String, String> = [
            ("min.compaction.lag.ms".into(), "5000".into()),
            ("max.compaction.lag.ms".into(), "1000".into()),
        ]
        .into();
        let conflict = validate_all(&lags).unwrap_err();
        assert!(
            conflict.reason.contains("> max.compaction.lag.ms (1000)"),
            "{conflict}"
        );
    }

    #[test]
    fn an_empty_cleanup_policy_neither_deletes_nor_compacts() {
        let overrides: BTreeMap<String, String> = [("cleanup.policy".into(), String::new())].into();
        let log = log_config(&overrides, &defaults());
        assert!(!log.compact);
        assert_eq!((log.retention_ms, log.retention_bytes), (-1, -1));
    }

    #[test]
    fn a_compacted_topic_rolls_by_its_maximum_compaction_lag() {
        let overrides: BTreeMap<String, String> = [
            ("cleanup.policy".into(), "compact".into()),
            ("max.compaction.lag.ms".into(), "60000".into()),
            ("min.compaction.lag.ms".into(), "1000".into()),
            ("segment.jitter.ms".into(), "500".into()),
        ]
        .into();
        let log = log_config(&overrides, &defaults());
        assert_eq!(log.segment_ms, 60_000);
        assert_eq!(log.min_compaction_lag_ms, 1_000);
        assert_eq!(log.segment_jitter_ms, 500);
        // Without compaction the lag does not shorten segments.
        let mut deleting = overrides.clone();
        deleting.insert("cleanup.policy".into(), "delete".into());
        assert_eq!(
            log_config(&deleting, &defaults()).segment_ms,
            7 * 24 * 3_600_000
        );
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
