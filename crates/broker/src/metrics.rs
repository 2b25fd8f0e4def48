//! Prometheus metrics in the text exposition format on `GET /metrics` of
//! `--metrics-listen`. Gauges are read from the broker's state when scraped;
//! the proposal latency histogram and the ISR change counters are recorded
//! as they happen. Per-partition series (high watermark, log end offset)
//! are rendered only with `--metrics-per-partition`, so the number of
//! series stays bounded by default.
//!
//! The same listener takes an operator's leadership move,
//! `POST /admin/move-leader?topic=T&partition=P&to=B`, and serves the
//! leadership history, `GET /v1/leadership-history` (see `history`).

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::broker::Broker;

mod leadership;

pub use leadership::Transitions;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const MAX_REQUEST_HEAD: usize = 8192;

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// A Prometheus counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What ended the session of a broker the controller fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceCause {
    /// No heartbeat within the session timeout.
    SessionTimeout,
    /// Its heartbeat connection closed and its listener refused
    /// connections.
    ProcessGone,
}

impl FenceCause {
    const ALL: [Self; 2] = [Self::SessionTimeout, Self::ProcessGone];

    pub fn label(self) -> &'static str {
        match self {
            Self::SessionTimeout => "session_timeout",
            Self::ProcessGone => "process_gone",
        }
    }
}

/// Brokers this node fenced as the active controller, by cause.
#[derive(Debug, Default)]
pub struct Fences([Counter; FenceCause::ALL.len()]);

impl Fences {
    pub fn count(&self, cause: FenceCause) {
        self.0[cause as usize].inc_by(1);
    }

    fn render(&self, out: &mut String) {
        labelled_counter(
            out,
            "keel_controller_fenced_brokers_total",
            "Brokers this node fenced as the active controller, by what ended their sessions: no heartbeat within the session timeout, or the process seen gone (its listener refused connections once its heartbeat connection closed).",
            "cause",
            FenceCause::ALL.map(|cause| (cause.label(), self.0[cause as usize].get())),
        );
    }
}

/// Metrics recorded as events happen.
#[derive(Debug, Default)]
pub struct Metrics {
    pub proposal_latency: Histogram,
    /// Followers taken out of, and into, the ISR of partitions led here.
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    /// Times this broker's lease lapsed.
    pub lease_expiries: Counter,
    /// Client connections closed because this broker, presumed deposed,
    /// sent the client to another broker (see `api::produce`).
    pub deposed_hang_ups: Counter,
    pub fences: Fences,
    /// From planning an election batch to its commit.
    pub election_latency: Histogram,
    pub leader_transitions: Transitions,
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// A counter with one series per value of `label`.
fn labelled_counter<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, count) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}

