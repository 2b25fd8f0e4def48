//! Response frames: length, response header and body, encoded at the
//! request's version, with a Fetch response's records left in their files
//! until sent (see `response`).

use bytes::BytesMut;
use kafka_protocol::{
    messages::{ApiKey, ResponseHeader},
    protocol::{Encodable, buf::ByteBufMut},
};

use super::RequestError;
use crate::response::{FileRecords, ResponseFrame};

/// Room for the encoded parts of a response whose records stay in files:
/// headers and offsets, a few dozen bytes per partition.
const ENCODED_CAPACITY: usize = 4096;

/// Frames a response: length, response header, body, with the records
/// fields that stand in for `records` left in their files.
pub(crate) fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
    records: FileRecords,
) -> Result<ResponseFrame, RequestError> {
    if records.is_empty() {
        return encode_frame(api_key, version, correlation_id, response).map(Into::into);
    }
    let header = ResponseFrameHeader::new(api_key, version, correlation_id);
    header
        .size(response)
        .and_then(|size| {
            ResponseFrame::encode_with(records, ENCODED_CAPACITY, |buf| {
                header.encode(buf, size, response)
            })
        })
        .map_err(|e| encode_error(api_key, version, e))
}

pub(super) fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<BytesMut, RequestError> {
    let header = ResponseFrameHeader::new(api_key, version, correlation_id);
    let encoded = header.size(response).and_then(|size| {
        let mut frame = BytesMut::with_capacity(4 + size as usize);
        header.encode(&mut frame, size, response)?;
        Ok(frame)
    });
    encoded.map_err(|e| encode_error(api_key, version, e))
}

fn encode_error(api: ApiKey, version: i16, error: anyhow::Error) -> RequestError {
    RequestError::Encode {
        api,
        version,
        reason: error.to_string(),
    }
}

/// What precedes a response body in its frame.
struct ResponseFrameHeader {
    header: ResponseHeader,
    header_version: i16,
    version: i16,
}

impl ResponseFrameHeader {
    fn new(api_key: ApiKey, version: i16, correlation_id: i32) -> Self {
        Self {
            header: ResponseHeader::default().with_correlation_id(correlation_id),
            header_version: api_key.response_header_version(version),
            version,
        }
    }

    /// The frame's length, which its 4-byte prefix holds.
    fn size<R: Encodable>(&self, response: &R) -> anyhow::Result<i32> {
        let size =
            self.header.compute_size(self.header_version)? + response.compute_size(self.version)?;
        i32::try_from(size)
            .map_err(|_| anyhow::anyhow!("a {size}-byte response does not fit a frame"))
    }

    /// Writes the whole frame into `frame`: length, header, body.
    fn encode<B: ByteBufMut, R: Encodable>(
        &self,
        frame: &mut B,
        size: i32,
        response: &R,
    ) -> anyhow::Result<()> {
        frame.put_i32(size);
        self.header.encode(frame, self.header_version)?;
        response.encode(frame, self.version)
    }
}
