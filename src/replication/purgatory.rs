//! Delayed produce: an acks=all append waits here, after it is durable on the leader, until
//! the high watermark passes it — every ISR member holds it — or its `timeout_ms` runs out.
//!
//! Waiting is on the partition's change channel (records, high watermark, role, ISR), so a
//! waiter re-checks exactly when something that could complete it happened. When the high
//! watermark passes the batch, Kafka's rule applies: if the ISR shrank below
//! `min.insync.replicas` meanwhile, the answer is NOT_ENOUGH_REPLICAS_AFTER_APPEND (the
//! records are stored and will be replicated, but not to as many replicas as asked).
//!
//! **Deliberately broken builds.** A debug build (`cfg(debug_assertions)`) started with
//! `KARST_TEST_UNSAFE_EARLY_ACK=1` skips the wait: it answers acks=all as soon as the batch
//! is durable on the leader, before any follower has it, so a failover loses acknowledged
//! writes. It exists only to prove that the fault-injection harness (`karst-jepsen`) catches
//! that (docs/JEPSEN.md, "The deliberately broken build"); release builds do not contain it.

use std::sync::Arc;

use proto_kafka::ResponseError;
use tokio::time::Instant;

use karst_storage::Offset;

use super::partition::{NotLeader, Partition};
use crate::error::ApiError;

/// The environment variable that turns on the broken acks=all of debug builds.
pub const UNSAFE_EARLY_ACK_ENV: &str = "KARST_TEST_UNSAFE_EARLY_ACK";

/// Whether acks=all is answered before the ISR has the batch: only in a debug build, and
/// only when [`UNSAFE_EARLY_ACK_ENV`] is `1`. Read once; the server logs a warning at start.
#[cfg(debug_assertions)]
pub fn unsafe_early_ack() -> bool {
    static EARLY_ACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EARLY_ACK.get_or_init(|| std::env::var(UNSAFE_EARLY_ACK_ENV).is_ok_and(|value| value == "1"))
}

/// Release builds cannot acknowledge early, whatever the environment says.
#[cfg(not(debug_assertions))]
pub const fn unsafe_early_ack() -> bool {
    false
}

/// Waits until the high watermark reaches `end_offset` (one past the append's last offset).
pub async fn wait_for_replication(
    partition: &Arc<Partition>,
    end_offset: Offset,
    deadline: Instant,
) -> Result<(), ApiError> {
    if unsafe_early_ack() {
        // The deliberate bug (module docs): durable here is taken for replicated.
        return Ok(());
    }
    let mut changes = partition.subscribe();
    loop {
        if let Err(NotLeader::LedBy(leader)) = partition.check_leader() {
            return Err(ApiError::new(
                ResponseError::NotLeaderOrFollower,
                format!(
                    "{} lost leadership (now broker {leader}) before the append was replicated",
                    partition.topic_partition
                ),
            ));
        }
        if partition.high_watermark() >= end_offset {
            let (isr_count, min_insync) = partition.insync_counts();
            if (isr_count as i32) < min_insync {
                return Err(ApiError::new(
                    ResponseError::NotEnoughReplicasAfterAppend,
                    format!(
                        "{}: appended, but the ISR shrank to {isr_count} (min.insync.replicas {min_insync})",
                        partition.topic_partition
                    ),
                ));
            }
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(ResponseError::NotLeaderOrFollower, "partition was removed"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::new(
                    ResponseError::RequestTimedOut,
                    format!(
                        "{}: not replicated to the ISR within timeout_ms",
                        partition.topic_partition
                    ),
                ));
            }
        }
    }
}
