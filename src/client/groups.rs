//! Consumer-group administration, as Kafka's admin client does it: FindCoordinator, then
//! ListGroups (every broker), DescribeGroups, OffsetFetch, OffsetCommit (generation -1, the
//! way `kafka-consumer-groups --reset-offsets` commits for an inactive group), DeleteGroups
//! and OffsetDelete at the group's coordinator.

use std::time::Duration;

use proto_kafka::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use proto_kafka::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use proto_kafka::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, TopicName,
};
use proto_kafka::protocol::{Message, Request, StrBytes, VersionRange};
use proto_kafka::ResponseError;

use super::{Client, ClientError, KafkaError};
use crate::coordinator::group::consumer_protocol;

/// FindCoordinator versions with a single key (v4+ batches keys).
const FIND_COORDINATOR_VERSIONS: VersionRange = VersionRange { min: 1, max: 3 };
/// OffsetFetch versions with one group and `topics: null` meaning "all" (v8+ batches groups).
const OFFSET_FETCH_VERSIONS: VersionRange = VersionRange { min: 2, max: 7 };
/// OffsetCommit versions Karst's tools speak.
const OFFSET_COMMIT_VERSIONS: VersionRange = VersionRange { min: 2, max: 8 };
/// How long to retry a coordinator that is loading or not yet available.
const COORDINATOR_WAIT: Duration = Duration::from_secs(15);
const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// One member as DescribeGroups reports it, with its assignment decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

fn is_coordinator_retriable(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::NotCoordinator
    )
}

