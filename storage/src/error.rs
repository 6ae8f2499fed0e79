//! Storage errors: operating errors keep their source; expected conditions are variants.

use std::io;
use std::path::PathBuf;

use crate::types::Offset;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The requested offset is outside `[log_start_offset, end_offset]` of readable data.
    #[error("offset {requested} is out of range [{log_start_offset}, {end_offset}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start_offset: Offset,
        end_offset: Offset,
    },
    /// An append that would break the log's order (offsets or leader epochs going back):
    /// nothing of it was written.
    #[error("append refused: {0}")]
    OutOfOrder(String),
    /// An earlier write or sync failed; the log serves nothing until restarted.
    #[error("log is offline: {0}")]
    Offline(String),
    /// The disk is full: the append was undone; retrying succeeds once space returns.
    #[error("out of space: {0}")]
    OutOfSpace(String),
    /// A stored batch failed its CRC check: it is never served; the log goes offline.
    #[error("corrupt batch in {path} at byte {position}")]
    Corrupt { path: PathBuf, position: u64 },
    /// The producer state refused the batch (sequence gap, fenced epoch): nothing of the
    /// request was written; the rest of its group is unaffected.
    #[error(transparent)]
    Producer(#[from] crate::producer_state::ProducerError),
    /// The leader's validation refused the batches (record errors, a recompressed batch
    /// over `max.message.bytes`): nothing of the request was written; the rest of its group
    /// is unaffected.
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
    /// An I/O call failed on `path`.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// The same error again, for each of several appends that failed together (io::Error is
    /// not Clone; its text is kept).
    pub fn duplicate(&self) -> LogError {
        match self {
            LogError::OffsetOutOfRange {
                requested,
                log_start_offset,
                end_offset,
            } => LogError::OffsetOutOfRange {
                requested: *requested,
                log_start_offset: *log_start_offset,
                end_offset: *end_offset,
            },
            LogError::OutOfOrder(reason) => LogError::OutOfOrder(reason.clone()),
            LogError::Offline(reason) => LogError::Offline(reason.clone()),
            LogError::Producer(error) => LogError::Producer(error.clone()),
            LogError::Batch(error) => LogError::Batch(error.clone()),
            LogError::OutOfSpace(reason) => LogError::OutOfSpace(reason.clone()),
            LogError::Corrupt { path, position } => LogError::Corrupt {
                path: path.clone(),
                position: *position,
            },
            LogError::Io {
                operation,
                path,
                source,
            } => LogError::Io {
                operation,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }

    /// True for a refusal of one request that leaves the log and the other appends of its
    /// group untouched.
    pub fn is_request_refusal(&self) -> bool {
        matches!(self, LogError::Producer(_) | LogError::Batch(_))
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            operation,
            path,
            source,
        }
    }
}
