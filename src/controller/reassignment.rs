//! Partition reassignment (KIP-455), decided by the controller: move a partition's replicas
//! to a new set of brokers without losing a record.
//!
//! A reassignment is metadata only. Starting one writes a `PartitionChange` that makes the
//! replicas the union of the target and the original (target first, so the preferred leader
//! is the target's first), names the *adding* and *removing* replicas, and leaves the ISR and
//! leader alone. The adding replicas' brokers create their logs and fetch from the leader
//! like any follower; the leader asks for each one to join the ISR when it has caught up
//! (AlterPartition). When the last adding replica is in the ISR, the controller completes the
//! move in the same decision ([`complete`]): replicas become the target, removing replicas
//! leave the ISR, a new leader is elected from the target if the old one is leaving, and the
//! leader epoch is bumped, which fences the removed replicas. Their brokers see they are no
//! longer replicas and delete their logs (`ReplicaManager::apply_image`).
//!
//! Everything is in the metadata log, so a new controller sees a reassignment in progress
//! exactly where the old one left it. Cancelling (no replicas in the request) reverts to the
//! original replicas: the adding replicas leave the replica set and the ISR at once. A new
//! reassignment of a partition that is already moving is measured from its original replicas
//! too, so a replica dropped from the plan before it caught up is simply removed.

use std::collections::HashSet;

use proto_kafka::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord, PartitionImage};

/// One partition of an AlterPartitionReassignments request: the target replicas, or `None`
/// to cancel the reassignment in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReassignmentRequest {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// One partition's answer: (topic, partition, error code, message); 0 means accepted.
pub type ReassignmentOutcome = (String, i32, i16, Option<String>);

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

/// Decides every partition of an AlterPartitionReassignments request against `image`.
/// Partitions are independent: one refused does not stop the others. With
/// `replication_factor_fixed` (v1 without `AllowReplicationFactorChange`), a target of a
/// different size than the original assignment is refused.
pub fn alter_reassignments(
    image: &MetadataImage,
    requests: &[ReassignmentRequest],
    replication_factor_fixed: bool,
) -> (Vec<MetadataRecord>, Vec<ReassignmentOutcome>) {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    let mut seen = HashSet::new();
    for request in requests {
        let decided = if seen.insert((request.topic.as_str(), request.partition)) {
            reassign_one(image, request, replication_factor_fixed)
        } else {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                "the partition appears more than once in the request",
            ))
        };
        let outcome = match decided {
            Ok(change) => {
                records.extend(change);
                (request.topic.clone(), request.partition, 0, None)
            }
            Err(error) => (
                request.topic.clone(),
                request.partition,
                error.code(),
                Some(error.message),
            ),
        };
        outcomes.push(outcome);
    }
    (records, outcomes)
}

/// Reassignments in progress: of the `wanted` partitions (unknown ones are left out, as
/// Kafka does), or of every partition.
pub fn list_reassignments(
    image: &MetadataImage,
    wanted: Option<&[(String, i32)]>,
) -> Vec<OngoingReassignment> {
    let ongoing = |topic: &str, partition: &PartitionImage| {
        partition.is_reassigning().then(|| OngoingReassignment {
            topic: topic.to_owned(),
            partition: partition.partition,
            replicas: partition.replicas.clone(),
            adding_replicas: partition.adding_replicas.clone(),
            removing_replicas: partition.removing_replicas.clone(),
        })
    };
    match wanted {
        Some(wanted) => wanted
            .iter()
            .filter_map(|(name, index)| {
                let partition = image.topic(name)?.partition(*index)?;
                ongoing(name, partition)
            })
            .collect(),
        None => image
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .filter_map(|partition| ongoing(&topic.name, partition))
            })
            .collect(),
    }
}

fn reassign_one(
    image: &MetadataImage,
    request: &ReassignmentRequest,
    replication_factor_fixed: bool,
) -> Result<Option<MetadataRecord>, ApiError> {
    let (topic_id, partition) = image
        .topic(&request.topic)
        .and_then(|topic| {
            let partition = topic.partition(request.partition)?;
            Some((topic.topic_id, partition))
        })
        .ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("{}-{} does not exist", request.topic, request.partition),
            )
        })?;
    let target = match &request.replicas {
        Some(target) => {
            check_target(image, target)?;
            let original = partition.original_replicas().len();
            if replication_factor_fixed && target.len() != original {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("the target has {} replicas, the partition {original}, and the request does not allow a replication factor change", target.len()),
                ));
            }
            target.clone()
        }
        None if partition.is_reassigning() => partition.original_replicas(),
        None => {
            return Err(ApiError::new(
                ResponseError::NoReassignmentInProgress,
                format!(
                    "{}-{} has no reassignment in progress to cancel",
                    request.topic, request.partition
                ),
            ))
        }
    };
    if !partition.is_reassigning() && target == partition.replicas {
        return Ok(None);
    }
    let alive = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let change = start(partition, &target, &alive).ok_or_else(|| {
        ApiError::new(
            ResponseError::InvalidReplicaAssignment,
            format!(
                "{}-{}: no replica of the new assignment {target:?} is in sync (ISR {:?}); moving there would need an unclean leader election",
                request.topic, request.partition, partition.isr
            ),
        )
    })?;
    tracing::info!(
        topic = %request.topic,
        partition = request.partition,
        from = ?partition.replicas,
        to = ?target,
        "reassigning a partition"
    );
    Ok(Some(change.into_record(topic_id, request.partition)))
}

