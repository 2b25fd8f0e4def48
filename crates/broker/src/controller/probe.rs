//! Telling a dead broker from a silent one: a process that dies has its
//! connections and listeners closed at once, so a listener that refuses a
//! connection right after the broker's heartbeat connection closed means
//! nothing serves there any more.

use std::{sync::Arc, time::Duration};

use keel_raft_metadata::MetadataImage;

use super::active_term;
use crate::broker::Broker;

/// A controller that takes over has heard no broker yet, and one of them
/// may be its predecessor, gone: every other registered broker is probed
/// as if its heartbeat connection had closed, so a dead one is fenced
/// without waiting a session (its successors still wait out a whole
/// lease, for this controller knows nothing of the last one it got).
pub(super) fn probe_everyone(broker: &Arc<Broker>, image: &MetadataImage) {
    for target in image.live_brokers() {
        if target.node_id != broker.config.node_id {
            tokio::spawn(probe(
                Arc::clone(broker),
                target.node_id,
                target.incarnation,
            ));
        }
    }
}

/// How long one probe of a broker's listener may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How many times, and how far apart, a broker's listener is probed: a
/// process being killed has its sockets closed one after another, so its
/// listener may still take (or, closing, reset) a connection just after
/// its heartbeat connection closed.
const PROBES: usize = 5;
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// The connection `node_id`'s heartbeats came on closed. A process that
/// dies has its connections closed and its listeners with them, so if its
/// Kafka listener refuses a connection now, nothing serves there any more:
/// its session lapses at once instead of a session timeout after its last
/// heartbeat. Anything else (the listener keeps answering or resetting
/// connections through every probe, or a probe times out as it does
/// across a network partition) leaves the session to run out. A broker
/// wrongly taken for gone is safe all the same: its successors wait out
/// the lease it may hold (`lease_left_ms`).
pub(super) async fn probe(broker: Arc<Broker>, node_id: i32, incarnation: u64) {
    let image = broker.image();
    let Some(target) = image
        .broker(node_id)
        .filter(|b| b.incarnation == incarnation && !b.fenced)
    else {
        return;
    };
    let address = format!("{}:{}", target.host, target.port);
    let mut listener = String::from("still takes connections");
    for attempt in 0..PROBES {
        if attempt > 0 {
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        let connect = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&address));
        let outcome = match connect.await {
            Ok(connected) => connected.map(drop).map_err(Some),
            Err(_elapsed) => Err(None),
        };
        let verdict = verdict(&outcome);
        if verdict == Verdict::Gone {
            tracing::info!(
                node_id,
                %address,
                "broker's heartbeat connection closed and its listener refuses connections: its process is gone"
            );
            if let Some(term) = active_term(&broker) {
                broker
                    .controller
                    .gone(term, &broker.image(), node_id, incarnation);
            }
            return;
        }
        listener = match outcome {
            Ok(()) => String::from("still takes connections"),
            Err(Some(error)) => format!("cannot be reached: {error}"),
            Err(None) => String::from("does not answer"),
        };
        if verdict == Verdict::LeaveToSession {
            break;
        }
    }
    tracing::info!(
        node_id,
        %address,
        listener,
        "broker's heartbeat connection closed but its listener is not known to refuse connections: its session is left to run out"
    );
}

/// What one probe of a broker's listener says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The listener refused the connection: nothing serves there any more.
    Gone,
    /// The listener took the connection, or reset it: a process being
    /// killed closes its listener with connections still in its queue, so
    /// a reset is its last moments as often as not. Probe again.
    LookAgain,
    /// No answer in time (as across a network partition) or no way there:
    /// nothing tells that the process is gone.
    LeaveToSession,
}

/// The verdict on a probe's outcome: connected, failed with an error, or
/// timed out (`Err(None)`).
fn verdict(outcome: &Result<(), Option<std::io::Error>>) -> Verdict {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    match outcome {
        Ok(()) => Verdict::LookAgain,
        Err(Some(error)) if error.kind() == ConnectionRefused => Verdict::Gone,
        Err(Some(error)) if matches!(error.kind(), ConnectionReset | ConnectionAborted) => {
            Verdict::LookAgain
        }
        Err(_) => Verdict::LeaveToSession,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn only_a_refusal_tells_a_broker_gone_and_a_reset_is_looked_at_again() {
        let failed = |kind| Err(Some(Error::from(kind)));
        assert_eq!(
            verdict(&failed(ErrorKind::ConnectionRefused)),
            Verdict::Gone
        );
        assert_eq!(
            verdict(&failed(ErrorKind::ConnectionReset)),
            Verdict::LookAgain
        );
        assert_eq!(
            verdict(&failed(ErrorKind::ConnectionAborted)),
            Verdict::LookAgain
        );
        assert_eq!(verdict(&Ok(())), Verdict::LookAgain);
        assert_eq!(verdict(&Err(None)), Verdict::LeaveToSession);
        assert_eq!(
            verdict(&failed(ErrorKind::HostUnreachable)),
            Verdict::LeaveToSession
        );
    }
}
