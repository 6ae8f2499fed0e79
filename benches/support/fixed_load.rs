//! A produce load of a fixed shape, written on the wire by hand: every request carries one
//! batch of the same number of records to one partition, a fixed number of requests in flight
//! per leader connection, acks=all. With idempotence the batches carry a producer id, its
//! epoch and consecutive sequences, and nothing else changes, so the brokers receive the same
//! requests, byte for byte but for those fields and the CRC, with and without it.
//!
//! A real client's batching follows its timing: the Java producer's records per request vary
//! from phase to phase by more than idempotence could change the broker's work, and the
//! broker's CPU per GB follows the requests per GB. This load takes that out of the
//! comparison: what differs is only what the broker does for a producer id.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proto_kafka::messages::metadata_request::MetadataRequestTopic;
use proto_kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use proto_kafka::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use proto_kafka::protocol::{Decodable, Encodable, StrBytes};
use proto_kafka::records::{Compression, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE};

use karst::client::records::{encode_batch, ProducerRecord};

/// Produce v9: the newest version that names topics (v13 names them by id).
const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;
const INIT_PRODUCER_ID_VERSION: i16 = 4;

/// Where the producer fields and the CRC sit in a magic-2 batch (the protocol guide's
/// "Record Batch" layout): the CRC covers everything from the attributes on.
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;

/// How long the topic may take to have a leader for every partition.
const METADATA_WAIT: Duration = Duration::from_secs(30);

/// The shape of the load.
pub struct FixedLoad {
    /// Requests in all, spread evenly over the leaders.
    pub requests: usize,
    pub records_per_batch: usize,
    pub record_bytes: usize,
    /// Requests in flight per leader connection (5, as the Java producer's default).
    pub in_flight: usize,
}

impl FixedLoad {
    /// Records sent: `requests` rounded down to a multiple of the leader count.
    pub fn records(&self, leaders: usize) -> usize {
        self.requests / leaders * leaders * self.records_per_batch
    }
}

/// Produces `load` to `topic` (created by the metadata request if missing) through the
/// brokers of `bootstrap`, with a producer id when `idempotent`; returns the records sent
/// and the records per second. Panics on any error: a benchmark with a refused request
/// measured nothing.
pub fn produce_fixed(
    bootstrap: &str,
    topic: &str,
    load: &FixedLoad,
    idempotent: bool,
) -> (usize, f64) {
    let first = bootstrap.split(',').next().expect("a bootstrap address");
    let leaders = partitions_by_leader(first, topic);
    let (producer_id, epoch) = if idempotent {
        init_producer_id(first)
    } else {
        (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    };
    let template = batch_template(load);
    wait_for_leaders(topic, &leaders);
    let per_leader = load.requests / leaders.len();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (address, partitions) in &leaders {
            let template = &template;
            scope.spawn(move || {
                let mut sequences: BTreeMap<i32, i32> =
                    partitions.iter().map(|p| (*p, 0)).collect();
                // Without idempotence too, each batch is copied and its CRC computed, so
                // the client does the same work on both sides.
                let mut next_batch = |partition: i32| {
                    if producer_id == NO_PRODUCER_ID {
                        return with_producer(
                            template,
                            NO_PRODUCER_ID,
                            NO_PRODUCER_EPOCH,
                            NO_SEQUENCE,
                        );
                    }
                    let sequence = sequences.get_mut(&partition).expect("own partition");
                    let batch = with_producer(template, producer_id, epoch, *sequence);
                    *sequence += load.records_per_batch as i32;
                    batch
                };
                let mut stream = TcpStream::connect(address).expect("connect to the leader");
                stream.set_nodelay(true).unwrap();
                let (mut sent, mut answered) = (0, 0);
                while answered < per_leader {
                    while sent < per_leader && sent - answered < load.in_flight {
                        let partition = partitions[sent % partitions.len()];
                        let request = produce_request(topic, partition, next_batch(partition));
                        stream
                            .write_all(&frame(
                                ApiKey::Produce,
                                PRODUCE_VERSION,
                                sent as i32,
                                &request,
                            ))
                            .expect("send a produce request");
                        sent += 1;
                    }
                    let mut body = read_response(&mut stream, ApiKey::Produce, PRODUCE_VERSION);
                    let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
                    for partition in response
                        .responses
                        .iter()
                        .flat_map(|t| &t.partition_responses)
                    {
                        assert_eq!(
                            partition.error_code, 0,
                            "produce to {topic}-{} refused: {:?}",
                            partition.index, partition.error_message
                        );
                    }
                    answered += 1;
                }
            });
        }
    });
    let records = load.records(leaders.len());
    (records, records as f64 / started.elapsed().as_secs_f64())
}

