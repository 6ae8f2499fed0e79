//! Replicas whose log went offline: a failed write or sync, or a batch that failed its CRC
//! check when read (storage takes the log offline rather than serve it). Such a replica
//! must not lead or count towards the ISR, and — when only its disk copy was damaged — it
//! heals from the others:
//!
//! 1. While it leads the partition, or is in an ISR that has another member, the broker
//!    reports it to the controller (`ControllerRequest::ReplicaOffline`), which moves
//!    leadership to another in-sync replica and drops it from the ISR, as for a fenced
//!    broker but for this partition only.
//! 2. The follower fetcher skips offline logs, so the replica cannot be re-admitted to the
//!    ISR by a fetch position it no longer serves.
//! 3. Once another broker leads and this replica is outside the ISR, a log offline for a
//!    damaged batch is cut back to the damaged segment's base offset and brought online
//!    (`LogManager::repair_corruption`); the fetcher then fetches the rest again and the
//!    leader re-admits it to the ISR when it has caught up. Truncating below the high
//!    watermark is safe only there: the ISR holds every acknowledged record without it.
//!
//! A log offline for a failed write or sync stays offline (its disk is suspect) until the
//! broker restarts; it only gives up leadership and the ISR.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::partition::Partition;
use crate::broker::SharedBroker;
use crate::controller::ControllerRequest;
use karst_storage::TopicPartition;

/// How often hosted logs are checked for having gone offline.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Checks every hosted replica's log until shutdown.
pub async fn run_checks(broker: SharedBroker, mut shutdown: watch::Receiver<bool>) {
    metrics::counter!("karst_replica_offline_reports_total").increment(0);
    metrics::counter!("karst_replica_repairs_total").increment(0);
    let reporting: Arc<Mutex<HashSet<TopicPartition>>> = Arc::default();
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        for partition in broker.replicas.partitions() {
            if partition.log.is_online() {
                continue;
            }
            let node = broker.config.node_id;
            let assignment = partition.view().assignment;
            let must_step_back = assignment.leader == node
                || (assignment.isr.contains(&node) && assignment.isr.len() > 1);
            if must_step_back {
                report(&broker, &reporting, partition);
            } else if assignment.leader >= 0
                && assignment.leader != node
                && !assignment.isr.contains(&node)
                && partition.log.corrupt_segment().is_some()
            {
                repair(&broker, &partition).await;
            }
        }
    }
}

/// Asks the controller, in the background, to move leadership and the ISR away from this
/// replica; at most one request per partition in flight. A refused or failed request is
/// asked again at the next check.
fn report(
    broker: &SharedBroker,
    reporting: &Arc<Mutex<HashSet<TopicPartition>>>,
    partition: Arc<Partition>,
) {
    let key = partition.topic_partition.clone();
    if !reporting.lock().expect("reports lock").insert(key.clone()) {
        return;
    }
    let broker = Arc::clone(broker);
    let reporting = Arc::clone(reporting);
    tokio::spawn(async move {
        tracing::warn!(
            partition = %partition.topic_partition,
            reason = partition.log.offline_reason().unwrap_or_default(),
            "this replica's log is offline: asking the controller to move leadership and the ISR away"
        );
        metrics::counter!("karst_replica_offline_reports_total").increment(1);
        let request = ControllerRequest::ReplicaOffline {
            broker_id: broker.config.node_id,
            broker_epoch: broker.broker_epoch.load(Ordering::SeqCst),
            topic_id: partition.topic_id,
            partition: partition.topic_partition.partition,
        };
        if let Err(error) = broker.call_controller(request).await {
            tracing::info!(partition = %partition.topic_partition, %error, "ReplicaOffline refused; will retry");
        }
        reporting.lock().expect("reports lock").remove(&key);
    });
}

/// Cuts a damaged follower log back to its damaged segment and brings it online; the
/// fetcher then fetches from the new end.
async fn repair(broker: &SharedBroker, partition: &Partition) {
    let _follower_io = partition.follower_io.lock().await;
    match broker.replicas.logs().repair_corruption(&partition.log) {
        Ok(end) => {
            metrics::counter!("karst_replica_repairs_total").increment(1);
            partition.clamp_high_watermark();
            tracing::warn!(
                partition = %partition.topic_partition,
                end = end.0,
                "repaired a damaged replica: cut back to the damaged segment, fetching the rest from the leader again"
            );
        }
        Err(error) => {
            tracing::warn!(partition = %partition.topic_partition, %error, "could not repair a damaged replica");
        }
    }
}
