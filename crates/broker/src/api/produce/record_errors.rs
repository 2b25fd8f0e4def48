//! Kafka's answer to a batch holding records the topic refuses (KIP-467):
//! each such record's index in the batch with Kafka's message for it (the
//! first hundred; the log names no more), and Kafka's summary as the
//! partition's error message. The whole batch is
//! refused; a client fails the named records and, as librdkafka does, the
//! rest of the batch with them.

use kafka_protocol::{
    error::ResponseError,
    messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse},
    protocol::StrBytes,
};
use keel_log::{RecordFault, RejectedRecord};

use super::{ERROR_MESSAGE_VERSION, failure};

pub(super) fn rejected(
    topic: &str,
    index: i32,
    records: &[RejectedRecord],
    total: usize,
    error: ResponseError,
) -> PartitionProduceResponse {
    let record_errors: Vec<BatchIndexAndErrorMessage> = records
        .iter()
        .map(|record| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(record.batch_index)
                .with_batch_index_error_message(Some(StrBytes::from_string(message(
                    topic, index, record,
                ))))
        })
        .collect();
    let summary = if error == ResponseError::InvalidTimestamp {
        "One or more records have been rejected due to invalid timestamp".to_string()
    } else {
        let first_three: Vec<String> = record_errors
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    e.batch_index,
                    e.batch_index_error_message.as_deref().unwrap_or_default()
                )
            })
            .collect();
        format!(
            "One or more records have been rejected due to {total} record errors in total, and \
             only showing the first three errors at most: [{}]",
            first_three.join(", ")
        )
    };
    failure(index, error, Some(summary), ERROR_MESSAGE_VERSION).with_record_errors(record_errors)
}

fn message(topic: &str, index: i32, record: &RejectedRecord) -> String {
    match record.reason {
        RecordFault::MissingKey => format!(
            "Compacted topic cannot accept message without key in topic partition {topic}-{index}."
        ),
        // The offset is the record's within the batch, as Kafka reports it
        // before offsets are assigned.
        RecordFault::TimestampOutOfRange {
            timestamp,
            lowest,
            highest,
        } => format!(
            "Timestamp {timestamp} of message with offset {} is out of range. The timestamp \
             should be within [{lowest}, {highest}]",
            record.batch_index
        ),
    }
}
