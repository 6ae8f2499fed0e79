//! Partition reassignment (KIP-455): AlterPartitionReassignments to start, change or cancel
//! moves, ListPartitionReassignments to watch them. Both go to the bootstrap broker, which
//! forwards them to the controller.

use proto_kafka::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use proto_kafka::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use proto_kafka::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use proto_kafka::protocol::StrBytes;

use super::admin::ADMIN_TIMEOUT_MS;
use super::{Client, ClientError, KafkaError};

/// A partition's new replicas (`None`: cancel its reassignment in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// A reassignment in progress, as the controller reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// Target replicas first, then those being removed.
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

impl Client {
    /// Starts (or cancels) each reassignment; answers per partition, in request order.
    pub async fn alter_partition_reassignments(
        &mut self,
        reassignments: &[Reassignment],
    ) -> Result<Vec<(Reassignment, Result<(), KafkaError>)>, ClientError> {
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for wanted in reassignments {
            let partition = ReassignablePartition::default()
                .with_partition_index(wanted.partition)
                .with_replicas(
                    wanted
                        .replicas
                        .as_ref()
                        .map(|ids| ids.iter().copied().map(BrokerId).collect()),
                );
            match topics
                .iter_mut()
                .find(|t| t.name.0.as_str() == wanted.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    ReassignableTopic::default()
                        .with_name(topic_name(&wanted.topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let version = self
            .bootstrap
            .version::<AlterPartitionReassignmentsRequest>()?;
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(topics);
        let response = self
            .bootstrap
            .send_waiting(request, version, ADMIN_TIMEOUT_MS as u64)
            .await?;
        KafkaError::check(
            || "alter partition reassignments".to_owned(),
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let answers = reassignments
            .iter()
            .map(|wanted| {
                let answer = response
                    .responses
                    .iter()
                    .filter(|topic| topic.name.0.as_str() == wanted.topic)
                    .flat_map(|topic| topic.partitions.iter())
                    .find(|partition| partition.partition_index == wanted.partition);
                let outcome = match answer {
                    Some(answer) => KafkaError::check(
                        || format!("reassign {}-{}", wanted.topic, wanted.partition),
                        answer.error_code,
                        answer.error_message.as_deref(),
                    ),
                    None => Ok(()),
                };
                (wanted.clone(), outcome)
            })
            .collect();
        Ok(answers)
    }

    /// Reassignments in progress, of `partitions` (topic, partition) or of all.
    pub async fn list_partition_reassignments(
        &mut self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<OngoingReassignment>, ClientError> {
        let topics = partitions.map(|partitions| {
            let mut topics: Vec<ListPartitionReassignmentsTopics> = Vec::new();
            for (name, index) in partitions {
                match topics.iter_mut().find(|t| t.name.0.as_str() == name) {
                    Some(topic) => topic.partition_indexes.push(*index),
                    None => topics.push(
                        ListPartitionReassignmentsTopics::default()
                            .with_name(topic_name(name))
                            .with_partition_indexes(vec![*index]),
                    ),
                }
            }
            topics
        });
        let version = self
            .bootstrap
            .version::<ListPartitionReassignmentsRequest>()?;
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(topics);
        let response = self
            .bootstrap
            .send_waiting(request, version, ADMIN_TIMEOUT_MS as u64)
            .await?;
        KafkaError::check(
            || "list partition reassignments".to_owned(),
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<i32>>();
        let mut ongoing = Vec::new();
        for topic in &response.topics {
            for partition in &topic.partitions {
                ongoing.push(OngoingReassignment {
                    topic: topic.name.to_string(),
                    partition: partition.partition_index,
                    replicas: ids(&partition.replicas),
                    adding_replicas: ids(&partition.adding_replicas),
                    removing_replicas: ids(&partition.removing_replicas),
                });
            }
        }
        Ok(ongoing)
    }
}
