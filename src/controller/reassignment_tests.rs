//! The reassignment decisions applied to an image, step by step, as a controller would.

use super::*;
use crate::controller::decisions::{alter_partition, IsrChange};
use crate::controller::ControllerReply;

const TOPIC: &str = "orders";

/// Brokers 1..=4 registered (epoch = id * 10) and unfenced; `orders` with one partition on
/// {1,2,3}, ISR {1,2,3}, led by 1.
fn cluster() -> (MetadataImage, Uuid) {
    let mut image = MetadataImage::new("cluster".into());
    let mut index = 0;
    let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
        index += 1;
        image.apply(index, &record).unwrap();
    };
    for broker_id in 1..=4 {
        apply(
            &mut image,
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id: Uuid::new_v4(),
                listeners: vec![],
                rack: None,
                fenced: false,
            },
        );
    }
    let topic_id = Uuid::new_v4();
    apply(
        &mut image,
        MetadataRecord::Topic {
            name: TOPIC.into(),
            topic_id,
        },
    );
    apply(
        &mut image,
        MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        },
    );
    (image, topic_id)
}

fn request(replicas: Option<Vec<i32>>) -> ReassignmentRequest {
    ReassignmentRequest {
        topic: TOPIC.into(),
        partition: 0,
        replicas,
    }
}

/// Decides one request and applies its records; returns the partition's error code.
fn reassign(image: &mut MetadataImage, replicas: Option<Vec<i32>>) -> i16 {
    let (records, outcomes) = alter_reassignments(image, &[request(replicas)], false);
    for record in records {
        image.apply(100, &record).unwrap();
    }
    outcomes[0].2
}

fn state(image: &MetadataImage) -> PartitionImage {
    image.topic(TOPIC).unwrap().partition(0).unwrap().clone()
}

/// The leader asks for `isr` (AlterPartition) and the controller's records are applied.
fn leader_asks_for(image: &mut MetadataImage, topic_id: Uuid, isr: Vec<i32>) -> ControllerReply {
    let current = state(image);
    let change = IsrChange {
        broker_id: current.leader,
        broker_epoch: image.broker(current.leader).unwrap().broker_epoch,
        topic_id,
        partition: 0,
        leader_epoch: current.leader_epoch,
        partition_epoch: current.partition_epoch,
        isr,
    };
    let (records, reply) = alter_partition(image, &change).unwrap();
    for record in records {
        image.apply(200, &record).unwrap();
    }
    reply
}

#[test]
fn a_move_adds_catches_up_then_switches_and_drops_the_old_replica() {
    let (mut image, topic_id) = cluster();
    assert_eq!(reassign(&mut image, Some(vec![2, 3, 4])), 0);

    // Growth: the union, target first; ISR and leader untouched.
    let moving = state(&image);
    assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
    assert_eq!(moving.adding_replicas, vec![4]);
    assert_eq!(moving.removing_replicas, vec![1]);
    assert_eq!((moving.leader, moving.leader_epoch), (1, 0));
    assert_eq!(moving.isr, vec![1, 2, 3]);
    let listed = list_reassignments(&image, None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].adding_replicas, vec![4]);

    // Broker 4 caught up: the leader's AlterPartition completes the move in one change.
    let reply = leader_asks_for(&mut image, topic_id, vec![1, 2, 3, 4]);
    let done = state(&image);
    assert_eq!(done.replicas, vec![2, 3, 4]);
    assert_eq!(done.isr, vec![2, 3, 4]);
    assert_eq!(
        done.leader, 2,
        "the removed leader hands over to the target's first"
    );
    assert_eq!(done.leader_epoch, 1);
    assert!(!done.is_reassigning());
    assert!(list_reassignments(&image, None).is_empty());
    assert!(matches!(
        reply,
        ControllerReply::PartitionState { leader_epoch: 1, ref isr, .. } if *isr == vec![2, 3, 4]
    ));
}

#[test]
fn a_move_waits_for_every_adding_replica() {
    let (mut image, topic_id) = cluster();
    assert_eq!(reassign(&mut image, Some(vec![3, 4, 1, 2])), 0);
    assert_eq!(state(&image).adding_replicas, vec![4]);
    leader_asks_for(&mut image, topic_id, vec![1, 2, 3]);
    assert!(state(&image).is_reassigning());
    leader_asks_for(&mut image, topic_id, vec![1, 2, 3, 4]);
    let done = state(&image);
    assert_eq!(done.replicas, vec![3, 4, 1, 2]);
    assert_eq!(done.leader, 1, "a leader that stays keeps leading");
    assert_eq!(done.leader_epoch, 1, "completion bumps the leader epoch");
}

#[test]
fn removing_replicas_only_completes_at_once() {
    let (mut image, _) = cluster();
    assert_eq!(reassign(&mut image, Some(vec![2, 3])), 0);
    let done = state(&image);
    assert_eq!(
        (done.replicas.clone(), done.isr.clone()),
        (vec![2, 3], vec![2, 3])
    );
    assert_eq!(done.leader, 2);
    assert!(!done.is_reassigning());
}

#[test]
fn cancel_reverts_to_the_original_replicas() {
    let (mut image, _) = cluster();
    assert_eq!(reassign(&mut image, Some(vec![2, 3, 4])), 0);
    assert_eq!(reassign(&mut image, None), 0);
    let reverted = state(&image);
    assert_eq!(reverted.replicas, vec![2, 3, 1]);
    assert_eq!(reverted.isr, vec![2, 3, 1]);
    assert_eq!(reverted.leader, 1);
    assert!(!reverted.is_reassigning());
    assert_eq!(
        reassign(&mut image, None),
        ResponseError::NoReassignmentInProgress.code()
    );
}

#[test]
fn a_new_target_is_measured_from_the_original_replicas() {
    let (mut image, _) = cluster();
    assert_eq!(reassign(&mut image, Some(vec![2, 3, 4])), 0);
    // Replace the move: 4 is dropped before it caught up, 1 stays after all.
    assert_eq!(reassign(&mut image, Some(vec![1, 2, 4])), 0);
    let moving = state(&image);
    assert_eq!(moving.replicas, vec![1, 2, 4, 3]);
    assert_eq!(moving.adding_replicas, vec![4]);
    assert_eq!(moving.removing_replicas, vec![3]);
}

#[test]
fn bad_requests_get_kafkas_error_codes() {
    let (mut image, _) = cluster();
    let invalid = ResponseError::InvalidReplicaAssignment.code();
    assert_eq!(reassign(&mut image, Some(vec![])), invalid);
    assert_eq!(reassign(&mut image, Some(vec![2, 2, 3])), invalid);
    assert_eq!(reassign(&mut image, Some(vec![2, 3, 9])), invalid);
    let unknown = ReassignmentRequest {
        topic: "missing".into(),
        partition: 0,
        replicas: Some(vec![1]),
    };
    let (_, outcomes) = alter_reassignments(&image, &[unknown], false);
    assert_eq!(outcomes[0].2, ResponseError::UnknownTopicOrPartition.code());
    let (_, outcomes) = alter_reassignments(&image, &[request(Some(vec![1, 2]))], true);
    assert_eq!(
        outcomes[0].2,
        ResponseError::InvalidReplicationFactor.code()
    );
    assert!(!state(&image).is_reassigning(), "nothing was changed");
}

#[test]
fn an_unchanged_assignment_writes_nothing() {
    let (image, _) = cluster();
    let (records, outcomes) = alter_reassignments(&image, &[request(Some(vec![1, 2, 3]))], true);
    assert!(records.is_empty());
    assert_eq!(outcomes[0].2, 0);
}
