//! The controller's decisions: pure functions from the current metadata image and a request
//! to the records that carry it out (and the answer). They run on the Raft leader, one at a
//! time, against the newest image, so checks such as "topic does not exist yet" cannot race.

use std::collections::{BTreeMap, HashSet};

use proto_kafka::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::topic;
use crate::error::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord, PartitionImage, TopicImage};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have; bounds the work and memory of a single request.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

/// Kafka's topic name rules: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::new(ResponseError::InvalidTopicException, why));
    if name.is_empty() {
        return invalid("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return invalid("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-' ({bad:?})"
        ));
    }
    Ok(())
}

/// What a CreateTopics entry asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit replica lists per partition, if the client gave them.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: BTreeMap<String, String>,
}

/// A created (or validated) topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
}

/// Brokers that can take new replicas: registered and not fenced, as (id, rack).
fn live_brokers(image: &MetadataImage) -> Vec<(i32, Option<String>)> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| (b.broker_id, b.rack.clone()))
        .collect()
}

/// Broker ids ordered so that consecutive ones alternate racks (Kafka's rack-alternated
/// list): round-robin placement over it spreads each partition's replicas across racks.
fn rack_alternated(brokers: &[(i32, Option<String>)]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.clone()).or_default().push(*id);
    }
    let mut racks: Vec<Vec<i32>> = by_rack.into_values().collect();
    for ids in &mut racks {
        ids.sort_unstable();
    }
    let longest = racks.iter().map(Vec::len).max().unwrap_or(0);
    let mut ordered = Vec::with_capacity(brokers.len());
    for index in 0..longest {
        for ids in &racks {
            if let Some(id) = ids.get(index) {
                ordered.push(*id);
            }
        }
    }
    ordered
}

/// Replica lists for `partitions`, round-robin over the rack-alternated brokers from
/// `start`; the first replica is the preferred leader.
pub fn place(
    brokers: &[(i32, Option<String>)],
    partitions: std::ops::Range<i32>,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let ordered = rack_alternated(brokers);
    let rack_of: std::collections::HashMap<i32, Option<String>> = brokers.iter().cloned().collect();
    let count = ordered.len();
    partitions
        .map(|partition| {
            let first = (start + partition as usize) % count;
            // Followers start further along for each full round of partitions, so replica
            // sets vary (Kafka's replica shift).
            let shift = 1 + (partition as usize / count) % count.saturating_sub(1).max(1);
            let mut replicas = vec![ordered[first]];
            while replicas.len() < replication_factor {
                let candidates = (0..count).map(|j| ordered[(first + shift + j) % count]);
                let unused: Vec<i32> = candidates.filter(|id| !replicas.contains(id)).collect();
                let racks_used: Vec<&Option<String>> =
                    replicas.iter().map(|id| &rack_of[id]).collect();
                // Prefer a rack not used yet by this partition.
                let pick = unused
                    .iter()
                    .find(|id| !racks_used.contains(&&rack_of[*id]))
                    .or(unused.first())
                    .copied()
                    .expect("replication factor <= brokers");
                replicas.push(pick);
            }
            replicas
        })
        .collect()
}

