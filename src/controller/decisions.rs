//! Controller decisions for a single node: topic creation, deletion, partition growth and
//! topic config changes, each turned into metadata records and committed.
//!
//! Every decision validates against the image it will change (inside
//! `MetadataStore::commit_with`), so concurrent admin requests cannot both succeed where only
//! one may. After a commit the new image is published to the replica manager.

use std::collections::BTreeMap;

use proto_kafka::ResponseError;
use uuid::Uuid;

use crate::broker::Broker;
use crate::config::topic;
use crate::error::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord};

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
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit replica lists per partition, if the client gave them.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: BTreeMap<String, String>,
}

/// A created (or validated) topic.
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
}

fn check_topic_request(
    broker: &Broker,
    image: &MetadataImage,
    request: &TopicRequest,
) -> Result<(i32, i16), ApiError> {
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
    let node = broker.config.node_id;
    if !request.assignments.is_empty() {
        if request.partitions != -1 || request.replication_factor != -1 {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        for (index, (partition, replicas)) in request.assignments.iter().enumerate() {
            if *partition != index as i32 {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "partitions must be numbered 0..n",
                ));
            }
            if replicas.as_slice() != [node] {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replica assignment {replicas:?} names brokers other than the single broker {node}"),
                ));
            }
        }
        return Ok((request.assignments.len() as i32, 1));
    }
    let partitions = if request.partitions == -1 {
        broker.config.num_partitions
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
        -1 => broker.config.default_replication_factor,
        factor => factor,
    };
    if replication_factor < 1 {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    if replication_factor > 1 {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only 1 broker(s) are registered."
            ),
        ));
    }
    Ok((partitions, replication_factor))
}

fn partition_records(
    topic_id: Uuid,
    partitions: std::ops::Range<i32>,
    node: i32,
) -> impl Iterator<Item = MetadataRecord> {
    partitions.map(move |partition| MetadataRecord::Partition {
        topic_id,
        partition,
        replicas: vec![node],
        isr: vec![node],
        leader: node,
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

impl Broker {
    /// Commits `decide`'s records and publishes the new image to local partitions.
    fn commit<T>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ApiError>,
    ) -> Result<T, ApiError> {
        let (image, outcome) = self.metadata.commit_with(decide)?;
        self.replicas
            .apply_image(&image, &self.config)
            .map_err(|error| {
                tracing::error!(%error, "applying metadata to local partitions failed");
                ApiError::new(ResponseError::KafkaStorageError, format!("{error:#}"))
            })?;
        Ok(outcome)
    }

    pub fn create_topic(
        &self,
        request: TopicRequest,
        validate_only: bool,
    ) -> Result<CreatedTopic, ApiError> {
        let node = self.config.node_id;
        self.commit(|image| {
            let (partitions, replication_factor) = check_topic_request(self, image, &request)?;
            let topic_id = Uuid::new_v4();
            let created = CreatedTopic {
                topic_id,
                partitions,
                replication_factor,
            };
            if validate_only {
                return Ok((Vec::new(), created));
            }
            let mut records = vec![MetadataRecord::Topic {
                name: request.name.clone(),
                topic_id,
            }];
            records.extend(partition_records(topic_id, 0..partitions, node));
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
            tracing::info!(topic = %request.name, partitions, "creating topic");
            Ok((records, created))
        })
    }

    pub fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        if !self.config.delete_topic_enable {
            return Err(ApiError::new(
                ResponseError::TopicDeletionDisabled,
                "delete.topic.enable is false",
            ));
        }
        self.commit(|image| {
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
        })
    }

    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let node = self.config.node_id;
        self.commit(|image| {
            let topic = image.topic(name).ok_or_else(|| {
                ApiError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."))
            })?;
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
            if validate_only {
                return Ok((Vec::new(), ()));
            }
            Ok((partition_records(topic.topic_id, current..count, node).collect(), ()))
        })
    }

    /// Applies topic config changes: `Some(value)` sets, `None` removes. With `replace_all`
    /// (AlterConfigs), keys not mentioned are removed, as Kafka's legacy API does.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.commit(|image| {
            let topic = image.topic(name).ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                )
            })?;
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
            Ok((records, ()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules_apply() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "bad topic!", "slash/name", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert_eq!(error.code, ResponseError::InvalidTopicException, "{bad:?}");
        }
    }
}