/// Renders every metric.
pub fn render(broker: &Broker) -> String {
    let mut out = String::new();
    let status = broker.metadata.status();
    let core = &status.core;
    let node = broker.config.node_id;
    gauge(&mut out, "keel_node_id", "This node's id.", node);
    gauge(&mut out, "keel_raft_term", "Current Raft term.", core.term);
    gauge(
        &mut out,
        "keel_raft_commit_index",
        "Raft commit index.",
        core.commit_index,
    );
    gauge(
        &mut out,
        "keel_raft_applied_index",
        "Raft index applied to the metadata image.",
        core.applied_index,
    );
    gauge(
        &mut out,
        "keel_raft_snapshot_index",
        "Index of the latest metadata snapshot.",
        core.snapshot_index,
    );
    gauge(
        &mut out,
        "keel_raft_voters",
        "Voters in the Raft configuration.",
        core.voters.len(),
    );
    gauge(
        &mut out,
        "keel_raft_learners",
        "Learners in the Raft configuration.",
        core.learners.len(),
    );
    gauge(
        &mut out,
        "keel_controller_is_active",
        "1 if this node is the active controller (the Raft leader, ready to serve).",
        u8::from(core.leader_ready),
    );
    gauge(
        &mut out,
        "keel_controller_id",
        "The active controller's node id as this node knows it, -1 if none.",
        broker.controller_id(),
    );
    counter(
        &mut out,
        "keel_controller_changes_total",
        "Times this node saw the controller change.",
        status.leader_changes,
    );
    broker.metrics.proposal_latency.render(
        &mut out,
        "keel_metadata_proposal_latency_seconds",
        "Time from proposing a metadata change to applying it on this node.",
    );
    gauge(
        &mut out,
        "keel_lease_held",
        "1 while this broker's lease holds: it may take writes for the partitions it leads.",
        u8::from(broker.lease.holds(std::time::Instant::now())),
    );
    counter(
        &mut out,
        "keel_lease_expiries_total",
        "Times this broker's lease lapsed (the controller did not answer its heartbeats in time).",
        broker.metrics.lease_expiries.get(),
    );
    counter(
        &mut out,
        "keel_deposed_hang_ups_total",
        "Producer connections closed because this broker's lease lapsed a session ago (cut off from the controller), so that the client asks another broker where its partitions went.",
        broker.metrics.deposed_hang_ups.get(),
    );
    let sessions = broker.fetch_sessions().stats();
    gauge(
        &mut out,
        "keel_fetch_sessions",
        "Incremental fetch sessions (KIP-227) this broker holds for its fetchers, followers and consumers.",
        sessions.sessions,
    );
    gauge(
        &mut out,
        "keel_fetch_session_partitions",
        "Partitions held by those sessions.",
        sessions.partitions,
    );
    counter(
        &mut out,
        "keel_fetch_session_evictions_total",
        "Fetch sessions evicted to make room for new ones (the cache holds 1000).",
        sessions.evictions,
    );
    counter(
        &mut out,
        "keel_incremental_fetches_total",
        "Incremental fetches served: requests naming only the partitions whose fetch changed.",
        sessions.incremental_fetches,
    );
    broker.metrics.fences.render(&mut out);
    broker.metrics.leader_transitions.render(&mut out);
    broker.metrics.election_latency.render(
        &mut out,
        "keel_election_commit_latency_seconds",
        "Time from planning a batch of elections (failure detected) to its commit.",
    );
    let image = broker.image();
    gauge(
        &mut out,
        "keel_registered_brokers",
        "Brokers registered in the cluster.",
        image.brokers().count(),
    );
    gauge(
        &mut out,
        "keel_fenced_brokers",
        "Registered brokers that are fenced.",
        image.brokers().filter(|b| b.fenced).count(),
    );
    gauge(
        &mut out,
        "keel_topics",
        "Topics in the cluster.",
        image.topics().count(),
    );
    gauge(
        &mut out,
        "keel_offline_partitions",
        "Partitions without a leader (no live in-sync or eligible replica), as this node's metadata has them.",
        image
            .topics()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader < 0)
            .count(),
    );
    let hosted = broker.replicas.all();
    gauge(
        &mut out,
        "keel_partitions_hosted",
        "Partition replicas on this broker.",
        hosted.len(),
    );
    let led = image
        .topics()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader == node)
        .count();
    gauge(
        &mut out,
        "keel_partitions_led",
        "Partitions this broker leads.",
        led,
    );
    render_replication(&mut out, broker);
    gauge(
        &mut out,
        "keel_metadata_history_records",
        "Leadership changes kept in the history.",
        image.history().count(),
    );
    gauge(
        &mut out,
        "keel_metadata_image_digest",
        "CRC-32C of the metadata image: equal on nodes that applied the same records.",
        crc32c::crc32c(&keel_raft_metadata::snapshot::encode(
            &image,
            &Default::default(),
        )),
    );
    out
}

