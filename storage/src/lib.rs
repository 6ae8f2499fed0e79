//! `karst-storage`: partition logs on disk, with durable group-committed appends.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`types`] | `Offset`, `LeaderEpoch`, `ProducerId`, `ProducerEpoch`, `TopicPartition` |
//! | [`batch`] | record batch headers, validation of produced batches, offset rewrite |
//! | [`record`] | the records inside a batch: parsing, re-framing |
//! | [`compression`] | codecs, `compression.type` and levels, bounded decompression |
//! | [`validator`] | a leader's checks and changes to produced batches: KIP-467 record errors, timestamps, recompression |
//! | [`index`] | sparse `.index` / `.timeindex` |
//! | [`segment`] | one `.log` file and its recovery scan |
//! | [`log`] | a partition log: offsets, reads, retention, recovery, the append plan |
//! | [`producer_state`] | idempotent producers per log: epochs, sequences, duplicates, snapshots |
//! | [`commit_budget`] | the bound on bytes queued for the storage threads (`log.commit.queue.max.bytes`) |
//! | [`committer`] | storage threads: group commit (write, one fdatasync per file, acknowledge) |
//! | [`io`] | the I/O backend seam and the portable `pwritev` + `fdatasync` backend |
//! | [`checkpoint`] | Kafka-format offset checkpoint files |
//! | [`cleaner`] | log compaction: the background cleaner, its offset map, crash-safe swaps |
//! | [`manager`] | all logs of a log directory, checkpoints, clean-shutdown marker |
//! | [`space`] | the free-space reserve appends may not eat into (`log.dir.min.free.bytes`) |
//! | [`config`] | per-log settings in Kafka's topic-config units |
//!
//! Durability contract: an append's completion reports success only after its bytes (and,
//! for a new segment, the directory entry) are synced, unless the log's `flush.messages`
//! asks for Kafka-style deferred flushing. Readers never see data before that point.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod commit_budget;
pub mod committer;
pub mod compression;
pub mod config;
pub mod epoch_cache;
pub mod error;
pub mod index;
pub mod io;
pub mod log;
pub mod manager;
pub mod producer_state;
pub(crate) mod record;
pub mod segment;
pub mod space;
pub mod types;
pub mod uring;
pub mod validator;

pub use batch::{validate_produced, validate_replicated, BatchError, BatchHeader, ValidBatch};
pub use cleaner::{CleanStats, Cleaner, CleanerOptions, LogCleaner};
pub use commit_budget::{CommitBudget, CommitPermit};
pub use compression::{Codec, CompressionLevels, TopicCompression};
pub use config::LogConfig;
pub use epoch_cache::EpochEnd;
pub use error::LogError;
pub use io::{IoBackend, PortableBackend};
pub use log::{AppendInfo, AppendOrigin, Log, LogOffsets, ReadData};
pub use manager::{LogManager, LogManagerOptions};
pub use producer_state::{ProducerEntry, ProducerError};
pub use types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TopicPartition};
pub use validator::{RecordError, RecordErrorKind, RejectedRecords};
