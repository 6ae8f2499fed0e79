//! karst-raft: Karst's metadata quorum (DESIGN §3), KRaft-style, on openraft.
//!
//! Every node keeps a replicated log of [`MetadataRecord`] batches and applies it to a
//! [`MetadataImage`]; the Raft leader is the controller, and its term is the controller
//! epoch. This crate owns the records, the image, the durable log, snapshots and the Raft RPC
//! transport; the broker owns the controller's *decisions* and only sees the API below.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`records`] | the metadata records (KRaft's vocabulary) and the batch a log entry carries |
//! | [`image`] | the metadata image and how each record changes it |
//! | [`quorum`] | [`MetadataQuorum`]: start, bootstrap, write, watch the image, status, shutdown |
//! | `state_machine` | openraft state machine: applies batches, publishes images, snapshots |
//! | `log_store` | openraft log storage: segment files, CRC per entry, group-committed fsync |
//! | `network` | Raft RPCs over TCP on the controller listener: framing, messages, client, server |
//! | [`codec`] | `[format version][rkyv archive]` encoding of everything persisted or sent |
//! | `stored` | our persisted forms of openraft's log ids, votes, entries, memberships |
//! | `format_v1` | format version 1 frozen, so logs and snapshots of earlier builds load |
//! | `durable_file` | small files replaced atomically (vote, purge point, snapshot) |
//! | [`type_config`] | the openraft type configuration; openraft types stay inside the crate |

pub mod codec;
#[cfg(test)]
mod conformance;
mod durable_file;
mod format_v1;
pub mod image;
mod log_store;
pub(crate) mod network;
pub mod quorum;
pub mod records;
mod state_machine;
mod stored;
pub mod type_config;

pub use image::{
    BrokerRegistration, MetadataImage, PartitionImage, Provenance, RecordRejected, TopicImage,
};
pub use network::server::ApplicationHandler;
pub use quorum::{MetadataQuorum, QuorumError, QuorumOptions, QuorumStatus, Role, WriteError};
pub use records::{BrokerEndpoint, MetadataBatch, MetadataRecord};
pub use state_machine::SnapshotCounts;
pub use type_config::{Applied, ControllerNode};
