//! The leadership history as operators read it: every leader change the
//! metadata log recorded (partition, leader epoch, Raft term, previous and
//! new leader, deciding controller, reason, ISR, eligible replicas, the old
//! leader's last known log end offset and high watermark, time, and
//! detection-to-commit latency),
//! served as JSON on `GET /v1/leadership-history` of the metrics listener
//! and printed by `keel history`, which asks any node for it.
//!
//! Every node holds the same history (it is part of the replicated image),
//! so any node answers alike.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use clap::Parser;
use keel_raft_metadata::{
    MetadataImage,
    records::{LeaderChangeReason, LeadershipChange},
};
use serde::{Deserialize, Serialize};

/// One leader change, as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub sequence: u64,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub raft_term: u64,
    pub previous_leader: i32,
    pub new_leader: i32,
    pub controller: i32,
    pub reason: String,
    pub isr: Vec<i32>,
    pub eligible: Vec<i32>,
    /// The old leader's log end offset and high watermark as it last
    /// reported them, -1 when the deciding controller did not know them;
    /// without the old leader's word, the high watermark is the highest
    /// any replica reported.
    pub log_end_offset: i64,
    pub high_watermark: i64,
    /// The new leader's log end offset, if the deciding controller knew it.
    pub new_leader_log_end_offset: Option<i64>,
    /// For an unclean election: how many offsets below the old leader's
    /// high watermark the new leader's log ends, records that may be lost.
    pub offsets_possibly_lost: Option<i64>,
    /// When the change was decided, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// From the deciding controller's detection of the need for the change
    /// to its commit; `None` when not recorded (topic creation, a restart
    /// taking leaderships away, a controller that failed first).
    pub commit_latency_ms: Option<i64>,
}

impl From<&LeadershipChange> for Change {
    fn from(c: &LeadershipChange) -> Self {
        Self {
            sequence: c.sequence,
            topic: c.topic.clone(),
            partition: c.partition,
            leader_epoch: c.leader_epoch,
            raft_term: c.raft_term,
            previous_leader: c.previous_leader,
            new_leader: c.new_leader,
            controller: c.controller,
            reason: LeaderChangeReason::label_of(c.reason).to_string(),
            isr: c.isr.clone(),
            eligible: c.eligible.clone(),
            log_end_offset: c.log_end_offset,
            high_watermark: c.high_watermark,
            new_leader_log_end_offset: c.new_leader_log_end_offset,
            offsets_possibly_lost: (c.reason == LeaderChangeReason::Unclean as i32
                && c.high_watermark >= 0)
                .then_some(c.new_leader_log_end_offset)
                .flatten()
                .map(|new| (c.high_watermark - new).max(0)),
            timestamp_ms: c.timestamp_ms,
            commit_latency_ms: (c.committed_at_ms > 0)
                .then(|| (c.committed_at_ms - c.timestamp_ms).max(0)),
        }
    }
}

/// Which changes to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    /// Only changes decided at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

impl Query {
    /// Parses `topic=T&partition=P&since=MS`; an unknown key or a bad
    /// number is an error naming it.
    pub fn from_url_query(query: &str) -> Result<Self, String> {
        let mut parsed = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "topic" => parsed.topic = Some(value.to_string()),
                "partition" => {
                    parsed.partition = Some(
                        value
                            .parse()
                            .map_err(|_| format!("partition must be a number, got '{value}'"))?,
                    );
                }
                "since" => {
                    parsed.since_ms = Some(value.parse().map_err(|_| {
                        format!("since must be milliseconds since the epoch, got '{value}'")
                    })?);
                }
                other => return Err(format!("unknown parameter '{other}'")),
            }
        }
        Ok(parsed)
    }

    fn to_url_query(&self) -> String {
        let mut pairs = Vec::new();
        if let Some(topic) = &self.topic {
            pairs.push(format!("topic={topic}"));
        }
        if let Some(partition) = self.partition {
            pairs.push(format!("partition={partition}"));
        }
        if let Some(since) = self.since_ms {
            pairs.push(format!("since={since}"));
        }
        pairs.join("&")
    }

    fn matches(&self, change: &LeadershipChange) -> bool {
        self.topic.as_ref().is_none_or(|t| *t == change.topic)
            && self.partition.is_none_or(|p| p == change.partition)
            && self.since_ms.is_none_or(|s| change.timestamp_ms >= s)
    }
}