fn check_topic_request(
    image: &MetadataImage,
    defaults: &TopicDefaults,
    request: &TopicRequest,
) -> Result<Vec<Vec<i32>>, ApiError> {
    validate_topic_name(&request.name)?;
    if image.topic(&request.name).is_some() {
        return Err(ApiError::new(
            ResponseError::TopicAlreadyExists,
            format!("Topic '{}' already exists.", request.name),
        ));
    }
    for (name, value) in &request.configs {
        topic::validate(name, value)
            .map_err(|message| ApiError::new(ResponseError::InvalidConfig, message))?;
    }
    let brokers = live_brokers(image);
    if !request.assignments.is_empty() {
        if request.partitions != -1 || request.replication_factor != -1 {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let known: HashSet<i32> = image.brokers.keys().copied().collect();
        for (index, (partition, replicas)) in request.assignments.iter().enumerate() {
            if *partition != index as i32 {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "partitions must be numbered 0..n",
                ));
            }
            let distinct: HashSet<i32> = replicas.iter().copied().collect();
            if replicas.is_empty()
                || distinct.len() != replicas.len()
                || !distinct.iter().all(|id| known.contains(id))
            {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replica assignment {replicas:?} must name distinct registered brokers ({known:?})"),
                ));
            }
        }
        return Ok(request
            .assignments
            .iter()
            .map(|(_, replicas)| replicas.clone())
            .collect());
    }
    let partitions = if request.partitions == -1 {
        defaults.num_partitions
    } else {
        request.partitions
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {partitions}."),
        ));
    }
    let replication_factor = match request.replication_factor {
        -1 => defaults.replication_factor,
        factor => factor,
    };
    if replication_factor < 1 {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    if replication_factor as usize > brokers.len() {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                brokers.len()
            ),
        ));
    }
    let start = placement_start(&request.name, brokers.len());
    Ok(place(
        &brokers,
        0..partitions,
        replication_factor as usize,
        start,
    ))
}

/// A stable pseudo-random start for a topic's round-robin placement.
fn placement_start(name: &str, brokers: usize) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x1000_0000_01b3)
    });
    (hash % brokers.max(1) as u64) as usize
}

fn partition_records(
    topic_id: Uuid,
    first: i32,
    assignments: Vec<Vec<i32>>,
) -> impl Iterator<Item = MetadataRecord> {
    assignments
        .into_iter()
        .enumerate()
        .map(move |(index, replicas)| MetadataRecord::Partition {
            topic_id,
            partition: first + index as i32,
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        })
}

/// Broker-level defaults a topic decision needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub delete_topic_enable: bool,
}

pub fn create_topic(
    image: &MetadataImage,
    defaults: &TopicDefaults,
    request: TopicRequest,
    validate_only: bool,
) -> Result<(Vec<MetadataRecord>, CreatedTopic), ApiError> {
    let assignments = check_topic_request(image, defaults, &request)?;
    let topic_id = Uuid::new_v4();
    let created = CreatedTopic {
        topic_id,
        partitions: assignments.len() as i32,
        replication_factor: assignments[0].len() as i16,
    };
    if validate_only {
        return Ok((Vec::new(), created));
    }
    let mut records = vec![MetadataRecord::Topic {
        name: request.name.clone(),
        topic_id,
    }];
    records.extend(partition_records(topic_id, 0, assignments));
    records.extend(
        request
            .configs
            .iter()
            .map(|(name, value)| MetadataRecord::Config {
                topic: request.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            }),
    );
    tracing::info!(topic = %request.name, partitions = created.partitions, "creating topic");
    Ok((records, created))
}

pub fn delete_topic(
    image: &MetadataImage,
    defaults: &TopicDefaults,
    name: &str,
) -> Result<(Vec<MetadataRecord>, Uuid), ApiError> {
    if !defaults.delete_topic_enable {
        return Err(ApiError::new(
            ResponseError::TopicDeletionDisabled,
            "delete.topic.enable is false",
        ));
    }
    let topic = image.topic(name).ok_or_else(|| {
        ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            "This server does not host this topic-partition.",
        )
    })?;
    tracing::info!(topic = %name, "deleting topic");
    Ok((
        vec![MetadataRecord::RemoveTopic {
            topic_id: topic.topic_id,
        }],
        topic.topic_id,
    ))
}

pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ApiError::unknown_topic(name))?;
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count > PARTITIONS_PER_TOPIC_MAX {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be at most {PARTITIONS_PER_TOPIC_MAX}."),
        ));
    }
    // A partition being reassigned lists its removing replicas too: count its target.
    let replication_factor = topic
        .partitions
        .first()
        .map_or(1, |p| p.target_replicas().len());
    let brokers = live_brokers(image);
    let placed = match assignments {
        Some(assignments) => {
            let known: HashSet<i32> = image.brokers.keys().copied().collect();
            if assignments.len() as i32 != count - current
                || assignments
                    .iter()
                    .any(|r| r.is_empty() || !r.iter().all(|id| known.contains(id)))
            {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "assignments must give {} replica lists of registered brokers",
                        count - current
                    ),
                ));
            }
            assignments
        }
        None => {
            if replication_factor > brokers.len() {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("{replication_factor} replicas need {replication_factor} live brokers, {} are", brokers.len()),
                ));
            }
            place(
                &brokers,
                current..count,
                replication_factor,
                placement_start(name, brokers.len()),
            )
        }
    };
    if validate_only {
        return Ok(Vec::new());
    }
    Ok(partition_records(topic.topic_id, current, placed).collect())
}

/// Topic config changes: `Some(value)` sets, `None` removes. With `replace_all`
/// (AlterConfigs), keys not mentioned are removed, as Kafka's legacy API does.
pub fn alter_topic_configs(
    image: &MetadataImage,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    replace_all: bool,
    validate_only: bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ApiError::unknown_topic(name))?;
    for (key, value) in &changes {
        match value {
            Some(value) => topic::validate(key, value),
            None if topic::key(key).is_some() => Ok(()),
            None => Err(format!("Unknown topic config name: {key}")),
        }
        .map_err(|message| ApiError::new(ResponseError::InvalidConfig, message))?;
    }
    let mut records: Vec<MetadataRecord> = Vec::new();
    if replace_all {
        for existing in topic.configs.keys() {
            if !changes.iter().any(|(key, _)| key == existing) {
                records.push(MetadataRecord::Config {
                    topic: name.to_owned(),
                    name: existing.clone(),
                    value: None,
                });
            }
        }
    }
    records.extend(
        changes
            .into_iter()
            .map(|(key, value)| MetadataRecord::Config {
                topic: name.to_owned(),
                name: key,
                value,
            }),
    );
    if validate_only {
        records.clear();
    }
    Ok(records)
}

/// What a partition leader asks the controller for (AlterPartition).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IsrChange {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// AlterPartition, fenced as in KRaft: only the current leader, at the current leader epoch
/// and partition epoch, may change the ISR; the ISR keeps the leader, names only replicas,
/// and admits only registered, unfenced brokers.
pub fn alter_partition(
    image: &MetadataImage,
    change: &IsrChange,
) -> Result<(Vec<MetadataRecord>, super::ControllerReply), ApiError> {
    let refuse = |code, message: String| Err(ApiError::new(code, message));
    if image
        .broker(change.broker_id)
        .is_none_or(|b| b.broker_epoch != change.broker_epoch)
    {
        return refuse(
            ResponseError::StaleBrokerEpoch,
            format!(
                "broker {} epoch {} is not current",
                change.broker_id, change.broker_epoch
            ),
        );
    }
    let Some(partition) = image
        .topic_by_id(&change.topic_id)
        .and_then(|topic| topic.partition(change.partition))
    else {
        return refuse(
            ResponseError::UnknownTopicOrPartition,
            format!(
                "no partition {} of topic {}",
                change.partition, change.topic_id
            ),
        );
    };
    if partition.leader != change.broker_id {
        return refuse(
            ResponseError::NotLeaderOrFollower,
            format!("broker {} does not lead this partition", change.broker_id),
        );
    }
    if partition.leader_epoch != change.leader_epoch {
        return refuse(
            ResponseError::FencedLeaderEpoch,
            format!(
                "leader epoch {} is not the current {}",
                change.leader_epoch, partition.leader_epoch
            ),
        );
    }
    if partition.partition_epoch != change.partition_epoch {
        return refuse(
            ResponseError::InvalidUpdateVersion,
            format!(
                "partition epoch {} is not the current {}",
                change.partition_epoch, partition.partition_epoch
            ),
        );
    }
    let eligible =
        |id: &i32| partition.replicas.contains(id) && image.broker(*id).is_some_and(|b| !b.fenced);
    if !change.isr.contains(&change.broker_id) || !change.isr.iter().all(eligible) {
        return refuse(
            ResponseError::IneligibleReplica,
            format!(
                "ISR {:?} must hold the leader and only live replicas of {:?}",
                change.isr, partition.replicas
            ),
        );
    }
    let unchanged = super::ControllerReply::PartitionState {
        leader_epoch: partition.leader_epoch,
        partition_epoch: partition.partition_epoch,
        isr: partition.isr.clone(),
    };
    let mut wanted = change.isr.clone();
    wanted.sort_unstable();
    wanted.dedup();
    let mut current = partition.isr.clone();
    current.sort_unstable();
    if wanted == current {
        return Ok((Vec::new(), unchanged));
    }
    // Keep the replica order for the members (Metadata lists the ISR in that order).
    let isr: Vec<i32> = partition
        .replicas
        .iter()
        .copied()
        .filter(|id| wanted.contains(id))
        .collect();
    if let Some((completion, isr)) =
        super::reassignment::complete_with_isr(image, change.topic_id, partition, &isr)
    {
        // The last adding replica joined: the reassignment completes in this same change,
        // which also bumps the leader epoch (the leader learns the rest from the image).
        let reply = super::ControllerReply::PartitionState {
            leader_epoch: partition.leader_epoch + 1,
            partition_epoch: partition.partition_epoch + 1,
            isr,
        };
        return Ok((vec![completion], reply));
    }
    Ok((
        vec![MetadataRecord::PartitionChange {
            topic_id: change.topic_id,
            partition: change.partition,
            leader: None,
            isr: Some(isr.clone()),
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        }],
        super::ControllerReply::PartitionState {
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch + 1,
            isr,
        },
    ))
}

