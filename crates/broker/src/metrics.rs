//! Prometheus metrics in the text exposition format on `GET /metrics` of
//! `--metrics-listen`. Gauges are read from the broker's state when scraped;
//! only the proposal latency histogram is recorded as it happens.

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

/// Metrics recorded as events happen.
#[derive(Debug, Default)]
pub struct Metrics {
    pub proposal_latency: Histogram,
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
        "keel_is_controller",
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
    let (status, content_type, body) = if request_line.starts_with(b"GET /metrics ") {
        ("200 OK", "text/plain; version=0.0.4", render(broker))
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
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