/// The changes of `image`'s history that `query` selects, oldest first.
pub fn select(image: &MetadataImage, query: &Query) -> Vec<Change> {
    image
        .history()
        .filter(|c| query.matches(c))
        .map(Change::from)
        .collect()
}

/// The body of `GET /v1/leadership-history`.
pub fn to_json(changes: &[Change]) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        changes: &'a [Change],
    }
    serde_json::to_string(&Body { changes }).unwrap_or_else(|_| "{\"changes\":[]}".into())
}

/// `keel history`: the leadership history of a cluster, from any node.
#[derive(Debug, Parser)]
#[command(name = "keel history")]
struct HistoryArgs {
    /// A node's metrics listener (its --metrics-listen).
    #[arg(long, env = "KEEL_METRICS_LISTEN", value_name = "HOST:PORT")]
    server: String,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    partition: Option<i32>,
    /// Only changes since then: milliseconds since the Unix epoch, or a
    /// time ago such as 90s, 10m, 2h or 1d.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Print the changes as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `keel history ARGS...` (`args` without the program name and the
/// subcommand); returns what to print, or an error in one line.
pub fn run_cli(args: Vec<String>, now_ms: i64) -> Result<String, String> {
    let args = HistoryArgs::try_parse_from(std::iter::once("keel history".to_string()).chain(args))
        .map_err(|e| e.render().to_string())?;
    let since_ms = args
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms))
        .transpose()?;
    let query = Query {
        topic: args.topic,
        partition: args.partition,
        since_ms,
    };
    let body = http_get(
        &args.server,
        &format!("/v1/leadership-history?{}", query.to_url_query()),
    )?;
    #[derive(Deserialize)]
    struct Body {
        changes: Vec<Change>,
    }
    let changes = serde_json::from_str::<Body>(&body)
        .map_err(|e| {
            format!(
                "{} answered something else than the history: {e}",
                args.server
            )
        })?
        .changes;
    if args.json {
        return Ok(format!("{}\n", to_json(&changes)));
    }
    Ok(table(&changes))
}

/// `TIME` of `--since`: milliseconds since the epoch, or an amount of
/// seconds, minutes, hours or days ago.
fn parse_since(value: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let split = value.len().saturating_sub(1);
    let (amount, unit) = value.split_at(split);
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match amount.parse::<i64>() {
        Ok(amount) if unit_ms > 0 && amount >= 0 => Ok(now_ms - amount * unit_ms),
        _ => Err(format!(
            "--since: '{value}' is neither milliseconds since the epoch nor a time ago like 90s, 10m, 2h or 1d"
        )),
    }
}

fn table(changes: &[Change]) -> String {
    let mut out = format!(
        "{:<24} {:<28} {:>6} {:>5} {:>8} {:<20} {:<12} {:<12} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}\n",
        "TIME (UTC)",
        "PARTITION",
        "EPOCH",
        "TERM",
        "LEADER",
        "REASON",
        "ISR",
        "ELIGIBLE",
        "CONTROLLER",
        "OLD LEO",
        "OLD HW",
        "NEW LEO",
        "MAY LOSE",
        "COMMIT MS"
    );
    let known = |value: i64| {
        if value < 0 {
            "-".to_string()
        } else {
            value.to_string()
        }
    };
    for c in changes {
        let leader = format!("{}->{}", c.previous_leader, c.new_leader);
        out.push_str(&format!(
            "{:<24} {:<28} {:>6} {:>5} {:>8} {:<20} {:<12} {:<12} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}\n",
            utc(c.timestamp_ms),
            format!("{}-{}", c.topic, c.partition),
            c.leader_epoch,
            c.raft_term,
            leader,
            c.reason,
            ids(&c.isr),
            ids(&c.eligible),
            c.controller,
            known(c.log_end_offset),
            known(c.high_watermark),
            known(c.new_leader_log_end_offset.unwrap_or(-1)),
            known(c.offsets_possibly_lost.unwrap_or(-1)),
            known(c.commit_latency_ms.unwrap_or(-1)),
        ));
    }
    out
}