/// Leadership and ISR changes when `broker` stops being able to serve (fenced): each
/// partition it leads or is in the ISR of changes as [`move_replica_away`] says.
pub fn move_leadership_away(
    image: &MetadataImage,
    broker: i32,
    unclean_allowed: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for partition in &topic.partitions {
            records.extend(move_replica_away(
                image,
                topic,
                partition,
                broker,
                unclean_allowed,
            ));
        }
    }
    records
}

/// The change when `broker`'s replica of `partition` can no longer serve (its broker is
/// fenced, or its log went offline): if it leads, the first other in-sync, unfenced replica
/// takes over — or, when none is alive and the topic allows unclean election, the first live
/// replica (which may lack acknowledged records) — or nobody; it leaves the ISR when
/// another member remains (the last member stays, as in Kafka, so a later clean election is
/// still possible when it returns). `None` when nothing changes.
pub fn move_replica_away(
    image: &MetadataImage,
    topic: &TopicImage,
    partition: &PartitionImage,
    broker: i32,
    unclean_allowed: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> Option<MetadataRecord> {
    let usable = |id: i32| id != broker && image.broker(id).is_some_and(|b| !b.fenced);
    let without: Vec<i32> = partition
        .isr
        .iter()
        .copied()
        .filter(|id| *id != broker)
        .collect();
    let change = |leader, isr| MetadataRecord::PartitionChange {
        topic_id: topic.topic_id,
        partition: partition.partition,
        leader,
        isr,
        replicas: None,
        adding_replicas: None,
        removing_replicas: None,
    };
    if partition.leader != broker {
        let leaves_isr = partition.isr.contains(&broker) && !without.is_empty();
        return leaves_isr.then(|| change(None, Some(without)));
    }
    let clean = partition
        .replicas
        .iter()
        .copied()
        .find(|id| partition.isr.contains(id) && usable(*id));
    let (leader, isr) = match clean {
        Some(leader) => (leader, Some(without)),
        None => match partition.replicas.iter().copied().find(|id| usable(*id)) {
            Some(leader) if unclean_allowed(&topic.configs) => {
                tracing::warn!(
                    topic = %topic.name,
                    partition = partition.partition,
                    leader,
                    "unclean leader election: no in-sync replica is alive"
                );
                (leader, Some(vec![leader]))
            }
            _ => (-1, None),
        },
    };
    Some(change(Some(leader), isr))
}

/// A broker reports that its log of a partition went offline (a failed write or sync, or a
/// batch that failed its CRC check on read): its replica moves away as for a fenced broker
/// ([`move_replica_away`]), for this partition only. Fenced like AlterPartition by the
/// broker epoch.
pub fn replica_offline(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
    topic_id: Uuid,
    partition: i32,
    unclean_allowed: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    if image
        .broker(broker_id)
        .is_none_or(|b| b.broker_epoch != broker_epoch)
    {
        return Err(ApiError::new(
            ResponseError::StaleBrokerEpoch,
            format!("broker {broker_id} epoch {broker_epoch} is not current"),
        ));
    }
    let Some((topic, image_partition)) = image
        .topic_by_id(&topic_id)
        .and_then(|topic| Some((topic, topic.partition(partition)?)))
    else {
        return Err(ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {partition} of topic {topic_id}"),
        ));
    };
    Ok(
        move_replica_away(image, topic, image_partition, broker_id, unclean_allowed)
            .into_iter()
            .collect(),
    )
}

