//! Errors answered to clients: a Kafka error code with a message for the response's
//! `error_message` field and the broker log.

use proto_kafka::ResponseError;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: String,
    /// The records at fault, for a produce refused per record (KIP-467); empty otherwise.
    pub record_errors: Vec<karst_storage::RecordError>,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            record_errors: Vec::new(),
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION for a topic the metadata image does not hold.
    pub fn unknown_topic(name: &str) -> ApiError {
        ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("The topic '{name}' does not exist."),
        )
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:?}: {}", self.code, self.message)
    }
}

impl From<&karst_storage::LogError> for ApiError {
    fn from(error: &karst_storage::LogError) -> ApiError {
        use karst_storage::LogError;
        let code = match error {
            LogError::Batch(refused) => return ApiError::from(refused),
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            // A leader whose epoch is older than the log's latest has been replaced.
            LogError::OutOfOrder(_) => ResponseError::NotLeaderOrFollower,
            LogError::Producer(karst_storage::ProducerError::OutOfOrderSequence { .. }) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            LogError::Producer(karst_storage::ProducerError::InvalidProducerEpoch { .. }) => {
                ResponseError::InvalidProducerEpoch
            }
            LogError::Offline(_)
            | LogError::OutOfSpace(_)
            | LogError::Corrupt { .. }
            | LogError::Io { .. } => ResponseError::KafkaStorageError,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<&karst_storage::BatchError> for ApiError {
    fn from(error: &karst_storage::BatchError) -> ApiError {
        use karst_storage::{BatchError, RecordErrorKind};
        let code = match error {
            BatchError::Corrupt(_) => ResponseError::CorruptMessage,
            BatchError::Invalid(_) => ResponseError::InvalidRecord,
            BatchError::Records(rejected) => {
                let code = match rejected.kind {
                    RecordErrorKind::InvalidRecord => ResponseError::InvalidRecord,
                    RecordErrorKind::InvalidTimestamp => ResponseError::InvalidTimestamp,
                };
                let mut refused = ApiError::new(code, rejected.to_string());
                refused.record_errors = rejected.errors.clone();
                return refused;
            }
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        };
        ApiError::new(code, error.to_string())
    }
}
