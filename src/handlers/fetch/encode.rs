//! The Fetch response encoder (v4..=12), written out by hand so that record bytes can be
//! file regions sent with `sendfile` instead of bytes copied into the frame.
//!
//! Every other response is encoded by proto-kafka; the tests below check this encoder
//! against proto-kafka's for every version served.

use bytes::{BufMut, Bytes, BytesMut};
use karst_storage::ReadData;

use crate::network::frame::{Chunk, ResponseFrame};

/// First version with flexible (compact, tagged) encoding.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

pub struct PartitionResponse {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `(producer id, first offset)`; `None` encodes null.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    pub preferred_read_replica: i32,
    pub records: ReadData,
}

pub struct TopicResponse {
    pub name: String,
    pub partitions: Vec<PartitionResponse>,
}

pub struct FetchResponseBody {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicResponse>,
}

/// Collects encoded bytes and file regions in order.
struct Writer {
    chunks: Vec<Chunk>,
    current: BytesMut,
    flexible: bool,
}

impl Writer {
    fn unsigned_varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.current.put_u8(byte);
                return;
            }
            self.current.put_u8(byte | 0x80);
        }
    }

    fn array_length(&mut self, length: usize) {
        if self.flexible {
            self.unsigned_varint(length as u64 + 1);
        } else {
            self.current.put_i32(length as i32);
        }
    }

    fn string(&mut self, text: &str) {
        if self.flexible {
            self.unsigned_varint(text.len() as u64 + 1);
        } else {
            self.current.put_i16(text.len() as i16);
        }
        self.current.put_slice(text.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        if self.flexible {
            self.unsigned_varint(0);
        }
    }

    fn records(&mut self, records: ReadData) {
        let length = records.len();
        if self.flexible {
            self.unsigned_varint(length as u64 + 1);
        } else {
            self.current.put_i32(length as i32);
        }
        match records {
            ReadData::Bytes(bytes) if bytes.len() < INLINE_RECORD_BYTES_MAX => {
                self.current.put_slice(&bytes)
            }
            ReadData::Bytes(bytes) => self.push(Chunk::Bytes(bytes)),
            ReadData::File {
                file,
                position,
                length,
            } => self.push(Chunk::File {
                file,
                position,
                length,
            }),
        }
    }

    fn push(&mut self, chunk: Chunk) {
        let encoded = std::mem::take(&mut self.current).freeze();
        if !encoded.is_empty() {
            self.chunks.push(Chunk::Bytes(encoded));
        }
        self.chunks.push(chunk);
    }
}

/// Record bytes shorter than this are copied into the frame; longer ones travel as their
/// own chunk (no copy).
const INLINE_RECORD_BYTES_MAX: usize = 4096;

