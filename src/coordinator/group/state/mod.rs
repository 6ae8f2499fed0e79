//! One consumer group under Kafka's classic protocol: members, generations, the rebalance
//! state machine and committed offsets.
//!
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!   ▲                 ▲        │                                    │ leader's SyncGroup
//!   │                 │        └─ no member left ─▶ Empty           ▼ (group record replicated)
//!   └── last member leaves / expires ◀──── join, leave, expiry ── Stable
//! ```
//!
//! Everything here is synchronous and takes the time as an argument, so the state machine
//! is tested with a clock the test moves ([`tests`]). JoinGroup and SyncGroup are long polls:
//! a member that must wait gets a receiver, completed when the rebalance moves on. The
//! coordinator ([`super::GroupCoordinator`]) locks a group, calls in, and persists what the
//! group asks it to (group metadata after a rebalance, offsets after validation).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use proto_kafka::ResponseError;
use tokio::sync::oneshot;

use super::records::{GroupValue, MemberValue, OffsetValue};

mod members;
mod rebalance;
#[cfg(test)]
mod tests;
use crate::config::groups::GroupOptions;

/// Kafka's state names, as DescribeGroups and ListGroups report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];
}

/// What a JoinGroup member is told.
#[derive(Clone, Debug, Default)]
pub struct JoinOutcome {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub fn failed(error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: Some(error),
            generation_id: -1,
            member_id: member_id.to_owned(),
            ..JoinOutcome::default()
        }
    }
}

/// What a SyncGroup member is told.
#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn failed(error: ResponseError) -> SyncOutcome {
        SyncOutcome {
            error: Some(error),
            ..SyncOutcome::default()
        }
    }
}

/// A reply now, or later through the receiver.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A SyncGroup request, as the state machine needs it.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: member id -> its share.
    pub assignments: Vec<(String, Bytes)>,
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader may skip the assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// Protocols in the member's order of preference, with its metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn is_awaiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

/// The first rebalance of an empty group waits for more members (InitialDelayedJoin).
#[derive(Clone, Copy, Debug)]
struct InitialDelay {
    deadline_ms: i64,
    /// Rebalance timeout not yet spent on delays.
    remaining_ms: i64,
    member_joined: bool,
}

/// What a completed rebalance or an emptied group asks the coordinator to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// The group's metadata at this generation (after SyncGroup from the leader, or on
    /// becoming empty).
    Group { generation_id: i32 },
}

pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub state_since_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id of static members.
    pub static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, until they join (or expire).
    pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: Option<i64>,
    initial_delay: Option<InitialDelay>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Writes the coordinator must make, taken with [`Group::take_persist`].
    persist: Vec<Persist>,
    /// Rebalances completed (for metrics): (started ms, completed ms).
    pub rebalances_completed: Vec<(i64, i64)>,
    rebalance_started_ms: Option<i64>,
    /// `group.initial.rebalance.delay.ms`.
    initial_rebalance_delay_ms: i64,
}

/// Kafka's id for a new member: its client id and a random suffix.
fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(group_id: &str, initial_rebalance_delay_ms: i64, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: None,
            initial_delay: None,
            offsets: BTreeMap::new(),
            persist: Vec::new(),
            rebalances_completed: Vec::new(),
            rebalance_started_ms: None,
            initial_rebalance_delay_ms,
        }
    }

    /// A group as replayed from its metadata record: Stable with its members, or Empty.
    pub fn from_record(
        group_id: &str,
        value: GroupValue,
        initial_rebalance_delay_ms: i64,
        now_ms: i64,
    ) -> Group {
        let mut group = Group::new(group_id, initial_rebalance_delay_ms, now_ms);
        group.protocol_type = Some(value.protocol_type.clone());
        group.generation_id = value.generation_id;
        group.protocol_name = value.protocol_name.clone();
        group.leader_id = value.leader_id.clone();
        if value.state_timestamp_ms > 0 {
            group.state_since_ms = value.state_timestamp_ms;
        }
        let protocol = value.protocol_name.clone().unwrap_or_default();
        for member in value.members {
            if let Some(instance) = &member.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            group.members.insert(
                member.member_id.clone(),
                Member {
                    member_id: member.member_id,
                    group_instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![(protocol.clone(), member.subscription)],
                    assignment: member.assignment,
                    last_heartbeat_ms: now_ms,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
        }
        group
    }

    /// The group's metadata record as of now.
    pub fn to_record(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|member| MemberValue {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata(&protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    pub fn take_persist(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.persist)
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Whether the group has neither members nor offsets, and can be forgotten.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }

    // --- offsets ------------------------------------------------------------------------

    /// Whether an OffsetCommit from this member at this generation may commit (Kafka's
    /// rules: generation -1 without a member id commits into an empty group).
    pub fn check_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return None;
        }
        if self.state == GroupState::CompletingRebalance {
            return Some(ResponseError::RebalanceInProgress);
        }
        if let Some(error) = self.check_member(member_id, instance) {
            return Some(error);
        }
        if generation_id != self.generation_id {
            return Some(ResponseError::IllegalGeneration);
        }
        None
    }

    /// Offsets of an empty group expire `retention_ms` after it became empty; those of a
    /// group never managed here (no protocol type) `retention_ms` after their commit.
    pub fn expired_offsets(&self, retention_ms: i64, now_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, value)| {
                let since = match self.protocol_type {
                    Some(_) => self.state_since_ms.max(value.commit_timestamp_ms),
                    None => value.commit_timestamp_ms,
                };
                since + retention_ms <= now_ms
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Topics the members' subscriptions name (consumer protocol only).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            topics.extend(super::consumer_protocol::subscription_topics(
                &member.metadata(&protocol),
            )?);
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }

    /// Answers every waiting member with NOT_COORDINATOR (the group moved away).
    pub fn fail_waiters(&mut self, error: ResponseError) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinOutcome::failed(error, &member.member_id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncOutcome::failed(error));
            }
        }
    }

    /// Back to Empty after a deletion that could not be written.
    pub fn revive_empty(&mut self, now_ms: i64) {
        if self.state == GroupState::Dead {
            self.transition(GroupState::Empty, now_ms);
        }
    }

    pub fn mark_dead(&mut self, now_ms: i64) {
        self.fail_waiters(ResponseError::CoordinatorNotAvailable);
        self.transition(GroupState::Dead, now_ms);
    }
}