fn ids(ids: &[i32]) -> String {
    let list: Vec<String> = ids.iter().map(i32::to_string).collect();
    format!("[{}]", list.join(","))
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// A plain HTTP/1.1 GET; the body of a 200 answer.
fn http_get(server: &str, path: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(10);
    let mut stream =
        TcpStream::connect(server).map_err(|e| format!("cannot reach {server}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{server}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{server}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{server} did not answer HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{server} answered {status}: {}", body.trim()));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_query_names_a_bad_parameter() {
        assert_eq!(
            Query::from_url_query("topic=t&partition=2&since=5").unwrap(),
            Query {
                topic: Some("t".into()),
                partition: Some(2),
                since_ms: Some(5)
            }
        );
        assert!(
            Query::from_url_query("partition=x")
                .unwrap_err()
                .contains("partition")
        );
        assert!(
            Query::from_url_query("color=red")
                .unwrap_err()
                .contains("color")
        );
    }

    #[test]
    fn since_takes_epoch_milliseconds_or_a_time_ago() {
        assert_eq!(parse_since("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_since("90s", 100_000), Ok(10_000));
        assert_eq!(parse_since("2h", 10_000_000), Ok(2_800_000));
        assert!(
            parse_since("yesterday", 0)
                .unwrap_err()
                .contains("yesterday")
        );
        assert!(parse_since("5w", 0).is_err());
    }

    #[test]
    fn select_filters_by_topic_partition_and_time() {
        use keel_raft_metadata::{
            PartitionAssignment, Record,
            records::{CreateTopic, RegisterBroker},
        };
        let mut image = MetadataImage::default();
        let register = Record::RegisterBroker(RegisterBroker {
            node_id: 1,
            incarnation: 1,
            ..Default::default()
        });
        image.apply(&register.into(), 1).unwrap();
        for (name, id, timestamp_ms) in [("a", 1u8, 100), ("b", 2, 200)] {
            let create = Record::CreateTopic(CreateTopic {
                name: name.into(),
                topic_id: vec![id; 16],
                partitions: (0..2)
                    .map(|partition| PartitionAssignment {
                        partition,
                        replicas: vec![1],
                        leader: 1,
                        isr: vec![1],
                        ..Default::default()
                    })
                    .collect(),
                timestamp_ms,
                controller: 1,
                ..Default::default()
            });
            image.apply(&create.into(), 3).unwrap();
        }
        let picked = |query: Query| -> Vec<(String, i32)> {
            select(&image, &query)
                .into_iter()
                .map(|c| (c.topic, c.partition))
                .collect()
        };
        assert_eq!(picked(Query::default()).len(), 4);
        assert_eq!(
            picked(Query {
                topic: Some("b".into()),
                partition: Some(1),
                ..Query::default()
            }),
            vec![("b".to_string(), 1)]
        );
        assert_eq!(
            picked(Query {
                since_ms: Some(150),
                ..Query::default()
            }),
            vec![("b".to_string(), 0), ("b".to_string(), 1)]
        );
        let change = &select(&image, &Query::default())[0];
        assert_eq!(
            (change.reason.as_str(), change.raft_term, change.new_leader),
            ("topic_created", 3, 1)
        );
        let json = to_json(&select(&image, &Query::default()));
        assert!(
            json.starts_with("{\"changes\":[{\"sequence\":0,\"topic\":\"a\""),
            "{json}"
        );
    }

    #[test]
    fn an_unclean_change_says_what_may_be_lost_and_commit_latency_shows() {
        let change = |reason: LeaderChangeReason, new_leader_log_end_offset| {
            Change::from(&LeadershipChange {
                reason: reason as i32,
                high_watermark: 118,
                log_end_offset: 120,
                new_leader_log_end_offset,
                timestamp_ms: 1_000,
                committed_at_ms: 1_012,
                ..Default::default()
            })
        };
        let unclean = change(LeaderChangeReason::Unclean, Some(95));
        assert_eq!(unclean.offsets_possibly_lost, Some(23));
        assert_eq!(unclean.commit_latency_ms, Some(12));
        let ahead = change(LeaderChangeReason::Unclean, Some(130));
        assert_eq!(ahead.offsets_possibly_lost, Some(0));
        assert_eq!(
            change(LeaderChangeReason::Unclean, None).offsets_possibly_lost,
            None
        );
        let clean = change(LeaderChangeReason::BrokerFailure, Some(95));
        assert_eq!(clean.offsets_possibly_lost, None);
        let uncommitted = Change::from(&LeadershipChange::default());
        assert_eq!(uncommitted.commit_latency_ms, None);
        let table = table(&[unclean]);
        assert!(table.contains("MAY LOSE"), "{table}");
        assert!(
            table.lines().nth(1).is_some_and(|row| row.contains(" 23 ")),
            "{table}"
        );
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_923_320_698), "2026-11-29T03:35:20.698Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
