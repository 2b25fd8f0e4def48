use std::path::Path;

use kafka_protocol::{
    messages::{
        ApiKey, FetchResponse, TopicName,
        fetch_response::{FetchableTopicResponse, PartitionData},
    },
    protocol::StrBytes,
};
use keel_log::{LogConfig, PartitionLog, testing};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::api::encode_response as encode_response_frame;

/// A log of `batches` batches of `records` records of `value_len` bytes.
fn log_with(dir: &Path, batches: i32, records: i32, value_len: usize) -> PartitionLog {
    let (mut log, _) = PartitionLog::open(dir, LogConfig::default(), 0).unwrap();
    for i in 0..batches {
        let batch = testing::build_batch(&testing::BatchSpec {
            records,
            value_len,
            fill: b'a' + i as u8,
            ..Default::default()
        });
        log.append_as_leader(&batch, 0, 0).unwrap();
    }
    log
}

fn slice_of(log: &PartitionLog, offset: i64) -> ReadSlice {
    log.read(offset, usize::MAX, log.log_end_offset(), true)
        .unwrap()
        .unwrap()
}

/// A response with the two partitions' records given as `records`.
fn response(records: [Bytes; 2]) -> FetchResponse {
    let [first, second] = records;
    let partition = |index, records| {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(10)
            .with_records(Some(records))
    };
    FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![partition(0, first), partition(1, Bytes::new())]),
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("u")))
            .with_partitions(vec![partition(0, second)]),
    ])
}

/// At every version, old and flexible, a response whose records stay in
/// their files is, byte for byte, the response with the records read.
#[test]
fn a_spliced_frame_is_the_frame_with_the_records_read() {
    let dir = tempfile::tempdir().unwrap();
    let small = log_with(&dir.path().join("small"), 3, 5, 100);
    let large = log_with(&dir.path().join("large"), 2, 200, 1000);
    for version in [4, 11, 12, 16, 18] {
        let slices = [slice_of(&small, 0), slice_of(&large, 200)];
        let read = slices.clone().map(|s| s.read().unwrap());

        let mut records = FileRecords::default();
        let fields = slices.map(|s| records.field(s).unwrap());
        assert!(!records.is_empty());
        let spliced =
            encode_response_frame(ApiKey::Fetch, version, 7, &response(fields), records).unwrap();
        let file_parts = spliced
            .parts
            .iter()
            .filter(|part| matches!(part, Part::Records(_)))
            .count();
        assert_eq!(file_parts, 2);
        let copied = encode_response_frame(
            ApiKey::Fetch,
            version,
            7,
            &response(read),
            FileRecords::default(),
        )
        .unwrap();
        assert_eq!(copied.parts.len(), 1);
        let copied = copied.to_bytes().unwrap();
        assert_eq!(spliced.to_bytes().unwrap(), copied, "version {version}");
        assert_eq!(spliced.len(), copied.len());
    }
}

/// A stand-in placed twice, or never, is an encoding error rather than
/// zeros sent as records.
#[test]
fn a_stand_in_without_its_file_range_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 1, 5, 100);
    let mut records = FileRecords::default();
    let field = records.field(slice_of(&log, 0)).unwrap();
    let twice = response([field.clone(), field]);
    assert!(encode_response_frame(ApiKey::Fetch, 12, 1, &twice, records).is_err());

    let mut records = FileRecords::default();
    records.field(slice_of(&log, 0)).unwrap();
    let never = response([Bytes::new(), Bytes::new()]);
    assert!(encode_response_frame(ApiKey::Fetch, 12, 1, &never, records).is_err());
}

/// A connection's writing half, and a task returning what its client
/// received once the writer is dropped.
async fn connected() -> (OwnedWriteHalf, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (_, writer) = server.into_split();
    let received = tokio::spawn(async move {
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        received
    });
    (writer, received)
}

/// A response at `version` holding all of `log` in a file range.
fn frame_of_whole(log: &PartitionLog, version: i16) -> ResponseFrame {
    let mut records = FileRecords::default();
    let field = records.field(slice_of(log, 0)).unwrap();
    let response = response([field, Bytes::new()]);
    encode_response_frame(ApiKey::Fetch, version, 3, &response, records).unwrap()
}

/// Records larger than the socket takes at once go out in many sendfile
/// calls, waiting for the reader between them, and arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_larger_than_the_socket_buffer_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 8, 1000, 1000);
    let frame = frame_of_whole(&log, 16);
    let expected = frame.to_bytes().unwrap();
    assert!(expected.len() > 8_000_000);

    let (mut writer, reader) = connected().await;
    frame.send(&mut writer).await.unwrap();
    drop(writer);
    assert_eq!(reader.await.unwrap(), expected);
}

/// A segment cut short while its bytes are on their way (a replica
/// truncating a diverged log) fails the send: the frame's announced length
/// can no longer be met, and the connection must close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_fails_the_send() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2, 100, 1000);
    let frame = frame_of_whole(&log, 12);
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "log"))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(1000)
        .unwrap();

    let (mut writer, reader) = connected().await;
    let error = frame.send(&mut writer).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    drop(writer);
    assert!(reader.await.unwrap().len() < frame.len());
}