impl Client {
    /// The broker id of `group`'s coordinator (retrying while it is being set up).
    pub async fn find_group_coordinator(&mut self, group: &str) -> Result<i32, ClientError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        loop {
            let version = self
                .bootstrap
                .version_within::<FindCoordinatorRequest>(FIND_COORDINATOR_VERSIONS)?;
            let request = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(group.to_owned()))
                .with_key_type(0);
            let response = self.bootstrap.send(request, version).await?;
            let checked = KafkaError::check(
                || format!("find the coordinator of group {group:?}"),
                response.error_code,
                response.error_message.as_deref(),
            );
            match checked {
                Ok(()) => {
                    self.metadata(Some(&[])).await?;
                    return Ok(response.node_id.0);
                }
                Err(error)
                    if is_coordinator_retriable(error.code)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Sends a request to `group`'s coordinator, retrying (from FindCoordinator) while the
    /// answer's error, as `error_of` reads it, says the coordinator moved or is loading.
    async fn send_to_coordinator<R, F>(
        &mut self,
        group: &str,
        versions: VersionRange,
        request: R,
        error_of: F,
    ) -> Result<R::Response, ClientError>
    where
        R: Request + Clone,
        F: Fn(&R::Response) -> i16,
    {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        loop {
            let coordinator = self.find_group_coordinator(group).await?;
            let connection = self.broker_connection(coordinator).await?;
            let version = connection.version_within::<R>(versions)?;
            let response = match connection.send(request.clone(), version).await {
                Ok(response) => response,
                Err(error) => {
                    self.forget_connection(coordinator);
                    return Err(error);
                }
            };
            let code = ResponseError::try_from_code(error_of(&response));
            match code {
                Some(code)
                    if is_coordinator_retriable(code) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                _ => return Ok(response),
            }
        }
    }

    /// Every group of the cluster (ListGroups to each broker), optionally by state.
    pub async fn list_groups(
        &mut self,
        states: &[String],
    ) -> Result<Vec<GroupListing>, ClientError> {
        let cluster = self.metadata(Some(&[])).await?;
        let mut listed = Vec::new();
        for broker in cluster.brokers {
            let connection = self.broker_connection(broker.id).await?;
            let version = connection.version::<ListGroupsRequest>()?;
            let mut request = ListGroupsRequest::default();
            if version >= 4 {
                request = request.with_states_filter(
                    states.iter().cloned().map(StrBytes::from_string).collect(),
                );
            }
            let response = connection.send(request, version).await?;
            KafkaError::check(
                || format!("list groups on broker {}", broker.id),
                response.error_code,
                None,
            )?;
            listed.extend(response.groups.into_iter().map(|group| GroupListing {
                group_id: group.group_id.0.to_string(),
                protocol_type: group.protocol_type.to_string(),
                state: group.group_state.to_string(),
            }));
        }
        if !states.is_empty() {
            listed.retain(|g| states.iter().any(|s| s.eq_ignore_ascii_case(&g.state)));
        }
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(listed)
    }

    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let response = self
            .send_to_coordinator(
                group,
                <DescribeGroupsRequest as Message>::VERSIONS,
                request,
                |r| r.groups.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let described =
            response
                .groups
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::MissingResult {
                    api: ApiKey::DescribeGroups,
                    what: group.to_owned(),
                })?;
        if described.error_code != ResponseError::GroupIdNotFound.code() {
            KafkaError::check(
                || format!("describe group {group:?}"),
                described.error_code,
                described.error_message.as_deref(),
            )?;
        }
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            members: described
                .members
                .into_iter()
                .map(|member| MemberDescription {
                    member_id: member.member_id.to_string(),
                    group_instance_id: member.group_instance_id.map(|i| i.to_string()),
                    client_id: member.client_id.to_string(),
                    client_host: member.client_host.to_string(),
                    assignment: consumer_protocol::assigned_partitions(&member.member_assignment)
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// The group's committed offsets (all of them).
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(None);
        let response = self
            .send_to_coordinator(group, OFFSET_FETCH_VERSIONS, request, |r| r.error_code)
            .await?;
        KafkaError::check(
            || format!("fetch the offsets of group {group:?}"),
            response.error_code,
            None,
        )?;
        let mut offsets = Vec::new();
        for topic in response.topics {
            for partition in topic.partitions {
                KafkaError::check(
                    || {
                        format!(
                            "fetch the offset of {group:?} for {}-{}",
                            topic.name.0, partition.partition_index
                        )
                    },
                    partition.error_code,
                    None,
                )?;
                if partition.committed_offset >= 0 {
                    offsets.push(CommittedOffset {
                        topic: topic.name.0.to_string(),
                        partition: partition.partition_index,
                        offset: partition.committed_offset,
                        metadata: partition
                            .metadata
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(offsets)
    }

    /// Commits `offsets` for an inactive group (generation -1, no member), as Kafka's
    /// reset tool does; the group refuses while it has members.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[CommittedOffset],
    ) -> Result<(), ClientError> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for offset in offsets {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(offset.partition)
                .with_committed_offset(offset.offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_string(offset.metadata.clone())));
            match topics
                .iter_mut()
                .find(|t| t.name.0.as_str() == offset.topic)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(offset.topic.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let response = self
            .send_to_coordinator(group, OFFSET_COMMIT_VERSIONS, request, |r| {
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.error_code)
                    .find(|code| *code != 0)
                    .unwrap_or(0)
            })
            .await?;
        for topic in response.topics {
            for partition in topic.partitions {
                KafkaError::check(
                    || {
                        format!(
                            "commit the offset of {group:?} for {}-{}",
                            topic.name.0, partition.partition_index
                        )
                    },
                    partition.error_code,
                    None,
                )?;
            }
        }
        Ok(())
    }

    pub async fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let response = self
            .send_to_coordinator(
                group,
                <DeleteGroupsRequest as Message>::VERSIONS,
                request,
                |r| r.results.first().map_or(0, |g| g.error_code),
            )
            .await?;
        let code = response.results.first().map_or(0, |g| g.error_code);
        KafkaError::check(|| format!("delete group {group:?}"), code, None)?;
        Ok(())
    }

    /// Deletes the group's committed offsets of `partitions` of `topic`.
    pub async fn delete_offsets(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), ClientError> {
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| OffsetDeleteRequestPartition::default().with_partition_index(*p))
                        .collect(),
                )]);
        let response = self
            .send_to_coordinator(
                group,
                <OffsetDeleteRequest as Message>::VERSIONS,
                request,
                |r| r.error_code,
            )
            .await?;
        KafkaError::check(
            || format!("delete offsets of group {group:?}"),
            response.error_code,
            None,
        )?;
        for answer in response.topics.iter().flat_map(|t| t.partitions.iter()) {
            KafkaError::check(
                || {
                    format!(
                        "delete the offset of {group:?} for {topic}-{}",
                        answer.partition_index
                    )
                },
                answer.error_code,
                None,
            )?;
        }
        Ok(())
    }
}
