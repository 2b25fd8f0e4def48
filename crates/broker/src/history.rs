//! The leadership history as operators read it: every leader change the
//! metadata log recorded (partition, leader epoch, Raft term, previous and
//! new leader, deciding controller, reason, ISR, eligible replicas, time),
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
    /// The old leader's log end offset and high watermark, -1 when the
    /// deciding controller did not know them.
    pub log_end_offset: i64,
    pub high_watermark: i64,
    /// When the change was decided, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
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
            timestamp_ms: c.timestamp_ms,
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
        "{:<24} {:<28} {:>6} {:>5} {:>8} {:<20} {:<12} {:<12} {:>10}\n",
        "TIME (UTC)",
        "PARTITION",
        "EPOCH",
        "TERM",
        "LEADER",
        "REASON",
        "ISR",
        "ELIGIBLE",
        "CONTROLLER"
    );
    for c in changes {
        let leader = format!("{}->{}", c.previous_leader, c.new_leader);
        out.push_str(&format!(
            "{:<24} {:<28} {:>6} {:>5} {:>8} {:<20} {:<12} {:<12} {:>10}\n",
            utc(c.timestamp_ms),
            format!("{}-{}", c.topic, c.partition),
            c.leader_epoch,
            c.raft_term,
            leader,
            c.reason,
            ids(&c.isr),
            ids(&c.eligible),
            c.controller
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
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_923_320_698), "2026-11-29T03:35:20.698Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