/// A target must name distinct, registered, unfenced brokers, and at least one.
fn check_target(image: &MetadataImage, target: &[i32]) -> Result<(), ApiError> {
    let invalid = |message: String| {
        Err(ApiError::new(
            ResponseError::InvalidReplicaAssignment,
            message,
        ))
    };
    if target.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let distinct: HashSet<i32> = target.iter().copied().collect();
    if distinct.len() != target.len() {
        return invalid(format!(
            "The manual partition assignment {target:?} includes a broker more than once."
        ));
    }
    if let Some(unknown) = target
        .iter()
        .find(|id| image.broker(**id).is_none_or(|b| b.fenced))
    {
        return invalid(format!(
            "The manual partition assignment includes broker {unknown}, but no such broker is registered and unfenced."
        ));
    }
    Ok(())
}

/// A partition's next state, as one `PartitionChange`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// `Some` when the leader changes or its epoch must be bumped.
    leader: Option<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

impl Change {
    fn into_record(self, topic_id: Uuid, partition: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader: self.leader,
            isr: Some(self.isr),
            replicas: Some(self.replicas),
            adding_replicas: Some(self.adding),
            removing_replicas: Some(self.removing),
        }
    }
}

/// The state that starts (or replaces, or cancels) a move of `partition` to `target`,
/// measured from its original replicas; completed at once when nothing needs to catch up.
/// `None` when no in-sync replica would be left to lead.
fn start(
    partition: &PartitionImage,
    target: &[i32],
    alive: &dyn Fn(i32) -> bool,
) -> Option<Change> {
    let original = partition.original_replicas();
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|id| !original.contains(id))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|id| !target.contains(id))
        .collect();
    let replicas: Vec<i32> = target.iter().chain(&removing).copied().collect();
    // The ISR is left as it is, less replicas no longer in the set (a dropped adding one).
    let isr: Vec<i32> = partition
        .isr
        .iter()
        .copied()
        .filter(|id| replicas.contains(id))
        .collect();
    if isr.is_empty() {
        return None;
    }
    let moving = PartitionImage {
        replicas,
        isr,
        adding_replicas: adding,
        removing_replicas: removing,
        ..partition.clone()
    };
    if let Some(done) = complete(&moving, &moving.isr, alive) {
        return Some(done);
    }
    // A leader that was itself being added and is now dropped from the plan hands over.
    let leader = (!moving.replicas.contains(&moving.leader))
        .then(|| first_live_in_sync(&moving.replicas, &moving.isr, alive).unwrap_or(-1));
    Some(Change {
        leader,
        replicas: moving.replicas,
        isr: moving.isr,
        adding: moving.adding_replicas,
        removing: moving.removing_replicas,
    })
}

/// The completing change of a reassignment whose ISR is (about to be) `isr`: every adding
/// replica is in it (trivially so for a cancel, which adds none), and a live in-sync target
/// replica can lead. Replicas become the target,
/// the ISR loses the removing replicas, and the leader epoch is bumped (the leader changes
/// when it is being removed), as in KRaft. `None` while the move must go on.
fn complete(
    partition: &PartitionImage,
    isr: &[i32],
    alive: &dyn Fn(i32) -> bool,
) -> Option<Change> {
    if !partition.adding_replicas.iter().all(|id| isr.contains(id)) {
        return None;
    }
    let target = partition.target_replicas();
    let final_isr: Vec<i32> = target
        .iter()
        .copied()
        .filter(|id| isr.contains(id))
        .collect();
    if final_isr.is_empty() {
        return None;
    }
    let leader = if target.contains(&partition.leader) {
        partition.leader
    } else {
        first_live_in_sync(&target, &final_isr, alive)?
    };
    Some(Change {
        replicas: target,
        isr: final_isr,
        leader: Some(leader),
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

fn first_live_in_sync(replicas: &[i32], isr: &[i32], alive: &dyn Fn(i32) -> bool) -> Option<i32> {
    replicas
        .iter()
        .copied()
        .find(|id| isr.contains(id) && alive(*id))
}

/// AlterPartition's hook: the record completing the reassignment of `partition` once its ISR
/// is `isr`, replacing the plain ISR change, with the ISR it leaves; `None` when no
/// reassignment completes.
pub fn complete_with_isr(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: &PartitionImage,
    isr: &[i32],
) -> Option<(MetadataRecord, Vec<i32>)> {
    if !partition.is_reassigning() {
        return None;
    }
    let alive = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let done = complete(partition, isr, &alive)?;
    tracing::info!(
        %topic_id,
        partition = partition.partition,
        replicas = ?done.replicas,
        leader = ?done.leader,
        "reassignment complete: every adding replica is in sync"
    );
    let final_isr = done.isr.clone();
    Some((done.into_record(topic_id, partition.partition), final_isr))
}

#[cfg(test)]
#[path = "reassignment_tests.rs"]
mod tests;
