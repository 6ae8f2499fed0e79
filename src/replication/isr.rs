//! ISR membership, decided by lag: the leader asks the controller (AlterPartition) to drop
//! followers that have not caught up for `replica.lag.time.max.ms`, and to add a follower
//! once it reaches the high watermark. The controller fences each request by leader epoch
//! and partition epoch; only its answer (or the next metadata image) changes the ISR here.
//!
//! Lag is measured by the replica manager's clock (`ReplicaManager::shrink_candidates`),
//! so the decision is unit-tested with a manual clock.
//!
//! At most one request per partition is in flight (`Partition::pending_isr`); a refused or
//! failed one is simply dropped, and the next check or fetch asks again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::partition::Partition;
use crate::broker::SharedBroker;
use crate::controller::decisions::IsrChange;
use crate::controller::{ControllerReply, ControllerRequest};

/// Shrink checks run at least this often, and at twice the lag limit's rate.
const SHRINK_CHECK_INTERVAL_MS_MAX: u64 = 500;

/// Checks every led partition for lagging followers until shutdown.
pub async fn run_shrink_checks(broker: SharedBroker, mut shutdown: watch::Receiver<bool>) {
    let lag_max_ms = broker.config.replication.lag_time_max_ms;
    let period = (lag_max_ms / 2).clamp(10, SHRINK_CHECK_INTERVAL_MS_MAX);
    let mut ticks = tokio::time::interval(Duration::from_millis(period));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        for (partition, isr) in broker.replicas.shrink_candidates(lag_max_ms) {
            tracing::info!(
                partition = %partition.topic_partition,
                isr = ?isr,
                lag_max_ms,
                "shrinking the ISR: followers have not caught up"
            );
            metrics::counter!("kafka_server_replicamanager_isrshrinks_total").increment(1);
            request(&broker, partition, isr);
        }
    }
}

/// A follower caught up: ask for it to join the ISR.
pub fn request_expansion(broker: &SharedBroker, partition: Arc<Partition>, isr: Vec<i32>) {
    tracing::info!(partition = %partition.topic_partition, isr = ?isr, "expanding the ISR: a follower caught up");
    metrics::counter!("kafka_server_replicamanager_isrexpands_total").increment(1);
    request(broker, partition, isr);
}

/// Sends one AlterPartition in the background and applies the answer.
fn request(broker: &SharedBroker, partition: Arc<Partition>, isr: Vec<i32>) {
    let broker = Arc::clone(broker);
    tokio::spawn(async move {
        let (leader_epoch, partition_epoch) = partition.epochs();
        let change = IsrChange {
            broker_id: broker.config.node_id,
            broker_epoch: broker.broker_epoch.load(Ordering::SeqCst),
            topic_id: partition.topic_id,
            partition: partition.topic_partition.partition,
            leader_epoch,
            partition_epoch,
            isr,
        };
        match broker
            .call_controller(ControllerRequest::AlterPartition(change))
            .await
        {
            Ok(ControllerReply::PartitionState {
                leader_epoch,
                partition_epoch,
                isr,
            }) => partition.apply_isr_answer(leader_epoch, partition_epoch, isr),
            Ok(other) => {
                tracing::warn!(partition = %partition.topic_partition, reply = ?other, "unexpected AlterPartition answer");
                partition.clear_pending_isr();
            }
            Err(error) => {
                tracing::info!(partition = %partition.topic_partition, %error, "AlterPartition refused; will retry");
                partition.clear_pending_isr();
            }
        }
    });
}
