//! Raft nodes as they run in a broker: tokio tasks talking TCP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_raft_metadata::{
    MetadataHandle, MetadataRecord, NodeConfig, PeerConnection, ProposalError, Record,
    node::start,
    records::{AllocateProducerIds, DeleteTopic},
    testing::free_address,
};

fn allocate(start: i64) -> MetadataRecord {
    Record::AllocateProducerIds(AllocateProducerIds {
        node_id: 1,
        start,
        size: 10,
    })
    .into()
}

struct TestNode {
    handle: MetadataHandle,
    task: tokio::task::JoinHandle<Result<(), keel_raft_metadata::NodeError>>,
}

async fn launch(
    id: u64,
    address: &str,
    voters: &[(u64, String)],
    dir: &std::path::Path,
) -> TestNode {
    let mut config = NodeConfig::new(
        id,
        address.parse().unwrap(),
        address.to_string(),
        voters.to_vec(),
        dir.join(id.to_string()),
    );
    config.proposal_timeout = Duration::from_secs(3);
    config.snapshot_entries = 50;
    let (handle, task) = start(config).await.unwrap();
    TestNode { handle, task }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// What `found` finds, waiting for it up to `limit` on this thread (for
/// tests whose nodes run on runtimes of their own).
fn wait_for(limit: Duration, what: &str, mut found: impl FnMut() -> Option<usize>) -> usize {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(found) = found() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Voters 1, 2 and 3 at the first three of `addresses`.
fn three_voters(addresses: &[String]) -> Vec<(u64, String)> {
    (1..=3)
        .map(|id| (id, addresses[id as usize - 1].clone()))
        .collect()
}

/// Where in `nodes` the ready leader is.
fn leader_of(nodes: &[TestNode]) -> usize {
    nodes
        .iter()
        .position(|n| n.handle.status().core.leader_ready)
        .unwrap()
}

/// Starts every voter and waits until one of them leads.
async fn launch_voters(voters: &[(u64, String)], dir: &std::path::Path) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for (id, address) in voters {
        nodes.push(launch(*id, address, voters, dir).await);
    }
    wait_until("a leader is elected", || {
        nodes.iter().any(|n| n.handle.status().core.leader_ready)
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_commits_through_any_node_survives_its_leader_and_adds_a_learner() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..4).map(|_| free_address()).collect();
    let voters = three_voters(&addresses);
    let nodes = launch_voters(&voters, dir.path()).await;

    // Proposals through every node, followers forwarding to the leader.
    let mut next = 0;
    for round in 0..30 {
        let node = &nodes[round % 3];
        let image = node.handle.propose(allocate(next)).await.unwrap();
        next += 10;
        assert_eq!(image.next_producer_id(), next);
    }
    // A record the state machine refuses is reported as such, not retried.
    let refused = nodes[1]
        .handle
        .propose(
            Record::DeleteTopic(DeleteTopic {
                name: "nope".into(),
            })
            .into(),
        )
        .await;
    assert!(matches!(refused, Err(ProposalError::Rejected(_))));

    // A fourth node outside the voters joins as a learner and catches up
    // (by snapshot: the log was compacted every 50 entries).
    let learner = launch(4, &addresses[3], &voters, dir.path()).await;
    wait_until("the learner has the image", || {
        learner.handle.image().next_producer_id() == next
    })
    .await;
    assert!(learner.handle.status().core.learners.contains(&4));

    // Stop the leader: another voter takes over and commits continue.
    let leader = leader_of(&nodes);
    nodes[leader].handle.shutdown().await;
    nodes[leader].task.abort();
    let survivors: Vec<&TestNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, n)| n)
        .collect();
    let mut committed = None;
    for _ in 0..50 {
        // An attempt that timed out may have committed all the same.
        let image = survivors[0].handle.image();
        if image.next_producer_id() == next + 10 {
            committed = Some(image);
            break;
        }
        match survivors[0].handle.propose(allocate(next)).await {
            Ok(image) => {
                committed = Some(image);
                break;
            }
            Err(e) => {
                assert!(e.is_retriable(), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(committed.unwrap().next_producer_id(), next + 10);
    wait_until("the learner follows the new leader", || {
        learner.handle.image().next_producer_id() == next + 10
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_proposals_fail_in_time_and_the_image_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let voters = three_voters(&addresses);
    // Only one of three voters runs.
    let lonely = launch(1, &voters[0].1, &voters, dir.path()).await;
    let started = std::time::Instant::now();
    let result = lonely.handle.propose(allocate(0)).await;
    assert_eq!(result, Err(ProposalError::Timeout));
    // The proposal timeout is 3 s: the call returns, it does not hang.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(lonely.handle.image().next_producer_id(), 0);
}

#[tokio::test]
async fn a_single_node_leads_and_commits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let voters = vec![(1, address.clone())];
    let node = launch(1, &address, &voters, dir.path()).await;
    let image = node.handle.propose(allocate(0)).await.unwrap();
    assert_eq!(image.next_producer_id(), 10);
    assert!(node.handle.status().core.leader_ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shares_a_recent_confirmation_and_never_answers_from_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let voters = three_voters(&addresses);
    let nodes = launch_voters(&voters, dir.path()).await;
    let leader = leader_of(&nodes);
    let handle = nodes[leader].handle.clone();
    let long_ago = Duration::from_secs(60);

    // The first confirmation needs a round of its own, begun when asked.
    let asked = std::time::Instant::now();
    let first = handle.confirm_leadership(long_ago).await.unwrap();
    assert!(first >= asked, "a new round begins when it is asked for");

    // A caller content with an older one shares it, and still sees what
    // was committed before it asked.
    handle.propose(allocate(0)).await.unwrap();
    let shared = handle.confirm_leadership(long_ago).await.unwrap();
    assert_eq!(shared, first, "no new round");
    assert_eq!(handle.image().next_producer_id(), 10);

    // One that is not content gets a round begun after its call.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let asked = std::time::Instant::now();
    let fresh = handle
        .confirm_leadership(Duration::from_millis(10))
        .await
        .unwrap();
    assert!(fresh >= asked, "a round begun after the call");

    // Cut off from its followers, the leader answers only callers content
    // with the round it had, and with that round's start: never one of
    // the moment it is asked.
    for (i, node) in nodes.iter().enumerate() {
        if i != leader {
            node.handle.shutdown().await;
            node.task.abort();
        }
    }
    let old = handle.confirm_leadership(long_ago).await;
    assert!(
        matches!(old, Ok(began) if began == fresh) || old.is_err(),
        "an old confirmation is reported as old: {old:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let unconfirmable = tokio::time::timeout(
        Duration::from_secs(2),
        handle.confirm_leadership(Duration::from_millis(10)),
    )
    .await;
    assert!(
        !matches!(unconfirmable, Ok(Ok(_))),
        "no quorum, no recent confirmation: {unconfirmable:?}"
    );
}

async fn next_event(seen: &mut tokio::sync::mpsc::Receiver<PeerConnection>) -> PeerConnection {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("an event in time")
        .expect("the node runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_tells_when_a_peer_s_raft_link_opens_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..2).map(|_| free_address()).collect();
    let voters: Vec<(u64, String)> = (1..=2)
        .map(|id| (id, addresses[id as usize - 1].clone()))
        .collect();
    let mut config = NodeConfig::new(
        1,
        addresses[0].parse().unwrap(),
        addresses[0].clone(),
        voters.clone(),
        dir.path().join("1"),
    );
    let (peer_connections, mut seen) = tokio::sync::mpsc::channel(16);
    config.peer_connections = Some(peer_connections);
    let (watcher, _watcher_task) = start(config).await.unwrap();
    let peer = launch(2, &addresses[1], &voters, dir.path()).await;

    assert_eq!(next_event(&mut seen).await, PeerConnection::Opened(2));
    peer.handle.shutdown().await;
    peer.task.abort();
    assert_eq!(next_event(&mut seen).await, PeerConnection::Closed(2));
    watcher.shutdown().await;
}

/// A leader whose runtime stalls (a broker's async workers, where the
/// active controller's services run) loses the leadership: its transport
/// stalls with it, so its followers stop hearing it and elect one of
/// themselves, rather than every broker's lease lapsing for as long as
/// the stall lasts. Each node runs on a runtime of its own, as in a
/// broker.
#[test]
fn a_leader_whose_runtime_stalls_hands_the_leadership_on() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let voters = three_voters(&addresses);
    let runtimes: Vec<tokio::runtime::Runtime> = (0..3)
        .map(|_| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    let nodes: Vec<TestNode> = voters
        .iter()
        .zip(&runtimes)
        .map(|((id, address), runtime)| runtime.block_on(launch(*id, address, &voters, dir.path())))
        .collect();
    let leading_other_than = |leader: Option<usize>| {
        nodes
            .iter()
            .enumerate()
            .find(|(i, n)| Some(*i) != leader && n.handle.status().core.leader_ready)
            .map(|(i, _)| i)
    };
    let leader = wait_for(Duration::from_secs(10), "a leader is elected", || {
        leading_other_than(None)
    });

    // The campaign timeout is 450 to 800 ms; the stall lasts 4 s.
    runtimes[leader].spawn(async { std::thread::sleep(Duration::from_secs(4)) });
    wait_for(
        Duration::from_secs(3),
        "another node leads while the leader's runtime stalls",
        || leading_other_than(Some(leader)),
    );
}
