//! Three real `keel` processes, spoken to with raw Kafka requests: a
//! request for a partition sent to a broker that does not lead it gets
//! NOT_LEADER_OR_FOLLOWER with the KIP-951 hint naming the leader, a
//! broker without a quorum answers admin requests with a retriable error
//! within their timeout, and produce requests pipelined on one connection
//! are appended while those before them wait for a follower, yet answered
//! in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
        ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
        RequestHeader, ResponseHeader, TopicName,
        create_topics_request::{CreatableReplicaAssignment, CreatableTopic},
        fetch_request::{FetchPartition, FetchTopic},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use keel_log::testing::{BatchSpec, build_batch};
use keel_raft_metadata::testing::free_port;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Node {
    id: i32,
    kafka: String,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Node {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_cluster(dir: &Path, extra_args: &[&str]) -> Vec<Node> {
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = raft_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let kafka = format!("127.0.0.1:{}", free_port());
            let log = dir.join(format!("node-{id}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["--node-id", &id.to_string(), "--listen", &kafka])
                .args([
                    "--cluster-listen",
                    &format!("127.0.0.1:{}", raft_ports[id - 1]),
                ])
                .args(["--voters", &voters])
                .arg("--data-dir")
                .arg(dir.join(format!("node-{id}")))
                .args(extra_args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            Node {
                id: id as i32,
                kafka,
                child: Some(child),
                log,
            }
        })
        .collect();
    for node in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if log.contains("keel is ready") {
                break;
            }
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "node {} did not start ({}); its log:\n{log}",
                node.id,
                exited.map_or("still starting after 30 s".to_string(), |s| s.to_string()),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

/// A request frame: length, header, body.
fn frame<Req: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &Req,
) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("cluster-test")))
        .encode(&mut frame, api.request_header_version(version))
        .unwrap();
    request.encode(&mut frame, version).unwrap();
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Reads one response frame; returns its correlation id and body.
async fn read_response<Resp: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
) -> (i32, Resp) {
    let len = stream.read_i32().await.unwrap() as usize;
    let mut response = BytesMut::zeroed(len);
    stream.read_exact(&mut response).await.unwrap();
    let mut response = response.freeze();
    let header =
        ResponseHeader::decode(&mut response, api.response_header_version(version)).unwrap();
    let decoded = Resp::decode(&mut response, version).unwrap();
    assert!(!response.has_remaining());
    (header.correlation_id, decoded)
}

async fn call<Req: Encodable, Resp: Decodable>(
    address: &str,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(&frame(api, version, 1, request))
        .await
        .unwrap();
    read_response(&mut stream, api, version).await.1
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn metadata(address: &str, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    call(address, ApiKey::Metadata, 12, &request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_does_not_lead_redirects_with_the_leader_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), &[]);

    // Wait until every broker registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = metadata(&nodes[0].kafka, "hint").await;
        if response.brokers.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "brokers did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("hint"))
                .with_num_partitions(3)
                .with_replication_factor(1),
        ]);
    let created: CreateTopicsResponse =
        call(&nodes[1].kafka, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0]);

    let response = metadata(&nodes[2].kafka, "hint").await;
    let partition = &response.topics[0].partitions[0];
    let leader = partition.leader_id.0;
    let leader_port = response
        .brokers
        .iter()
        .find(|b| b.node_id.0 == leader)
        .unwrap()
        .port;
    let wrong = nodes.iter().find(|n| n.id != leader).unwrap();

    let produce = || {
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name("hint"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition.partition_index)
                            .with_records(Some(build_batch(&BatchSpec::default()).into())),
                    ]),
            ])
    };
    let response: ProduceResponse = call(&wrong.kafka, ApiKey::Produce, 10, &produce()).await;
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(answer.base_offset, -1);
    assert_eq!(answer.current_leader.leader_id, BrokerId(leader));
    assert_eq!(answer.current_leader.leader_epoch, 0);
    assert_eq!(response.node_endpoints.len(), 1);
    assert_eq!(response.node_endpoints[0].node_id, BrokerId(leader));
    assert_eq!(response.node_endpoints[0].port, leader_port);

    // Before KIP-951 versions the error comes without the hint.
    let response: ProduceResponse = call(&wrong.kafka, ApiKey::Produce, 9, &produce()).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 6);
    assert!(response.node_endpoints.is_empty());

    let topic_id = response_topic_id(&nodes[0].kafka).await;
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition.partition_index)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response: FetchResponse = call(&wrong.kafka, ApiKey::Fetch, 16, &fetch).await;
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.error_code, 6);
    assert_eq!(answer.current_leader.leader_id, BrokerId(leader));
    assert_eq!(response.node_endpoints[0].port, leader_port);

    // The leader itself accepts the same produce.
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    let response: ProduceResponse = call(&leader_node.kafka, ApiKey::Produce, 10, &produce()).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);

    // Without a quorum, an admin change fails within its timeout, retriably.
    let survivor = nodes[0].kafka.clone();
    nodes[1].kill();
    nodes[2].kill();
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(2_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("no-quorum"))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let started = Instant::now();
    let response: CreateTopicsResponse = call(&survivor, ApiKey::CreateTopics, 7, &create).await;
    let code = response.topics[0].error_code;
    assert!(
        code == 7 || code == 41,
        "expected REQUEST_TIMED_OUT or NOT_CONTROLLER, got {code}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Reads of the last known metadata still work.
    assert_eq!(metadata(&survivor, "hint").await.topics[0].error_code, 0);
}

