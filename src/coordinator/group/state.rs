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

    // --- JoinGroup --------------------------------------------------------------------

    pub fn join(
        &mut self,
        request: JoinRequest,
        options: &GroupOptions,
        now_ms: i64,
    ) -> Reply<JoinOutcome> {
        if let Some(error) = self.check_join(&request, options) {
            return Reply::Now(JoinOutcome::failed(error, &request.member_id));
        }
        if request.member_id.is_empty() {
            self.join_unknown_member(request, now_ms)
        } else {
            self.join_known_member(request, now_ms)
        }
    }

    fn check_join(&self, request: &JoinRequest, options: &GroupOptions) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < options.session_timeout_min_ms
            || request.session_timeout_ms > options.session_timeout_max_ms
        {
            return Some(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Some(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(request.protocol_type.as_str());
            let candidates = self.candidate_protocols();
            let shares = request
                .protocols
                .iter()
                .any(|(name, _)| candidates.contains(name));
            if !same_type || !shares {
                return Some(ResponseError::InconsistentGroupProtocol);
            }
        }
        let known = self.members.contains_key(&request.member_id)
            || request
                .group_instance_id
                .as_ref()
                .is_some_and(|instance| self.static_members.contains_key(instance));
        if !known && self.members.len() + self.pending_members.len() >= options.group_size_max {
            return Some(ResponseError::GroupMaxSizeReached);
        }
        None
    }

    fn join_unknown_member(&mut self, request: JoinRequest, now_ms: i64) -> Reply<JoinOutcome> {
        let member_id = new_member_id(&request.client_id);
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_member_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(&old_member_id, &member_id, request, now_ms);
            }
            return self.add_member_and_rebalance(member_id, request, now_ms);
        }
        if request.require_known_member_id {
            // KIP-394: the member learns its id first and joins again with it; until then
            // it counts as pending, for a session timeout.
            self.pending_members.insert(
                member_id.clone(),
                now_ms + i64::from(request.session_timeout_ms),
            );
            return Reply::Now(JoinOutcome::failed(
                ResponseError::MemberIdRequired,
                &member_id,
            ));
        }
        self.add_member_and_rebalance(member_id, request, now_ms)
    }

    fn join_known_member(&mut self, request: JoinRequest, now_ms: i64) -> Reply<JoinOutcome> {
        let member_id = request.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            return self.add_member_and_rebalance(member_id, request, now_ms);
        }
        if let Some(error) = self.check_member(&member_id, request.group_instance_id.as_deref()) {
            return Reply::Now(JoinOutcome::failed(error, &member_id));
        }
        let member = self.members.get_mut(&member_id).expect("checked above");
        let unchanged = member.protocols == request.protocols;
        member.client_id = request.client_id.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.protocols = request.protocols.clone();
        member.last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => self.await_join(&member_id, now_ms),
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && self.leader_id.as_deref() != Some(member_id.as_str()) =>
            {
                // A follower that missed its join response: it gets the current generation.
                Reply::Now(self.join_outcome(&member_id, false))
            }
            _ => {
                self.prepare_rebalance(now_ms);
                self.await_join(&member_id, now_ms)
            }
        }
    }

    /// A static member rejoining with a new member id (a restart): the old id is fenced.
    /// In a stable group with unchanged protocols the member gets the current generation
    /// and its assignment back without a rebalance of the others.
    fn replace_static_member(
        &mut self,
        old_member_id: &str,
        member_id: &str,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinOutcome> {
        let mut member = self
            .members
            .remove(old_member_id)
            .expect("static map is in sync");
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinOutcome::failed(
                ResponseError::FencedInstanceId,
                old_member_id,
            ));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncOutcome::failed(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == request.protocols;
        member.member_id = member_id.to_owned();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.protocols = request.protocols.clone();
        member.last_heartbeat_ms = now_ms;
        let instance = request.group_instance_id.clone().expect("static member");
        self.static_members.insert(instance, member_id.to_owned());
        self.members.insert(member_id.to_owned(), member);
        let was_leader = self.leader_id.as_deref() == Some(old_member_id);
        if was_leader {
            self.leader_id = Some(member_id.to_owned());
        }
        match self.state {
            GroupState::Stable if unchanged && !was_leader => {
                // The new member id must survive a coordinator failover.
                self.persist.push(Persist::Group {
                    generation_id: self.generation_id,
                });
                Reply::Now(self.join_outcome(member_id, false))
            }
            GroupState::Stable if unchanged && request.supports_skip_assignment => {
                self.persist.push(Persist::Group {
                    generation_id: self.generation_id,
                });
                Reply::Now(self.join_outcome(member_id, true))
            }
            GroupState::PreparingRebalance => self.await_join(member_id, now_ms),
            _ => {
                self.prepare_rebalance(now_ms);
                self.await_join(member_id, now_ms)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinOutcome> {
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocol_type: request.protocol_type,
                protocols: request.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                join_waiter: None,
                sync_waiter: None,
            },
        );
        if let Some(delay) = self.initial_delay.as_mut() {
            delay.member_joined = true;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms);
        }
        self.await_join(&member_id, now_ms)
    }

    fn await_join(&mut self, member_id: &str, now_ms: i64) -> Reply<JoinOutcome> {
        let (sender, receiver) = oneshot::channel();
        let member = self.members.get_mut(member_id).expect("member exists");
        if let Some(previous) = member.join_waiter.replace(sender) {
            // A member's second JoinGroup in one rebalance replaces its first.
            let _ = previous.send(JoinOutcome::failed(
                ResponseError::RebalanceInProgress,
                member_id,
            ));
        }
        self.maybe_complete_join(now_ms);
        Reply::Later(receiver)
    }

    /// Starts a rebalance: members must rejoin within the rebalance timeout. The first
    /// rebalance of an empty group waits `group.initial.rebalance.delay.ms` for more members.
    fn prepare_rebalance(&mut self, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncOutcome::failed(ResponseError::RebalanceInProgress));
                }
            }
        }
        let rebalance_timeout_ms = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.initial_delay = None;
        if self.state == GroupState::Empty && self.initial_delay_ms() > 0 {
            let delay_ms = self.initial_delay_ms().min(rebalance_timeout_ms);
            self.initial_delay = Some(InitialDelay {
                deadline_ms: now_ms + delay_ms,
                remaining_ms: (rebalance_timeout_ms - delay_ms).max(0),
                member_joined: false,
            });
        }
        self.rebalance_deadline_ms = Some(now_ms + rebalance_timeout_ms);
        self.rebalance_started_ms.get_or_insert(now_ms);
        self.transition(GroupState::PreparingRebalance, now_ms);
    }

    fn initial_delay_ms(&self) -> i64 {
        self.initial_rebalance_delay_ms
    }

    /// Completes the join phase once every member has rejoined and no KIP-394 member is
    /// still pending — or the rebalance timeout has passed, dropping dynamic members that
    /// did not rejoin (static ones stay until their session times out).
    fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(delay) = self.initial_delay {
            if now_ms < delay.deadline_ms {
                return;
            }
            self.initial_delay = None;
            if delay.member_joined && delay.remaining_ms > 0 {
                let next_ms = self.initial_delay_ms().min(delay.remaining_ms);
                self.initial_delay = Some(InitialDelay {
                    deadline_ms: now_ms + next_ms,
                    remaining_ms: delay.remaining_ms - next_ms,
                    member_joined: false,
                });
                return;
            }
        }
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some());
        let timed_out = self.rebalance_deadline_ms.is_some_and(|d| now_ms >= d);
        if !all_joined && !timed_out {
            return;
        }
        let stragglers: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in stragglers {
            self.remove_member_only(&member_id);
        }
        self.pending_members.clear();
        self.rebalance_deadline_ms = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.transition(GroupState::Empty, now_ms);
            self.persist.push(Persist::Group {
                generation_id: self.generation_id,
            });
            self.rebalance_started_ms = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        let leader_still_member = self.leader_id.as_ref().is_some_and(|leader| {
            self.members
                .get(leader)
                .is_some_and(|m| m.join_waiter.is_some())
        });
        if !leader_still_member {
            self.leader_id = self
                .members
                .values()
                .find(|m| m.join_waiter.is_some())
                .or_else(|| self.members.values().next())
                .map(|m| m.member_id.clone());
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        let waiting: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_some())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in waiting {
            let outcome = self.join_outcome(&member_id, false);
            let member = self.members.get_mut(&member_id).expect("listed above");
            member.last_heartbeat_ms = now_ms;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(outcome);
            }
        }
    }

    /// The JoinGroup answer for `member_id` at the current generation; the leader's lists
    /// every member's metadata.
    fn join_outcome(&self, member_id: &str, skip_assignment: bool) -> JoinOutcome {
        let leader = self.leader_id.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: leader,
            member_id: member_id.to_owned(),
            skip_assignment,
            members,
        }
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for member in members {
            candidates.retain(|name| member.protocols.iter().any(|(n, _)| n == name));
        }
        candidates
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n))
            {
                if let Some(entry) = votes.iter_mut().find(|(candidate, _)| candidate == name) {
                    entry.1 += 1;
                }
            }
        }
        let most = votes.iter().map(|(_, count)| *count).max()?;
        votes
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(name, _)| name)
    }

    /// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID for a member that is not (or no longer)
    /// the holder of its id.
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Option<ResponseError> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                Some(holder) if holder != member_id => {
                    return Some(ResponseError::FencedInstanceId)
                }
                Some(_) => return None,
                None => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        None
    }

    // --- SyncGroup, Heartbeat, LeaveGroup ---------------------------------------------

    /// SyncGroup: the leader's assignments complete the rebalance once the coordinator has
    /// replicated the group's record ([`Group::complete_sync`]); followers wait for that.
    pub fn sync(&mut self, request: SyncRequest) -> Reply<SyncOutcome> {
        let member_id = request.member_id.as_str();
        let instance = request.group_instance_id.as_deref();
        let generation_id = request.generation_id;
        let assignments = request.assignments;
        if self.state == GroupState::Dead {
            return Reply::Now(SyncOutcome::failed(ResponseError::CoordinatorNotAvailable));
        }
        if let Some(error) = self.check_member(member_id, instance) {
            return Reply::Now(SyncOutcome::failed(error));
        }
        if generation_id != self.generation_id {
            return Reply::Now(SyncOutcome::failed(ResponseError::IllegalGeneration));
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol_name.as_ref())
        {
            return Reply::Now(SyncOutcome::failed(
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        match self.state {
            GroupState::Empty => Reply::Now(SyncOutcome::failed(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Reply::Now(SyncOutcome::failed(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => Reply::Now(self.sync_outcome(member_id)),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                self.members
                    .get_mut(member_id)
                    .expect("checked")
                    .sync_waiter = Some(sender);
                if self.leader_id.as_deref() == Some(member_id) {
                    for member in self.members.values_mut() {
                        member.assignment = Bytes::new();
                    }
                    for (target, assignment) in assignments {
                        if let Some(member) = self.members.get_mut(&target) {
                            member.assignment = assignment;
                        }
                    }
                    self.persist.push(Persist::Group {
                        generation_id: self.generation_id,
                    });
                }
                Reply::Later(receiver)
            }
            GroupState::Dead => unreachable!("checked above"),
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// The coordinator's report on writing the group record of `generation_id`: on success
    /// a completing rebalance becomes Stable and every waiting member gets its assignment;
    /// on failure the members are told `error` and must rejoin.
    pub fn complete_sync(&mut self, generation_id: i32, error: Option<ResponseError>, now_ms: i64) {
        if generation_id != self.generation_id || self.state != GroupState::CompletingRebalance {
            return;
        }
        match error {
            None => {
                self.transition(GroupState::Stable, now_ms);
                if let Some(started) = self.rebalance_started_ms.take() {
                    self.rebalances_completed.push((started, now_ms));
                }
                let waiting: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_some())
                    .map(|m| m.member_id.clone())
                    .collect();
                for member_id in waiting {
                    let outcome = self.sync_outcome(&member_id);
                    if let Some(waiter) = self
                        .members
                        .get_mut(&member_id)
                        .and_then(|m| m.sync_waiter.take())
                    {
                        let _ = waiter.send(outcome);
                    }
                }
            }
            Some(error) => {
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncOutcome::failed(error));
                    }
                }
                self.prepare_rebalance(now_ms);
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        match self.state {
            GroupState::Dead => return Some(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Some(ResponseError::UnknownMemberId),
            _ => {}
        }
        if let Some(error) = self.check_member(member_id, instance) {
            return Some(error);
        }
        if generation_id != self.generation_id {
            return Some(ResponseError::IllegalGeneration);
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        (self.state == GroupState::PreparingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// LeaveGroup for one member (by member id, or by group.instance.id for static ones).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        let target = match instance {
            Some(instance) => match self.static_members.get(instance) {
                None => return Some(ResponseError::UnknownMemberId),
                Some(holder) if !member_id.is_empty() && holder != member_id => {
                    return Some(ResponseError::FencedInstanceId)
                }
                Some(holder) => holder.clone(),
            },
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    self.maybe_complete_join(now_ms);
                    return None;
                }
                if !self.members.contains_key(member_id) {
                    return Some(ResponseError::UnknownMemberId);
                }
                member_id.to_owned()
            }
        };
        self.remove_member(&target, now_ms);
        None
    }

    /// Removes a member and moves the group on: a rebalance, or Empty when none is left.
    fn remove_member(&mut self, member_id: &str, now_ms: i64) {
        self.remove_member_only(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation_id += 1;
                    self.protocol_name = None;
                    self.leader_id = None;
                    self.transition(GroupState::Empty, now_ms);
                    self.persist.push(Persist::Group {
                        generation_id: self.generation_id,
                    });
                } else {
                    self.prepare_rebalance(now_ms);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn remove_member_only(&mut self, member_id: &str) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(instance) = &member.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinOutcome::failed(
                    ResponseError::UnknownMemberId,
                    member_id,
                ));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncOutcome::failed(ResponseError::UnknownMemberId));
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
    }

    /// Timers: members whose session ran out leave, KIP-394 pending ids expire, the
    /// join phase completes at its deadline.
    pub fn tick(&mut self, now_ms: i64) {
        self.pending_members.retain(|_, expiry| *expiry > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting())
            .filter(|m| m.last_heartbeat_ms + i64::from(m.session_timeout_ms) <= now_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            tracing::info!(group = %self.group_id, member = %member_id, "member session expired");
            self.remove_member(&member_id, now_ms);
        }
        self.maybe_complete_join(now_ms);
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

#[cfg(test)]
mod tests {
    //! The state machine on a clock the test moves: no sleeps, no broker.
    use super::*;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;

    fn options() -> GroupOptions {
        GroupOptions::default()
    }

    fn request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: REBALANCE_MS,
            session_timeout_ms: SESSION_MS,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn now(reply: Reply<JoinOutcome>) -> JoinOutcome {
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(receiver) => receiver,
            Reply::Now(_) => panic!("expected to wait"),
        }
    }

    /// KIP-394: an unknown member first learns its id, then joins with it.
    fn join_new(
        group: &mut Group,
        instance: Option<&str>,
        at: i64,
    ) -> (String, oneshot::Receiver<JoinOutcome>) {
        let member_id = if instance.is_some() {
            String::new()
        } else {
            let first = now(group.join(request("", None, &["range"]), &options(), at));
            assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
            first.member_id
        };
        let receiver = later(group.join(request(&member_id, instance, &["range"]), &options(), at));
        (member_id, receiver)
    }

    fn sync(member_id: &str, generation_id: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            generation_id,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        }
    }

    /// When [`stable_group`]'s group is Stable: the initial delay (3 s) was extended once
    /// because members joined during it.
    const STABLE_AT_MS: i64 = 6_000;

    /// Runs a group of `count` dynamic members to Stable; returns their ids (leader first).
    fn stable_group(count: usize) -> (Group, Vec<String>) {
        let mut group = Group::new("g", 3_000, 0);
        let mut receivers = Vec::new();
        for _ in 0..count {
            receivers.push(join_new(&mut group, None, 0));
        }
        group.tick(3_000);
        group.tick(STABLE_AT_MS);
        let outcomes: Vec<JoinOutcome> = receivers
            .into_iter()
            .map(|(_, mut r)| r.try_recv().expect("join completed once all joined"))
            .collect();
        let leader = outcomes[0].leader_id.clone();
        let generation = outcomes[0].generation_id;
        let leader_outcome = outcomes.iter().find(|o| o.member_id == leader).unwrap();
        assert_eq!(
            leader_outcome.members.len(),
            count,
            "the leader sees every member"
        );
        let assignments = outcomes
            .iter()
            .map(|o| {
                (
                    o.member_id.clone(),
                    Bytes::from(format!("for-{}", o.member_id)),
                )
            })
            .collect();
        let mut waiting = later(group.sync(sync(&leader, generation, assignments)));
        assert_eq!(
            group.take_persist(),
            vec![Persist::Group {
                generation_id: generation
            }]
        );
        assert!(
            waiting.try_recv().is_err(),
            "stable only once the record is replicated"
        );
        group.complete_sync(generation, None, STABLE_AT_MS);
        assert_eq!(group.state, GroupState::Stable);
        let answer = waiting.try_recv().unwrap();
        assert_eq!(answer.assignment, Bytes::from(format!("for-{leader}")));
        let mut ids: Vec<String> = outcomes.iter().map(|o| o.member_id.clone()).collect();
        ids.sort_by_key(|id| id != &leader);
        (group, ids)
    }

    #[test]
    fn members_join_sync_and_each_gets_its_assignment() {
        let (mut group, ids) = stable_group(3);
        assert_eq!(group.generation_id, 1);
        for id in &ids[1..] {
            match group.sync(sync(id, 1, Vec::new())) {
                Reply::Now(outcome) => {
                    assert_eq!(outcome.assignment, Bytes::from(format!("for-{id}")))
                }
                Reply::Later(_) => panic!("a stable group answers at once"),
            }
        }
    }

    #[test]
    fn an_expired_member_triggers_a_rebalance_of_the_rest() {
        let (mut group, ids) = stable_group(3);
        // Two members heartbeat, the third goes silent.
        let expiry = STABLE_AT_MS + i64::from(SESSION_MS);
        for id in &ids[..2] {
            assert_eq!(group.heartbeat(id, None, 1, expiry - 1_000), None);
        }
        group.tick(expiry - 1);
        assert_eq!(group.state, GroupState::Stable);
        group.tick(expiry);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert!(!group.members.contains_key(&ids[2]));
        assert_eq!(
            group.heartbeat(&ids[0], None, 1, expiry + 100),
            Some(ResponseError::RebalanceInProgress)
        );
        let mut first =
            later(group.join(request(&ids[0], None, &["range"]), &options(), expiry + 200));
        let mut second =
            later(group.join(request(&ids[1], None, &["range"]), &options(), expiry + 300));
        let first = first.try_recv().unwrap();
        assert_eq!(first.generation_id, 2);
        assert_eq!(second.try_recv().unwrap().generation_id, 2);
        assert_eq!(group.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let (mut group, ids) = stable_group(2);
        let started = STABLE_AT_MS + 5;
        let protocols = &["range", "roundrobin"];
        let mut joined = later(group.join(request(&ids[0], None, protocols), &options(), started));
        assert_eq!(group.state, GroupState::PreparingRebalance);
        // The other member keeps heartbeating (it is alive) but never rejoins.
        let deadline = started + i64::from(REBALANCE_MS);
        let mut at = started;
        while at + 5_000 < deadline {
            at += 5_000;
            let answer = group.heartbeat(&ids[1], None, 1, at);
            assert_eq!(answer, Some(ResponseError::RebalanceInProgress));
            group.tick(at);
        }
        group.tick(deadline - 1);
        assert!(joined.try_recv().is_err());
        group.tick(deadline);
        let outcome = joined.try_recv().unwrap();
        assert_eq!(outcome.members.len(), 1, "the straggler was removed");
        assert_eq!(outcome.leader_id, ids[0]);
    }

    #[test]
    fn generations_and_members_are_fenced_with_kafkas_errors() {
        let (mut group, ids) = stable_group(2);
        assert_eq!(
            group.heartbeat("nobody", None, 1, 2),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            group.heartbeat(&ids[0], None, 0, 2),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            group.check_commit("nobody", None, 1),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            group.check_commit(&ids[1], None, 7),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(group.check_commit(&ids[1], None, 1), None);
        // Generation -1 commits only into an empty group.
        assert_eq!(
            group.check_commit("", None, -1),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(Group::new("simple", 0, 0).check_commit("", None, -1), None);
        match group.sync(sync(&ids[0], 5, Vec::new())) {
            Reply::Now(outcome) => {
                assert_eq!(outcome.error, Some(ResponseError::IllegalGeneration))
            }
            Reply::Later(_) => panic!("refused at once"),
        }
    }

    #[test]
    fn session_timeouts_outside_the_broker_bounds_are_refused() {
        let mut group = Group::new("g", 0, 0);
        let mut short = request("", None, &["range"]);
        short.session_timeout_ms = 1_000;
        assert_eq!(
            now(group.join(short, &options(), 0)).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
        let mut no_protocols = request("", None, &[]);
        no_protocols.protocols.clear();
        assert_eq!(
            now(group.join(no_protocols, &options(), 0)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn the_protocol_all_members_support_with_most_votes_wins() {
        let mut group = Group::new("g", 0, 0);
        let mut a = later(group.join(
            JoinRequest {
                require_known_member_id: false,
                ..request("", None, &["cooperative-sticky", "range"])
            },
            &options(),
            0,
        ));
        let outcome = a.try_recv().unwrap();
        assert_eq!(outcome.protocol_name.as_deref(), Some("cooperative-sticky"));
        // A member supporting only "range" forces range for everyone.
        let mut b = later(group.join(
            JoinRequest {
                require_known_member_id: false,
                ..request("", None, &["range"])
            },
            &options(),
            1,
        ));
        let mut a = later(group.join(
            request(&outcome.member_id, None, &["cooperative-sticky", "range"]),
            &options(),
            2,
        ));
        assert_eq!(
            a.try_recv().unwrap().protocol_name.as_deref(),
            Some("range")
        );
        assert_eq!(
            b.try_recv().unwrap().protocol_name.as_deref(),
            Some("range")
        );
        // A member sharing no protocol is refused.
        assert_eq!(
            now(group.join(request("", None, &["sticky"]), &options(), 3)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn a_static_member_restarting_gets_its_assignment_back_without_a_rebalance() {
        let mut group = Group::new("g", 0, 0);
        let (_, mut a) = join_new(&mut group, Some("instance-a"), 0);
        let a = a.try_recv().unwrap();
        let mut b = later(group.join(request("", Some("instance-b"), &["range"]), &options(), 1));
        let mut a_again = later(group.join(
            request(&a.member_id, Some("instance-a"), &["range"]),
            &options(),
            1,
        ));
        let b = b.try_recv().unwrap();
        let a = a_again.try_recv().unwrap();
        let generation = a.generation_id;
        let leader = a.leader_id.clone();
        assert_eq!(leader, a.member_id);
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"A")),
            (b.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let _leader_sync = later(group.sync(sync(&leader, generation, assignments)));
        group.take_persist();
        group.complete_sync(generation, None, 2);
        // instance-b restarts: an unknown member id with its instance id.
        let restarted = now(group.join(request("", Some("instance-b"), &["range"]), &options(), 3));
        assert_eq!(restarted.error, None);
        assert_eq!(restarted.generation_id, generation, "no new generation");
        assert_ne!(restarted.member_id, b.member_id);
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(
            group.take_persist(),
            vec![Persist::Group {
                generation_id: generation
            }]
        );
        let mut request_b = sync(&restarted.member_id, generation, Vec::new());
        request_b.group_instance_id = Some("instance-b".into());
        match group.sync(request_b) {
            Reply::Now(outcome) => assert_eq!(outcome.assignment, Bytes::from_static(b"B")),
            Reply::Later(_) => panic!("stable"),
        }
        // The old incarnation is fenced.
        assert_eq!(
            group.heartbeat(&b.member_id, Some("instance-b"), generation, 4),
            Some(ResponseError::FencedInstanceId)
        );
    }

    #[test]
    fn the_initial_delay_waits_for_more_members_and_extends_per_joiner() {
        let mut group = Group::new("g", 3_000, 0);
        let mut a = later(group.join(
            JoinRequest {
                require_known_member_id: false,
                ..request("", None, &["range"])
            },
            &options(),
            0,
        ));
        group.tick(2_000);
        let mut b = later(group.join(
            JoinRequest {
                require_known_member_id: false,
                ..request("", None, &["range"])
            },
            &options(),
            2_000,
        ));
        group.tick(3_000);
        assert!(
            a.try_recv().is_err(),
            "a member joined during the delay: it is extended"
        );
        group.tick(6_000);
        assert_eq!(a.try_recv().unwrap().generation_id, 1);
        assert_eq!(b.try_recv().unwrap().generation_id, 1);
    }

    #[test]
    fn the_last_member_leaving_empties_the_group_and_records_it() {
        let (mut group, ids) = stable_group(2);
        assert_eq!(group.leave(&ids[1], None, 5), None);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(
            group.leave("nobody", None, 5),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(group.leave(&ids[0], None, 6), None);
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(
            group.take_persist(),
            vec![Persist::Group { generation_id: 2 }]
        );
        assert!(group.members.is_empty());
    }

    #[test]
    fn offsets_of_an_empty_group_expire_after_retention() {
        let mut group = Group::new("g", 0, 0);
        group.offsets.insert(
            ("t".into(), 0),
            OffsetValue {
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 100,
            },
        );
        assert!(group.expired_offsets(1_000, 1_099).is_empty());
        assert_eq!(
            group.expired_offsets(1_000, 1_100),
            vec![("t".to_owned(), 0)]
        );
    }
}
