//! Every topic config of Kafka 4.x: its type, Kafka's validation, the
//! broker setting that gives its default, and what it does. Keys Kafka 4
//! removed (`message.format.version`, `message.downconversion.enable`,
//! `message.timestamp.difference.max.ms`) are unknown here too.
//!
//! Some keys are accepted for compatibility and change nothing in Keel,
//! each for a reason its documentation gives: replication throttles need
//! a broker throttle rate Keel does not have, tiered storage is off (so
//! `remote.storage.enable=true` is refused, as a Kafka broker without it
//! refuses it), and segment files grow as written and are unlinked at once
//! (open reads keep their file).

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

/// A topic config key.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
    /// The Kafka broker setting that provides the default, reported as a
    /// synonym by DescribeConfigs; some keys have none.
    pub broker_synonym: Option<&'static str>,
    /// Checks a value and returns it in canonical form (trimmed, booleans
    /// lower-cased), which is what gets stored.
    pub(super) validate: fn(&str) -> Result<String, String>,
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    broker_synonym: Option<&'static str>,
    validate: fn(&str) -> Result<String, String>,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        config_type,
        doc,
        broker_synonym,
        validate,
    }
}

use ConfigType::{Boolean, Double, Int, List, Long, String as Str};

/// Every topic config, in Kafka's order (alphabetical).
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        List,
        Some("log.cleanup.policy"),
        validate_cleanup_policy,
        "What happens to old data: 'delete' removes segments by retention.ms and retention.bytes; 'compact' keeps the latest record of every key; both may be given, and an empty list keeps everything.",
    ),
    def(
        "compression.gzip.level",
        Int,
        Some("compression.gzip.level"),
        |v| match parse_between::<i32>(v, 1, 9) {
            Ok(level) => Ok(level),
            Err(_) if v.trim() == "-1" => Ok("-1".into()),
            Err(_) => Err("must be -1 or between 1 and 9".into()),
        },
        "The gzip level batches are recompressed at when compression.type is gzip (-1: the codec's default).",
    ),
    def(
        "compression.lz4.level",
        Int,
        Some("compression.lz4.level"),
        |v| parse_between::<i32>(v, 1, 17),
        "The lz4 level batches are recompressed at when compression.type is lz4.",
    ),
    def(
        "compression.type",
        Str,
        Some("compression.type"),
        validate_compression_type,
        "The codec batches are stored in: 'producer' keeps each as sent; gzip, snappy, lz4, zstd or uncompressed re-encode a batch sent in another codec.",
    ),
    def(
        "compression.zstd.level",
        Int,
        Some("compression.zstd.level"),
        |v| parse_between::<i32>(v, -131_072, 22),
        "The zstd level batches are recompressed at when compression.type is zstd.",
    ),
    def(
        "delete.retention.ms",
        Long,
        Some("log.cleaner.delete.retention.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "How long a compacted topic keeps a tombstone (a record with a null value).",
    ),
    def(
        "file.delete.delay.ms",
        Long,
        Some("log.segment.delete.delay.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "How long Kafka waits before deleting a segment file; Keel unlinks it at once, and reads that have it open finish first.",
    ),
    def(
        "flush.messages",
        Long,
        Some("log.flush.interval.messages"),
        |v| parse_at_least::<i64>(v, 1),
        "fsync the log after this many messages; 1 fsyncs every batch before it is acknowledged.",
    ),
    def(
        "flush.ms",
        Long,
        Some("log.flush.interval.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "fsync data at most this many milliseconds after it was appended.",
    ),
    def(
        "follower.replication.throttled.replicas",
        List,
        None,
        validate_throttled_replicas,
        "Replicas (partition:broker, or *) whose fetches a follower throttles; without a broker throttle rate, as in Keel, nothing is throttled.",
    ),
    def(
        "index.interval.bytes",
        Int,
        Some("log.index.interval.bytes"),
        |v| parse_at_least::<i32>(v, 0),
        "Bytes of log between two offset index entries.",
    ),
    def(
        "leader.replication.throttled.replicas",
        List,
        None,
        validate_throttled_replicas,
        "Replicas (partition:broker, or *) whose fetches a leader throttles; without a broker throttle rate, as in Keel, nothing is throttled.",
    ),
    def(
        "local.retention.bytes",
        Long,
        Some("log.local.retention.bytes"),
        |v| parse_at_least::<i64>(v, -2),
        "The local part of retention.bytes under tiered storage (-2: retention.bytes); Keel has no tiered storage.",
    ),
    def(
        "local.retention.ms",
        Long,
        Some("log.local.retention.ms"),
        |v| parse_at_least::<i64>(v, -2),
        "The local part of retention.ms under tiered storage (-2: retention.ms); Keel has no tiered storage.",
    ),
    def(
        "max.compaction.lag.ms",
        Long,
        Some("log.cleaner.max.compaction.lag.ms"),
        |v| parse_at_least::<i64>(v, 1),
        "The longest a record of a compacted topic stays uncompacted: the active segment rolls and the partition is cleaned by then, whatever its dirty ratio.",
    ),
    def(
        "max.message.bytes",
        Int,
        Some("message.max.bytes"),
        |v| parse_at_least::<i32>(v, 0),
        "The largest record batch accepted, in bytes.",
    ),
    def(
        "message.timestamp.after.max.ms",
        Long,
        Some("log.message.timestamp.after.max.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "Under CreateTime, refuse records whose timestamp is more than this ahead of the broker's clock.",
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        Some("log.message.timestamp.before.max.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "Under CreateTime, refuse records whose timestamp is more than this behind the broker's clock.",
    ),
    def(
        "message.timestamp.type",
        Str,
        Some("log.message.timestamp.type"),
        |v| match v.trim() {
            t @ ("CreateTime" | "LogAppendTime") => Ok(t.to_string()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches on append.",
    ),
    def(
        "min.cleanable.dirty.ratio",
        Double,
        Some("log.cleaner.min.cleanable.ratio"),
        validate_ratio,
        "Clean a compacted partition once this share of its bytes was written since it was last cleaned.",
    ),
    def(
        "min.compaction.lag.ms",
        Long,
        Some("log.cleaner.min.compaction.lag.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "The shortest a record of a compacted topic stays uncompacted: segments with records younger than this are not cleaned.",
    ),
    def(
        "min.insync.replicas",
        Int,
        Some("min.insync.replicas"),
        |v| parse_at_least::<i32>(v, 1),
        "In-sync replicas an acks=all write needs before it is accepted.",
    ),
    def(
        "preallocate",
        Boolean,
        Some("log.preallocate"),
        parse_bool,
        "Create segment files at their full size; Keel's segment files grow as they are written.",
    ),
    def(
        "remote.log.copy.disable",
        Boolean,
        None,
        parse_bool,
        "Stop copying to tiered storage; Keel has no tiered storage.",
    ),
    def(
        "remote.log.delete.on.disable",
        Boolean,
        None,
        parse_bool,
        "Delete tiered data when tiered storage is turned off; Keel has no tiered storage.",
    ),
    def(
        "remote.storage.enable",
        Boolean,
        None,
        |v| match parse_bool(v)?.as_str() {
            "false" => Ok("false".into()),
            _ => Err(
                "Tiered Storage functionality is disabled in the broker. Topic cannot be \
                 configured with remote log storage."
                    .into(),
            ),
        },
        "Tiered storage for the topic; Keel has none, so only false is accepted.",
    ),
    def(
        "retention.bytes",
        Long,
        Some("log.retention.bytes"),
        |v| parse_at_least::<i64>(v, i64::MIN),
        "Delete the oldest segments while a partition is larger than this; a negative value means no limit.",
    ),
    def(
        "retention.ms",
        Long,
        Some("log.retention.ms"),
        |v| parse_at_least::<i64>(v, -1),
        "Delete segments whose newest record is older than this; -1 keeps data forever.",
    ),
    def(
        "segment.bytes",
        Int,
        Some("log.segment.bytes"),
        |v| parse_at_least::<i32>(v, 14),
        "Roll to a new segment file once the active one reaches this size.",
    ),
    def(
        "segment.index.bytes",
        Int,
        Some("log.index.size.max.bytes"),
        |v| parse_at_least::<i32>(v, 4),
        "The largest a segment's index may grow; Keel's indexes grow as entries are added and roll with their segment.",
    ),
    def(
        "segment.jitter.ms",
        Long,
        Some("log.roll.jitter.ms"),
        |v| parse_at_least::<i64>(v, 0),
        "Roll each segment up to this much (a random share, at most segment.ms) before segment.ms, so that partitions do not all roll at once.",
    ),
    def(
        "segment.ms",
        Long,
        Some("log.roll.ms"),
        |v| parse_at_least::<i64>(v, 1),
        "Roll to a new segment file once the active one is this old.",
    ),
    def(
        "unclean.leader.election.enable",
        Boolean,
        Some("unclean.leader.election.enable"),
        parse_bool,
        "Allow a replica outside the ISR to become leader, at the risk of losing data.",
    ),
];

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

fn parse_between<T>(value: &str, min: T, max: T) -> Result<String, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.trim().parse::<T>() {
        Ok(parsed) if parsed >= min && parsed <= max => Ok(parsed.to_string()),
        _ => Err(format!("must be between {min} and {max}")),
    }
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

/// `delete`, `compact`, both, or neither (an empty list, as Kafka 4 allows:
/// no retention and no compaction). An empty element is refused and a
/// repeated one dropped, as Kafka does.
fn validate_cleanup_policy(value: &str) -> Result<String, String> {
    let value = value.trim();
    let (mut delete, mut compact) = (false, false);
    if !value.is_empty() {
        for policy in value.split(',').map(str::trim) {
            match policy {
                "delete" => delete = true,
                "compact" => compact = true,
                "" => return Err("values must not be empty".into()),
                other => return Err(format!("unknown cleanup policy '{other}'")),
            }
        }
    }
    Ok(match (delete, compact) {
        (true, true) => "compact,delete",
        (false, true) => "compact",
        (true, false) => "delete",
        (false, false) => "",
    }
    .into())
}

/// `*`, or a comma-separated list of `partition:broker`; empty is allowed.
fn validate_throttled_replicas(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(value.into());
    }
    let entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let valid = |entry: &&str| {
        entry.split_once(':').is_some_and(|(partition, broker)| {
            [partition, broker]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    match entries.iter().find(|e| !valid(e)) {
        Some(bad) => Err(format!(
            "'{bad}' is not partition:broker; give a list of them, or *"
        )),
        None => Ok(entries.join(",")),
    }
}

fn validate_compression_type(value: &str) -> Result<String, String> {
    match value.trim() {
        t @ ("producer" | "gzip" | "snappy" | "lz4" | "zstd" | "uncompressed") => Ok(t.into()),
        _ => Err("String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer".into()),
    }
}
