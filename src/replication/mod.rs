//! Partition data replication, the Kafka way: a leader and pulling followers per partition,
//! the ISR, the high watermark, acks=all.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`manager`] | the replicas hosted here (leader and follower); applies metadata images; appends and truncations |
//! | [`partition`] | one long-lived replica: high watermark, ISR view, follower states, the change channel waiters use |
//! | [`fetcher`] | one fetch loop per leader broker this node follows; truncation by leader epoch |
//! | [`purgatory`] | delayed produce: acks=all waits for the high watermark |
//! | [`isr`] | lag tracking and AlterPartition requests to the controller |
//! | [`offline`] | replicas whose log went offline: leadership and the ISR move away; a damaged log is cut back and refetched |
//!
//! Storage states facts (log end, durable end, epochs); this module decides visibility:
//! consumers read below the high watermark, followers up to the durable end.

pub mod fetcher;
pub mod isr;
pub mod manager;
pub mod offline;
pub mod partition;
pub mod purgatory;

pub use manager::ReplicaManager;
pub use partition::{Partition, PartitionView, Role};

/// Wall-clock milliseconds from the system clock, for code outside the replica manager
/// (record timestamps, the group coordinator). Follower lag and ISR decisions read the
/// replica manager's [`crate::clock::Clock`] instead, so tests can move it.
pub fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}