/// Under-replicated and under-min-ISR partitions, ISR changes and follower
/// lag, from the partitions this broker leads.
fn render_replication(out: &mut String, broker: &Broker) {
    let now = crate::broker::now_ms();
    let mut under_replicated = 0;
    let mut under_min_isr = 0;
    let mut max_lag_records = 0;
    let mut max_lag_ms = 0;
    let mut per_partition = String::new();
    for partition in broker.replicas.all() {
        if broker.config.metrics_per_partition {
            let labels = format!(
                "topic=\"{}\",partition=\"{}\"",
                partition.topic(),
                partition.index()
            );
            let _ = writeln!(
                per_partition,
                "keel_partition_high_watermark{{{labels}}} {}\nkeel_partition_log_end_offset{{{labels}}} {}",
                partition.high_watermark(),
                partition.log_end_offset()
            );
        }
        let Some((isr, min_insync_replicas)) = partition.isr() else {
            continue;
        };
        let lag = partition.follower_lag(now);
        if isr.len() < lag.len() + 1 {
            under_replicated += 1;
        }
        if isr.len() < min_insync_replicas {
            under_min_isr += 1;
        }
        for (_, records, ms) in lag {
            max_lag_records = max_lag_records.max(records);
            max_lag_ms = max_lag_ms.max(ms);
        }
    }
    gauge(
        out,
        "keel_under_replicated_partitions",
        "Partitions led here whose ISR is smaller than their replica set.",
        under_replicated,
    );
    gauge(
        out,
        "keel_under_min_isr_partitions",
        "Partitions led here whose ISR is below min.insync.replicas (acks=all fails, the high watermark stops).",
        under_min_isr,
    );
    counter(
        out,
        "keel_isr_shrinks_total",
        "Followers taken out of the ISR of partitions led here.",
        broker.metrics.isr_shrinks.get(),
    );
    counter(
        out,
        "keel_isr_expands_total",
        "Followers taken into the ISR of partitions led here.",
        broker.metrics.isr_expands.get(),
    );
    gauge(
        out,
        "keel_follower_max_lag_records",
        "The largest number of records a follower of a partition led here is behind.",
        max_lag_records,
    );
    gauge(
        out,
        "keel_follower_max_lag_ms",
        "The longest time a follower of a partition led here has not been caught up.",
        max_lag_ms,
    );
    if !per_partition.is_empty() {
        let _ = writeln!(
            out,
            "# HELP keel_partition_high_watermark High watermark of each hosted partition.\n# TYPE keel_partition_high_watermark gauge\n# HELP keel_partition_log_end_offset Log end offset of each hosted partition.\n# TYPE keel_partition_log_end_offset gauge"
        );
        out.push_str(&per_partition);
    }
}

/// Serves `GET /metrics` until the task is aborted.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &broker).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || head.len() + read > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let history_query = request_line
        .strip_prefix("GET /v1/leadership-history")
        .and_then(|rest| rest.split(' ').next())
        .filter(|query| query.is_empty() || query.starts_with('?'));
    let (status, content_type, body) = if request_line.starts_with("GET /metrics ") {
        ("200 OK", "text/plain; version=0.0.4", render(broker))
    } else if let Some(query) = history_query {
        match crate::history::Query::from_url_query(query.trim_start_matches('?')) {
            Ok(query) => (
                "200 OK",
                "application/json",
                crate::history::to_json(&crate::history::select(&broker.image(), &query)),
            ),
            Err(problem) => ("400 Bad Request", "text/plain", format!("{problem}\n")),
        }
    } else if let Some(query) = request_line
        .strip_prefix("POST /admin/move-leader?")
        .and_then(|rest| rest.split(' ').next())
    {
        let (status, body) = move_leader(broker, query).await;
        (status, "text/plain", body)
    } else {
        (
            "404 Not Found",
            "text/plain",
            "try GET /metrics, GET /v1/leadership-history?topic=T&partition=P&since=MS or POST /admin/move-leader?topic=T&partition=P&to=BROKER\n"
                .to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// How long an operator's leadership move waits for the metadata quorum.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /admin/move-leader?topic=T&partition=P&to=B`: moves leadership of
/// a partition to broker B, a live member of its ISR, at the next leader
/// epoch (reason `manual` in the leadership history).
async fn move_leader(broker: &Broker, query: &str) -> (&'static str, String) {
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    let (Some(topic), Some(partition), Some(to)) = (
        param("topic"),
        param("partition").and_then(|p| p.parse::<i32>().ok()),
        param("to").and_then(|b| b.parse::<i32>().ok()),
    ) else {
        return (
            "400 Bad Request",
            "give topic, partition (a number) and to (a broker id)\n".to_string(),
        );
    };
    let moved = crate::replication::leadership::move_leader(
        broker,
        topic,
        partition,
        crate::replication::leadership::Target::Broker(to),
        keel_raft_metadata::records::LeaderChangeReason::Manual,
        MOVE_TIMEOUT,
    )
    .await;
    match moved {
        Ok((leader, epoch)) => (
            "200 OK",
            format!("leader {leader} at leader epoch {epoch}\n"),
        ),
        Err(error) => ("409 Conflict", format!("{error}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_into_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(30));
        let mut out = String::new();
        histogram.render(&mut out, "h", "help");
        assert!(out.contains("h_bucket{le=\"0.0005\"} 1"));
        assert!(out.contains("h_bucket{le=\"0.05\"} 2"));
        assert!(out.contains("h_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("h_count 2"));
    }
}
