//! Errors of the client: transport failures, protocol failures, and Kafka error codes.
//!
//! Transport and protocol errors keep their source. Kafka error codes returned by a broker
//! become [`KafkaError`], which names the code the way Kafka's documentation and tools do
//! (`TOPIC_ALREADY_EXISTS`) and carries the broker's error message when it sent one.

use std::fmt;

use proto_kafka::messages::ApiKey;
use proto_kafka::protocol::VersionRange;
use proto_kafka::{ProtoError, ResponseError};

/// Everything that can go wrong between the client and a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {address}")]
    Connect {
        /// The `host:port` we dialled.
        address: String,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection did not open in time.
    #[error("timed out after {timeout_ms} ms connecting to {address}")]
    ConnectTimeout {
        /// The `host:port` we dialled.
        address: String,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// Reading or writing the socket failed; the connection is unusable afterwards.
    #[error("connection to {address} failed during a {api:?} request")]
    Io {
        /// The broker's `host:port`.
        address: String,
        /// The request in flight.
        api: ApiKey,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The broker did not answer in time; the connection is unusable afterwards.
    #[error("{api:?} request to {address} timed out after {timeout_ms} ms")]
    RequestTimeout {
        /// The broker's `host:port`.
        address: String,
        /// The request in flight.
        api: ApiKey,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// A previous failure left the connection in an unknown state.
    #[error("connection to {address} is closed after an earlier failure")]
    ConnectionBroken {
        /// The broker's `host:port`.
        address: String,
    },
    /// The broker announced a response larger than we accept (or a negative size).
    #[error(
        "{api:?} response from {address} announces {size_bytes} bytes; the limit is {limit_bytes}"
    )]
    ResponseTooLarge {
        /// The broker's `host:port`.
        address: String,
        /// The request in flight.
        api: ApiKey,
        /// The announced size.
        size_bytes: i64,
        /// [`crate::client::connection::RESPONSE_BYTES_MAX`] or the configured limit.
        limit_bytes: usize,
    },
    /// The request could not be encoded at the chosen version.
    #[error("cannot encode a {api:?} v{version} request")]
    Encode {
        /// The request.
        api: ApiKey,
        /// The version we tried.
        version: i16,
        /// What the codec refused.
        #[source]
        source: ProtoError,
    },
    /// The response could not be decoded.
    #[error("cannot decode the {api:?} v{version} response from {address}")]
    Decode {
        /// The broker's `host:port`.
        address: String,
        /// The request it answers.
        api: ApiKey,
        /// The version we decoded with.
        version: i16,
        /// What the codec refused.
        #[source]
        source: ProtoError,
    },
    /// The response answers some other request: the stream is out of step.
    #[error("response from {address} has correlation id {received}, expected {expected}")]
    CorrelationMismatch {
        /// The broker's `host:port`.
        address: String,
        /// The id we sent.
        expected: i32,
        /// The id we got back.
        received: i32,
    },
    /// The request's API key is not one proto-kafka knows.
    #[error("unknown API key {api_key}")]
    UnknownApiKey {
        /// The raw key.
        api_key: i16,
    },
    /// Client and broker share no version of an API.
    #[error("{address} does not support a version of {api:?} this client speaks (client: {client}, broker: {})",
        broker.map_or_else(|| "none".to_owned(), |range| range.to_string()))]
    UnsupportedVersion {
        /// The broker's `host:port`.
        address: String,
        /// The API.
        api: ApiKey,
        /// Versions this client can speak.
        client: VersionRange,
        /// Versions the broker advertised, if it advertised the API at all.
        broker: Option<VersionRange>,
    },
    /// The broker answered with a Kafka error code.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A fetched record batch is corrupt or uses an unsupported format.
    #[error("cannot decode records of {topic}-{partition}")]
    Records {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the decoder refused.
        #[source]
        source: ProtoError,
    },
    /// Producing needs records encoded into a batch, and that failed.
    #[error("cannot encode a record batch for {topic}-{partition}")]
    EncodeRecords {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the encoder refused.
        #[source]
        source: ProtoError,
    },
    /// A partition has no leader we can reach, or is missing from metadata.
    #[error("{topic}-{partition} has no available leader")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A broker id named as leader is absent from the metadata's broker list.
    #[error("broker {broker_id} is not in the cluster metadata")]
    UnknownBroker {
        /// The id.
        broker_id: i32,
    },
    /// The broker's answer lacks an entry we asked for.
    #[error("the {api:?} response has no entry for {what}")]
    MissingResult {
        /// The API.
        api: ApiKey,
        /// What was missing (a topic, a partition, a resource).
        what: String,
    },
}

