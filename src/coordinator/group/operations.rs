//! The coordinator's operations, one per group API: each finds the group's shard, runs
//! the state machine under the group's lock, and writes what must be durable before the
//! answer. Handlers translate Kafka requests into these calls and back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto_kafka::ResponseError;

use super::records::{self, OffsetValue};
use super::state::{Group, GroupState, JoinOutcome, JoinRequest, Reply, SyncOutcome, SyncRequest};
use super::{coordinator_error, lock, GroupCoordinator, Shard};
use crate::broker::Broker;
use crate::client::records::ProducerRecord;
use crate::replication::now_ms;

/// One partition's offset in an OffsetCommit.
#[derive(Clone, Debug)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

impl GroupCoordinator {
    pub async fn join(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        request: JoinRequest,
    ) -> JoinOutcome {
        let member_id = request.member_id.clone();
        let shard = match self.shard_for(broker, group_id) {
            Ok(shard) => shard,
            Err(error) => return JoinOutcome::failed(error, &member_id),
        };
        let create = request.member_id.is_empty();
        let Some(group) = self.group(&shard, group_id, create) else {
            return JoinOutcome::failed(ResponseError::UnknownMemberId, &member_id);
        };
        let reply = lock(&group).join(request, &self.options, now_ms());
        self.persist(broker, &shard, &group);
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or_else(|_| JoinOutcome::failed(ResponseError::NotCoordinator, &member_id)),
        }
    }

    pub async fn sync(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        request: SyncRequest,
    ) -> SyncOutcome {
        let shard = match self.shard_for(broker, group_id) {
            Ok(shard) => shard,
            Err(error) => return SyncOutcome::failed(error),
        };
        let Some(group) = self.group(&shard, group_id, false) else {
            return SyncOutcome::failed(ResponseError::UnknownMemberId);
        };
        let reply = lock(&group).sync(request);
        self.persist(broker, &shard, &group);
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or_else(|_| SyncOutcome::failed(ResponseError::NotCoordinator)),
        }
    }

    pub fn heartbeat(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        let shard = match self.shard_for(broker, group_id) {
            Ok(shard) => shard,
            Err(error) => return Some(error),
        };
        let Some(group) = self.group(&shard, group_id, false) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let error = lock(&group).heartbeat(member_id, instance, generation_id, now_ms());
        error
    }

    /// LeaveGroup: a group-level error, or one answer per member.
    pub fn leave(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let shard = self.shard_for(broker, group_id)?;
        let Some(group) = self.group(&shard, group_id, false) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let answers = {
            let mut locked = lock(&group);
            members
                .iter()
                .map(|(member_id, instance)| locked.leave(member_id, instance.as_deref(), now_ms()))
                .collect()
        };
        self.persist(broker, &shard, &group);
        Ok(answers)
    }

    /// OffsetCommit: a group-level error for all partitions, or one answer per partition.
    /// Valid offsets are written in one batch and acknowledged once replicated.
    pub async fn commit_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        commits: Vec<OffsetCommit>,
    ) -> Vec<Option<ResponseError>> {
        let all = |error| vec![Some(error); commits.len()];
        let (member_id, instance, generation_id) = member;
        let shard = match self.shard_for(broker, group_id) {
            Ok(shard) => shard,
            Err(error) => return all(error),
        };
        let Some(group) = self.group(&shard, group_id, generation_id < 0) else {
            return all(ResponseError::IllegalGeneration);
        };
        if let Some(error) = lock(&group).check_commit(member_id, instance, generation_id) {
            return all(error);
        }
        let image = broker.metadata.image();
        let now = now_ms();
        let mut answers = vec![None; commits.len()];
        let mut accepted = Vec::new();
        for (index, commit) in commits.iter().enumerate() {
            let exists = image
                .topic(&commit.topic)
                .is_some_and(|t| t.partition(commit.partition).is_some());
            let metadata = commit.metadata.clone().unwrap_or_default();
            answers[index] = if !exists {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > self.options.offset_metadata_bytes_max {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                let value = OffsetValue {
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                };
                accepted.push((index, commit.topic.clone(), commit.partition, value));
                None
            };
        }
        if accepted.is_empty() {
            return answers;
        }
        let batch: Vec<ProducerRecord> = accepted
            .iter()
            .map(|(_, topic, partition, value)| {
                GroupCoordinator::offset_record(group_id, topic, *partition, value)
            })
            .collect();
        match self.write(broker, &shard, batch).await {
            Ok(()) => {
                // Looked up again: an empty group with nothing committed yet may have been
                // forgotten (and recreated) while the write was in flight.
                let group = self.group(&shard, group_id, true).unwrap_or(group);
                let mut locked = lock(&group);
                for (_, topic, partition, value) in accepted {
                    locked.offsets.insert((topic, partition), value);
                }
                metrics::counter!("kafka_coordinator_group_offset_commits_total")
                    .increment(answers.len() as u64);
            }
            Err(error) => {
                tracing::debug!(group = %group_id, %error, "offset commit not replicated");
                let error = coordinator_error(&error);
                for (index, ..) in accepted {
                    answers[index] = Some(error);
                }
            }
        }
        answers
    }

    /// OffsetFetch: committed offsets of the requested partitions (None: all committed).
    pub fn fetch_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<OffsetValue>)>, ResponseError> {
        let shard = self.shard_for(broker, group_id)?;
        let group = self.group(&shard, group_id, false);
        let offsets = group.map(|g| lock(&g).offsets.clone()).unwrap_or_default();
        Ok(match partitions {
            None => offsets
                .into_iter()
                .map(|((topic, partition), value)| (topic, partition, Some(value)))
                .collect(),
            Some(wanted) => wanted
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions
                        .into_iter()
                        .map(|partition| {
                            let value = offsets.get(&(topic.clone(), partition)).cloned();
                            (topic.clone(), partition, value)
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        })
    }

    pub fn describe(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<GroupDescription, ResponseError> {
        let shard = self.shard_for(broker, group_id)?;
        let Some(group) = self.group(&shard, group_id, false) else {
            return Ok(GroupDescription {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            });
        };
        let locked = lock(&group);
        let protocol = locked.protocol_name.clone().unwrap_or_default();
        let stable = locked.state == GroupState::Stable;
        Ok(GroupDescription {
            state: locked.state,
            protocol_type: locked.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: locked
                .members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        if stable {
                            m.metadata(&protocol)
                        } else {
                            Bytes::new()
                        },
                        if stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    )
                })
                .collect(),
        })
    }

    /// Groups coordinated here whose state is in `states` (empty: any).
    pub fn list(&self, states: &[String]) -> Vec<ListedGroup> {
        let mut listed = Vec::new();
        for shard in self.shards() {
            if !shard.is_loaded() {
                continue;
            }
            for group in shard.groups() {
                let locked = lock(&group);
                let state = locked.state;
                if state == GroupState::Dead {
                    continue;
                }
                if !states.is_empty()
                    && !states.iter().any(|s| s.eq_ignore_ascii_case(state.name()))
                {
                    continue;
                }
                listed.push(ListedGroup {
                    group_id: locked.group_id.clone(),
                    protocol_type: locked.protocol_type.clone().unwrap_or_default(),
                    state,
                });
            }
        }
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    /// DeleteGroups for one group: only an empty group, whose offsets and metadata are
    /// tombstoned.
    pub async fn delete_group(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Option<ResponseError> {
        let shard = match self.shard_for(broker, group_id) {
            Ok(shard) => shard,
            Err(error) => return Some(error),
        };
        let Some(group) = self.group(&shard, group_id, false) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        let tombstones = {
            let mut locked = lock(&group);
            match locked.state {
                GroupState::Dead => return Some(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                _ => return Some(ResponseError::NonEmptyGroup),
            }
            locked.mark_dead(now_ms());
            let mut tombstones: Vec<ProducerRecord> = locked
                .offsets
                .keys()
                .map(|(topic, partition)| {
                    GroupCoordinator::tombstone(records::offset_key(group_id, topic, *partition))
                })
                .collect();
            tombstones.push(GroupCoordinator::tombstone(records::group_key(group_id)));
            tombstones
        };
        match self.write(broker, &shard, tombstones).await {
            Ok(()) => {
                self.forget(&shard, group_id, &group);
                None
            }
            Err(error) => {
                // Nothing was deleted: the group is back as it was.
                lock(&group).revive_empty(now_ms());
                Some(coordinator_error(&error))
            }
        }
    }

    fn forget(&self, shard: &Shard, group_id: &str, group: &Arc<Mutex<Group>>) {
        let mut groups = shard.groups.lock().expect("groups lock");
        if groups.get(group_id).is_some_and(|g| Arc::ptr_eq(g, group)) {
            groups.remove(group_id);
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub async fn delete_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let shard = self.shard_for(broker, group_id)?;
        let group = self
            .group(&shard, group_id, false)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let (answers, deleted) = {
            let locked = lock(&group);
            if locked.state == GroupState::Dead {
                return Err(ResponseError::GroupIdNotFound);
            }
            let subscribed = match locked.state {
                GroupState::Empty => Vec::new(),
                _ => locked
                    .subscribed_topics()
                    .ok_or(ResponseError::NonEmptyGroup)?,
            };
            let mut answers = Vec::new();
            let mut deleted = Vec::new();
            for (topic, partition) in &partitions {
                if subscribed.contains(topic) {
                    answers.push(Some(ResponseError::GroupSubscribedToTopic));
                } else {
                    answers.push(None);
                    if locked.offsets.contains_key(&(topic.clone(), *partition)) {
                        deleted.push((topic.clone(), *partition));
                    }
                }
            }
            (answers, deleted)
        };
        if deleted.is_empty() {
            return Ok(answers);
        }
        let tombstones = deleted
            .iter()
            .map(|(topic, partition)| {
                GroupCoordinator::tombstone(records::offset_key(group_id, topic, *partition))
            })
            .collect();
        self.write(broker, &shard, tombstones)
            .await
            .map_err(|error| coordinator_error(&error))?;
        let mut locked = lock(&group);
        for key in &deleted {
            locked.offsets.remove(key);
        }
        Ok(answers)
    }
}
