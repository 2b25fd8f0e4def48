//! A minimal producer, to measure the broker rather than the client.
//!
//! librdkafka spends more CPU per GB producing 1 KiB messages than the
//! broker spends storing them, so on a machine the two share, it is the
//! client that sets the pace. This client encodes one Produce request
//! (acks=1, one partition, a batch of 1 KiB records about as large as
//! librdkafka's with `batch.size=1000000`) with the kafka-protocol crate
//! once, and sends it over and over on one connection with a bounded
//! number in flight, checking every response: a load generator that costs
//! about what a socket writer costs. Every batch is a valid batch the
//! broker validates, offsets and stores like any other.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::mpsc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
    records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
};

const VERSION: i16 = 9;
const BATCH_BYTES: usize = 1_000_000;
const IN_FLIGHT: usize = 5;

/// Produces `messages` values of `size` bytes to partition 0 of `topic`;
/// prints the line the other runs print.
pub fn produce(bootstrap: &str, topic: &str, messages: u64, size: usize) {
    let per_batch = (BATCH_BYTES / (size + 20)).max(1) as u64;
    let requests = messages.div_ceil(per_batch);
    let frame = produce_frame(topic, per_batch as i32, size);
    let mut socket = TcpStream::connect(bootstrap).expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut reader = socket.try_clone().expect("socket");
    let (done, slots) = mpsc::sync_channel::<()>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        done.send(()).expect("slots");
    }
    let cpu_before = crate::cpu_seconds();
    let started = Instant::now();
    let responses = std::thread::spawn(move || {
        for _ in 0..requests {
            check_response(&mut reader);
            // The writer may have finished: a slot nobody takes is fine.
            let _ = done.send(());
        }
    });
    for _ in 0..requests {
        slots.recv().expect("a slot");
        socket.write_all(&frame).expect("send");
    }
    responses.join().expect("responses");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::cpu_seconds() - cpu_before;
    let sent = requests * per_batch;
    let megabytes = sent as f64 * size as f64 / 1e6;
    println!(
        "produce-raw acks=1: {sent} messages of {size} B in {elapsed:.2} s: {:.0} msg/s, {:.1} MB/s, \
         {requests} requests of {per_batch} messages, {IN_FLIGHT} in flight, client cpu {cpu:.2} s",
        sent as f64 / elapsed,
        megabytes / elapsed,
    );
}

/// One whole Produce request frame, length prefix included.
fn produce_frame(topic: &str, records: i32, size: usize) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let value = Bytes::from(vec![b'k'; size]);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            // The encoder starts a new batch wherever offset - sequence
            // changes; a batch's first sequence, -1, says it has none.
            sequence: i - 1,
            timestamp: now,
            key: Some(Bytes::from(
                u64::from(i.unsigned_abs()).to_be_bytes().to_vec(),
            )),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, &records, &options).expect("encode the batch");
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.freeze())),
                ]),
        ]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("keel-bench")));
    let header_version = ApiKey::Produce.request_header_version(VERSION);
    let mut body = BytesMut::new();
    header
        .encode(&mut body, header_version)
        .expect("encode the header");
    request
        .encode(&mut body, VERSION)
        .expect("encode the request");
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.freeze()
}

/// Reads one response and fails on any error code.
fn check_response(reader: &mut TcpStream) {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).expect("a response");
    let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
    reader.read_exact(&mut body).expect("a response");
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(VERSION))
        .expect("a response header");
    let response = ProduceResponse::decode(&mut body, VERSION).expect("a produce response");
    for partition in response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
    {
        assert_eq!(partition.error_code, 0, "produce failed: {partition:?}");
    }
    assert!(!body.has_remaining());
}