impl ClientError {
    /// The Kafka error code behind this error, if a broker returned one.
    pub fn kafka_code(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka(error) => Some(error.code),
            _ => None,
        }
    }
}

/// A Kafka error code returned for one operation, with the broker's message if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    /// What we asked for, e.g. `create topic "orders"`.
    pub operation: String,
    /// The code.
    pub code: ResponseError,
    /// The broker's free-text explanation.
    pub message: Option<String>,
}

impl KafkaError {
    /// Returns the error for `code`, or `None` when `code` is 0 (no error).
    pub fn check(
        operation: impl FnOnce() -> String,
        code: i16,
        message: Option<&str>,
    ) -> Result<(), KafkaError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(code) => Err(KafkaError {
                operation: operation(),
                code,
                message: message.filter(|text| !text.is_empty()).map(str::to_owned),
            }),
        }
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} failed: {}",
            self.operation,
            kafka_error_name(self.code)
        )?;
        match (&self.message, explanation(self.code)) {
            (Some(message), _) => write!(formatter, " ({message})"),
            (None, Some(explanation)) => write!(formatter, " ({explanation})"),
            (None, None) => Ok(()),
        }
    }
}

/// The code is shown in the message already; it is kept as a field, not as a source, so that
/// error chains do not print it twice.
impl std::error::Error for KafkaError {}

/// The name Kafka's documentation and tools use for a code: `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn kafka_error_name(code: ResponseError) -> String {
    if let ResponseError::Unknown(raw) = code {
        return format!("UNKNOWN_ERROR_CODE_{raw}");
    }
    let camel_case = code.to_string();
    let mut name = String::with_capacity(camel_case.len() + 8);
    for (index, character) in camel_case.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// A sentence for the codes a command-line user meets most, when the broker sent no message.
fn explanation(code: ResponseError) -> Option<&'static str> {
    let text = match code {
        ResponseError::UnknownTopicOrPartition => "the topic or partition does not exist",
        ResponseError::TopicAlreadyExists => "a topic with this name already exists",
        ResponseError::InvalidPartitions => "the partition count is invalid",
        ResponseError::InvalidReplicationFactor => "the replication factor is invalid",
        ResponseError::InvalidTopicException => "the topic name is invalid",
        ResponseError::InvalidConfig => "a configuration value is invalid",
        ResponseError::OffsetOutOfRange => "the offset is outside the partition's log",
        ResponseError::NotLeaderOrFollower => "the broker is not the partition's leader",
        ResponseError::LeaderNotAvailable => "the partition has no leader right now",
        ResponseError::RequestTimedOut => "the broker timed out",
        ResponseError::MessageTooLarge => "the batch is larger than the broker accepts",
        ResponseError::NotEnoughReplicas => "fewer in-sync replicas than min.insync.replicas",
        ResponseError::UnsupportedVersion => "the broker does not support this request version",
        ResponseError::PolicyViolation => "the request violates a broker policy",
        ResponseError::UnknownServerError => "the broker failed unexpectedly",
        ResponseError::TopicDeletionDisabled => "topic deletion is disabled on the broker",
        ResponseError::CorruptMessage => "the broker rejected the batch as corrupt",
        ResponseError::InvalidRequest => "the broker rejected the request as invalid",
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_like_kafkas_documentation() {
        assert_eq!(
            kafka_error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            kafka_error_name(ResponseError::TopicAlreadyExists),
            "TOPIC_ALREADY_EXISTS"
        );
        assert_eq!(
            kafka_error_name(ResponseError::Unknown(999)),
            "UNKNOWN_ERROR_CODE_999"
        );
    }

    #[test]
    fn code_zero_is_success() {
        assert_eq!(KafkaError::check(|| "x".into(), 0, Some("ignored")), Ok(()));
    }

    #[test]
    fn kafka_error_prefers_the_broker_message_over_the_stock_explanation() {
        let with_message = KafkaError::check(
            || "create topic \"t\"".into(),
            36,
            Some("Topic 't' already exists."),
        )
        .unwrap_err();
        assert_eq!(
            with_message.to_string(),
            "create topic \"t\" failed: TOPIC_ALREADY_EXISTS (Topic 't' already exists.)"
        );
        let without_message =
            KafkaError::check(|| "delete topic \"t\"".into(), 3, Some("")).unwrap_err();
        assert_eq!(
            without_message.to_string(),
            "delete topic \"t\" failed: UNKNOWN_TOPIC_OR_PARTITION (the topic or partition does not exist)"
        );
    }
}