/// Encodes a complete Fetch response frame (length prefix, header, body) for `version`.
pub fn encode(version: i16, correlation_id: i32, body: FetchResponseBody) -> ResponseFrame {
    let flexible = version >= FIRST_FLEXIBLE_VERSION;
    let mut writer = Writer {
        chunks: Vec::new(),
        current: BytesMut::with_capacity(1024),
        flexible,
    };
    writer.current.put_i32(0); // length prefix, patched below
    writer.current.put_i32(correlation_id);
    writer.no_tagged_fields(); // response header v1
    writer.current.put_i32(body.throttle_time_ms);
    if version >= 7 {
        writer.current.put_i16(body.error_code);
        writer.current.put_i32(body.session_id);
    }
    writer.array_length(body.topics.len());
    for topic in body.topics {
        writer.string(&topic.name);
        writer.array_length(topic.partitions.len());
        for partition in topic.partitions {
            writer.current.put_i32(partition.partition_index);
            writer.current.put_i16(partition.error_code);
            writer.current.put_i64(partition.high_watermark);
            writer.current.put_i64(partition.last_stable_offset);
            if version >= 5 {
                writer.current.put_i64(partition.log_start_offset);
            }
            match &partition.aborted_transactions {
                None if flexible => writer.unsigned_varint(0),
                None => writer.current.put_i32(-1),
                Some(aborted) => {
                    writer.array_length(aborted.len());
                    for (producer_id, first_offset) in aborted {
                        writer.current.put_i64(*producer_id);
                        writer.current.put_i64(*first_offset);
                        writer.no_tagged_fields();
                    }
                }
            }
            if version >= 11 {
                writer.current.put_i32(partition.preferred_read_replica);
            }
            writer.records(partition.records);
            writer.no_tagged_fields();
        }
        writer.no_tagged_fields();
    }
    writer.no_tagged_fields();
    let tail = writer.current.freeze();
    if !tail.is_empty() {
        writer.chunks.push(Chunk::Bytes(tail));
    }
    let mut frame = ResponseFrame {
        chunks: writer.chunks,
    };
    let length = (frame.len() - 4) as u32;
    if let Some(Chunk::Bytes(first)) = frame.chunks.first_mut() {
        let mut patched = BytesMut::from(first.as_ref());
        patched[..4].copy_from_slice(&length.to_be_bytes());
        *first = patched.freeze();
    }
    frame
}

/// Flattens a frame whose chunks are all bytes (for tests and for fallbacks).
pub fn flatten(frame: &ResponseFrame) -> Option<Bytes> {
    let mut out = BytesMut::new();
    for chunk in &frame.chunks {
        match chunk {
            Chunk::Bytes(bytes) => out.put_slice(bytes),
            Chunk::File { .. } => return None,
        }
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_kafka::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use proto_kafka::messages::{ApiKey, BrokerId, FetchResponse, ProducerId, TopicName};
    use proto_kafka::protocol::StrBytes;

    fn sample(records: &[Bytes], aborted: bool) -> FetchResponseBody {
        FetchResponseBody {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 7,
            topics: vec![TopicResponse {
                name: "orders".into(),
                partitions: records
                    .iter()
                    .enumerate()
                    .map(|(index, bytes)| PartitionResponse {
                        partition_index: index as i32,
                        error_code: if index == 1 { 1 } else { 0 },
                        high_watermark: 100 + index as i64,
                        last_stable_offset: 100 + index as i64,
                        log_start_offset: 3,
                        aborted_transactions: aborted.then(|| vec![(42, 17)]),
                        preferred_read_replica: -1,
                        records: ReadData::Bytes(bytes.clone()),
                    })
                    .collect(),
            }],
        }
    }

    fn reference(version: i16, records: &[Bytes], aborted: bool) -> Bytes {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                PartitionData::default()
                    .with_partition_index(index as i32)
                    .with_error_code(if index == 1 { 1 } else { 0 })
                    .with_high_watermark(100 + index as i64)
                    .with_last_stable_offset(100 + index as i64)
                    .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                    .with_aborted_transactions(aborted.then(|| {
                        vec![AbortedTransaction::default()
                            .with_producer_id(ProducerId(42))
                            .with_first_offset(17)]
                    }))
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(bytes.clone()))
            })
            .collect();
        let response = FetchResponse::default()
            .with_session_id(if version >= 7 { 7 } else { 0 })
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(partitions)]);
        crate::handlers::encode_response(ApiKey::Fetch, version, 99, &response)
    }

    #[test]
    fn the_hand_encoder_matches_proto_kafka_for_every_served_version() {
        let small = Bytes::from_static(b"tiny records");
        let large = Bytes::from(vec![5u8; 10_000]);
        let records = [small, Bytes::new(), large];
        for version in 4..=12 {
            for aborted in [false, true] {
                let frame = encode(version, 99, sample(&records, aborted));
                let mine = flatten(&frame).unwrap();
                let theirs = reference(version, &records, aborted);
                assert_eq!(mine, theirs, "version {version}, aborted {aborted}");
            }
        }
    }
}