/// One partition's outcome of an ElectLeaders request: (topic, partition, error code,
/// message); 0 means a new leader was chosen.
pub type ElectionOutcome = (String, i32, i16, Option<String>);

/// Leader elections (ElectLeaders, and the controller's automatic preferred-leader
/// rebalance). Preferred (`unclean` false): the first replica in the assignment becomes
/// leader when it is alive and in the ISR. Unclean: a partition without a leader gets its
/// first live replica, in the ISR or not. `wanted` None means every partition, and then
/// partitions that need nothing are left out of the outcomes.
pub fn elect_leaders(
    image: &MetadataImage,
    unclean: bool,
    wanted: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionOutcome>) {
    let alive = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let all: Vec<(String, i32)>;
    let targets: &[(String, i32)] = match wanted {
        Some(targets) => targets,
        None => {
            all = image
                .topics
                .values()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.name.clone(), p.partition))
                })
                .collect();
            &all
        }
    };
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (name, index) in targets {
        let found = image
            .topic(name)
            .and_then(|topic| topic.partition(*index).map(|p| (topic, p)));
        let Some((topic, partition)) = found else {
            outcomes.push((
                name.clone(),
                *index,
                ResponseError::UnknownTopicOrPartition.code(),
                Some(format!("{name}-{index} does not exist")),
            ));
            continue;
        };
        let choice = if unclean {
            if partition.leader != -1 {
                Err((
                    ResponseError::ElectionNotNeeded,
                    "the partition has a leader",
                ))
            } else {
                partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|id| alive(*id))
                    .ok_or((
                        ResponseError::EligibleLeadersNotAvailable,
                        "no replica is alive",
                    ))
            }
        } else {
            let preferred = partition.replicas.first().copied().unwrap_or(-1);
            if partition.leader == preferred {
                Err((
                    ResponseError::ElectionNotNeeded,
                    "the preferred replica leads already",
                ))
            } else if !alive(preferred) || !partition.isr.contains(&preferred) {
                Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    "the preferred replica is not alive and in sync",
                ))
            } else {
                Ok(preferred)
            }
        };
        match choice {
            Ok(leader) => {
                let isr = (unclean && !partition.isr.contains(&leader)).then(|| vec![leader]);
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: *index,
                    leader: Some(leader),
                    isr,
                    replicas: None,
                    adding_replicas: None,
                    removing_replicas: None,
                });
                outcomes.push((name.clone(), *index, 0, None));
            }
            Err((code, why)) => {
                if wanted.is_some() {
                    outcomes.push((name.clone(), *index, code.code(), Some(why.to_owned())));
                }
            }
        }
    }
    (records, outcomes)
}