async fn response_topic_id(address: &str) -> uuid::Uuid {
    metadata(address, "hint").await.topics[0].topic_id
}

/// Sends `signal` (STOP, CONT) to a node's process.
fn signal(node: &Node, signal: &str) {
    let pid = node.child.as_ref().unwrap().id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An acks=`acks` produce request of `records` records to partition 0.
fn produce_to(topic: &str, records: i32, acks: i16) -> ProduceRequest {
    let batch = build_batch(&BatchSpec {
        records,
        ..BatchSpec::default()
    });
    common::produce_request(topic, acks, batch).with_timeout_ms(30_000)
}

/// The leader's log end offset (the end of its latest leader epoch).
async fn log_end_offset(address: &str, topic: &str) -> i64 {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                ]),
        ]);
    let response: OffsetForLeaderEpochResponse =
        call(address, ApiKey::OffsetForLeaderEpoch, 4, &request).await;
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0, "{answer:?}");
    answer.end_offset
}

/// With one follower stopped but still in the ISR, an acks=all write
/// waits. The produce requests after it on the same connection are
/// appended meanwhile, not after the first is answered; a ListOffsets after
/// them waits for the acks=all writes before it, so it sees them; and the
/// answers come in request order, an acks=1 answer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_requests_on_one_connection_are_appended_while_earlier_ones_wait_for_followers() {
    let dir = tempfile::tempdir().unwrap();
    // A stopped follower is neither fenced nor taken out of the ISR
    // during the test.
    let nodes = start_cluster(
        dir.path(),
        &[
            "--min-insync-replicas",
            "2",
            "--replica-lag-time-max-ms",
            "120000",
            "--broker-session-timeout-ms",
            "120000",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let controller = loop {
        let response = metadata(&nodes[0].kafka, "pipelined").await;
        if response.brokers.len() == 3 && response.controller_id.0 > 0 {
            break response.controller_id.0;
        }
        assert!(Instant::now() < deadline, "brokers did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The stopped follower is not the controller, so the quorum and every
    // lease stay.
    let stopped = nodes.iter().find(|n| n.id != controller).unwrap();
    let leader = nodes.iter().find(|n| n.id != stopped.id).unwrap();
    let other = nodes
        .iter()
        .find(|n| n.id != stopped.id && n.id != leader.id)
        .unwrap();
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("pipelined"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![
                    CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![
                            BrokerId(leader.id),
                            BrokerId(other.id),
                            BrokerId(stopped.id),
                        ]),
                ]),
        ]);
    let created: CreateTopicsResponse = call(&leader.kafka, ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0]);
    loop {
        let response = metadata(&leader.kafka, "pipelined").await;
        let ready = response.topics[0]
            .partitions
            .first()
            .is_some_and(|p| p.leader_id.0 == leader.id && p.isr_nodes.len() == 3);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the partition has no full ISR");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    signal(stopped, "STOP");
    let mut pipelined = TcpStream::connect(&leader.kafka).await.unwrap();
    let list_offsets = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("pipelined"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(-1),
                ]),
        ]);
    let mut requests = frame(ApiKey::Produce, 9, 1, &produce_to("pipelined", 3, -1));
    requests.extend_from_slice(&frame(
        ApiKey::Produce,
        9,
        2,
        &produce_to("pipelined", 2, -1),
    ));
    requests.extend_from_slice(&frame(
        ApiKey::Produce,
        9,
        3,
        &produce_to("pipelined", 1, 1),
    ));
    requests.extend_from_slice(&frame(ApiKey::ListOffsets, 7, 4, &list_offsets));
    pipelined.write_all(&requests).await.unwrap();

    // Every batch is in the leader's log while the first still waits.
    let appended = Instant::now() + Duration::from_secs(10);
    while log_end_offset(&leader.kafka, "pipelined").await < 6 {
        assert!(
            Instant::now() < appended,
            "the second produce request was not appended while the first waited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), pipelined.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "an acks=all write was answered without its follower"
    );

    signal(stopped, "CONT");
    let (id, first): (i32, ProduceResponse) =
        read_response(&mut pipelined, ApiKey::Produce, 9).await;
    assert_eq!(id, 1);
    let first = &first.responses[0].partition_responses[0];
    assert_eq!((first.error_code, first.base_offset), (0, 0), "{first:?}");
    let (id, second): (i32, ProduceResponse) =
        read_response(&mut pipelined, ApiKey::Produce, 9).await;
    assert_eq!(id, 2);
    let second = &second.responses[0].partition_responses[0];
    assert_eq!(
        (second.error_code, second.base_offset),
        (0, 3),
        "{second:?}"
    );
    // Answered at once, after the answers before it.
    let (id, third): (i32, ProduceResponse) =
        read_response(&mut pipelined, ApiKey::Produce, 9).await;
    assert_eq!(id, 3);
    let third = &third.responses[0].partition_responses[0];
    assert_eq!((third.error_code, third.base_offset), (0, 5), "{third:?}");
    let (id, listed): (i32, ListOffsetsResponse) =
        read_response(&mut pipelined, ApiKey::ListOffsets, 7).await;
    assert_eq!(id, 4);
    let listed = &listed.topics[0].partitions[0];
    assert_eq!(listed.error_code, 0);
    assert!(
        listed.offset >= 5,
        "a ListOffsets after two acknowledged acks=all writes sees both: {listed:?}"
    );
}