/// One batch of `load.records_per_batch` records without a producer id; the same bytes every
/// time, so only the producer fields differ between the two sides of a comparison.
fn batch_template(load: &FixedLoad) -> Bytes {
    let value = Bytes::from(
        (0..load.record_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<ProducerRecord> = (0..load.records_per_batch)
        .map(|_| ProducerRecord {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: Some(now_ms),
        })
        .collect();
    encode_batch(&records, Compression::None, now_ms).expect("encode the batch")
}

/// `template` with a producer id, epoch and base sequence, and the CRC that covers them.
fn with_producer(template: &Bytes, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let mut batch = BytesMut::from(&template[..]);
    batch[PRODUCER_ID_OFFSET..PRODUCER_EPOCH_OFFSET].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_OFFSET..BASE_SEQUENCE_OFFSET].copy_from_slice(&epoch.to_be_bytes());
    batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

fn produce_request(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    let data = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(batch));
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![data])])
}

/// `request` as a size-prefixed frame with its header.
fn frame(api: ApiKey, version: i16, correlation_id: i32, request: &impl Encodable) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("karst-bench-fixed-load")))
        .encode(&mut frame, api.request_header_version(version))
        .unwrap();
    request.encode(&mut frame, version).unwrap();
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame.to_vec()
}

/// The next response's body, after its header.
fn read_response(stream: &mut TcpStream, api: ApiKey, version: i16) -> Bytes {
    let mut size = [0; 4];
    stream.read_exact(&mut size).expect("read a response size");
    let mut body = vec![0; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("read a response");
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
    body
}

fn exchange(address: &str, api: ApiKey, version: i16, request: &impl Encodable) -> Bytes {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(&frame(api, version, 1, request)).unwrap();
    read_response(&mut stream, api, version)
}

/// The topic's partitions grouped by their leader's address, once every one has a leader.
fn partitions_by_leader(address: &str, topic: &str) -> BTreeMap<String, Vec<i32>> {
    let started = Instant::now();
    loop {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]));
        let mut body = exchange(address, ApiKey::Metadata, METADATA_VERSION, &request);
        let response = MetadataResponse::decode(&mut body, METADATA_VERSION).unwrap();
        let brokers: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let partitions = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .collect::<Vec<_>>();
        let led = |p: &&proto_kafka::messages::metadata_response::MetadataResponsePartition| {
            p.error_code == 0 && brokers.contains_key(&p.leader_id.0)
        };
        if !partitions.is_empty() && partitions.iter().all(led) {
            let mut leaders: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for partition in partitions {
                leaders
                    .entry(brokers[&partition.leader_id.0].clone())
                    .or_default()
                    .push(partition.partition_index);
            }
            return leaders;
        }
        assert!(
            started.elapsed() < METADATA_WAIT,
            "{topic} has no leader for every partition"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Returns once every leader accepts a produce to its partitions: a new topic's leaders may
/// be named by the metadata before they act as leaders. Each probe writes one record without
/// a producer id.
fn wait_for_leaders(topic: &str, leaders: &BTreeMap<String, Vec<i32>>) {
    let probe = batch_template(&FixedLoad {
        requests: 1,
        records_per_batch: 1,
        record_bytes: 1,
        in_flight: 1,
    });
    let started = Instant::now();
    for (address, partitions) in leaders {
        for &partition in partitions {
            loop {
                let request = produce_request(topic, partition, probe.clone());
                let mut body = exchange(address, ApiKey::Produce, PRODUCE_VERSION, &request);
                let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
                let refused = response
                    .responses
                    .iter()
                    .flat_map(|t| &t.partition_responses)
                    .any(|p| p.error_code != 0);
                if !refused {
                    break;
                }
                assert!(
                    started.elapsed() < METADATA_WAIT,
                    "{topic}-{partition} refuses produce requests"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn init_producer_id(address: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(proto_kafka::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    // A broker that has just started may answer COORDINATOR_LOAD_IN_PROGRESS (14) or
    // COORDINATOR_NOT_AVAILABLE (15) for a while (Apache Kafka does): retry those.
    let deadline = Instant::now() + METADATA_WAIT;
    loop {
        let mut body = exchange(
            address,
            ApiKey::InitProducerId,
            INIT_PRODUCER_ID_VERSION,
            &request,
        );
        let response = InitProducerIdResponse::decode(&mut body, INIT_PRODUCER_ID_VERSION).unwrap();
        let retriable = matches!(response.error_code, 14 | 15);
        if response.error_code == 0 || !retriable || Instant::now() > deadline {
            assert_eq!(response.error_code, 0, "InitProducerId refused");
            return (response.producer_id.0, response.producer_epoch);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