/// Leadership for partitions without a leader that `broker` (now unfenced) can take: it is
/// an in-sync replica of them.
pub fn elect_leaderless(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for partition in &topic.partitions {
            if partition.leader == -1
                && partition.replicas.contains(&broker)
                && partition.isr.contains(&broker)
            {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: partition.partition,
                    leader: Some(broker),
                    isr: None,
                    replicas: None,
                    adding_replicas: None,
                    removing_replicas: None,
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brokers 1..=3 (epoch = id * 10 after one registration each), a topic with one
    /// partition on {1,2,3} led by 1 with ISR `isr`.
    fn image_with_partition(isr: Vec<i32>) -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::new("cluster".into());
        let mut index = 0;
        let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
            index += 1;
            image.apply(index, &record).unwrap();
        };
        for broker_id in 1..=3 {
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
                name: "orders".into(),
                topic_id,
            },
        );
        apply(
            &mut image,
            MetadataRecord::Partition {
                topic_id,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        );
        (image, topic_id)
    }

    fn offline(image: &MetadataImage, topic_id: Uuid, broker: i32) -> Vec<MetadataRecord> {
        let epoch = image.broker(broker).unwrap().broker_epoch;
        replica_offline(image, broker, epoch, topic_id, 0, &|_| false).unwrap()
    }

    #[test]
    fn an_offline_leader_replica_hands_leadership_to_an_isr_member_and_leaves_the_isr() {
        let (mut image, topic_id) = image_with_partition(vec![1, 2, 3]);
        for record in offline(&image, topic_id, 1) {
            image.apply(100, &record).unwrap();
        }
        let partition = image.topic("orders").unwrap().partition(0).unwrap();
        assert_eq!(partition.leader, 2);
        assert_eq!(partition.isr, vec![2, 3]);
        // Reported again (the image had not reached the broker yet): nothing more changes.
        assert!(offline(&image, topic_id, 1).is_empty());
    }

    #[test]
    fn an_offline_follower_replica_leaves_the_isr_but_the_last_member_stays() {
        let (image, topic_id) = image_with_partition(vec![1, 3]);
        let records = offline(&image, topic_id, 3);
        assert!(
            matches!(&records[..], [MetadataRecord::PartitionChange { leader: None, isr: Some(isr), .. }] if isr == &vec![1])
        );
        // The only in-sync replica goes offline: no clean leader is left, the ISR keeps it.
        let (image, topic_id) = image_with_partition(vec![1]);
        let records = offline(&image, topic_id, 1);
        assert!(
            matches!(
                &records[..],
                [MetadataRecord::PartitionChange {
                    leader: Some(-1),
                    isr: None,
                    ..
                }]
            ),
            "{records:?}"
        );
    }

    #[test]
    fn a_replica_offline_report_with_a_stale_broker_epoch_is_refused() {
        let (image, topic_id) = image_with_partition(vec![1, 2, 3]);
        let epoch = image.broker(1).unwrap().broker_epoch;
        let error = replica_offline(&image, 1, epoch + 1, topic_id, 0, &|_| false).unwrap_err();
        assert_eq!(error.code, ResponseError::StaleBrokerEpoch);
    }

    #[test]
    fn placement_spreads_leaders_and_replicas_over_brokers_and_racks() {
        let brokers = vec![
            (1, Some("a".into())),
            (2, Some("a".into())),
            (3, Some("b".into())),
            (4, Some("b".into())),
        ];
        let placed = place(&brokers, 0..8, 2, 0);
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(
            leaders.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2, 2]
        );
        let rack = |id: i32| if id <= 2 { "a" } else { "b" };
        let spread = placed.iter().filter(|r| rack(r[0]) != rack(r[1])).count();
        assert!(spread >= 6, "{placed:?}");
    }

    #[test]
    fn kafka_topic_name_rules_apply() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "bad topic!", "slash/name", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert_eq!(error.code, ResponseError::InvalidTopicException, "{bad:?}");
        }
    }
}
