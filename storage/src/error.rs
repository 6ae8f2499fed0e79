//! Storage errors: operating errors keep their source; expected conditions are variants.

use std::io;
use std::path::PathBuf;

use crate::types::Offset;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The requested offset is outside `[log_start_offset, high_watermark]`.
    #[error("offset {requested} is out of range [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start_offset: Offset,
        high_watermark: Offset,
    },
    /// An earlier write or sync failed; the log serves nothing until restarted.
    #[error("log is offline: {0}")]
    Offline(String),
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
