//! Three real `keel` processes, spoken to with raw Kafka requests: a
//! request for a partition sent to a broker that does not lead it gets
//! NOT_LEADER_OR_FOLLOWER with the KIP-951 hint naming the leader, and a
//! broker without a quorum answers admin requests with a retriable error
//! within their timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
        MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
        ResponseHeader, TopicName,
        create_topics_request::CreatableTopic,
        fetch_request::{FetchPartition, FetchTopic},
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use keel_log::testing::{BatchSpec, build_batch};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

fn start_cluster(dir: &Path) -> Vec<Node> {
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = raft_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let nodes: Vec<Node> = (1..=3)
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
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&node.log)
            .unwrap_or_default()
            .contains("keel is ready")
        {
            assert!(Instant::now() < deadline, "node {} did not start", node.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

async fn call<Req: Encodable, Resp: Decodable>(
    address: &str,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("cluster-test")))
        .encode(&mut frame, api.request_header_version(version))
        .unwrap();
    request.encode(&mut frame, version).unwrap();
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    let len = stream.read_i32().await.unwrap() as usize;
    let mut response = BytesMut::zeroed(len);
    stream.read_exact(&mut response).await.unwrap();
    let mut response = response.freeze();
    ResponseHeader::decode(&mut response, api.response_header_version(version)).unwrap();
    let decoded = Resp::decode(&mut response, version).unwrap();
    assert!(!response.has_remaining());
    decoded
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
    let mut nodes = start_cluster(dir.path());

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
