//! JoinGroup and the rebalance it starts: KIP-394 member ids, static members replacing
//! their old incarnation, the initial delay, join completion and protocol selection.

use bytes::Bytes;
use proto_kafka::ResponseError;
use tokio::sync::oneshot;

use super::*;

impl Group {
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

    pub(super) fn check_join(
        &self,
        request: &JoinRequest,
        options: &GroupOptions,
    ) -> Option<ResponseError> {
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

    pub(super) fn join_unknown_member(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinOutcome> {
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

    pub(super) fn join_known_member(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
    ) -> Reply<JoinOutcome> {
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
    pub(super) fn replace_static_member(
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

    pub(super) fn add_member_and_rebalance(
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

    pub(super) fn await_join(&mut self, member_id: &str, now_ms: i64) -> Reply<JoinOutcome> {
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
    pub(super) fn prepare_rebalance(&mut self, now_ms: i64) {
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

    pub(super) fn initial_delay_ms(&self) -> i64 {
        self.initial_rebalance_delay_ms
    }

    /// Completes the join phase once every member has rejoined and no KIP-394 member is
    /// still pending — or the rebalance timeout has passed, dropping dynamic members that
    /// did not rejoin (static ones stay until their session times out).
    pub(super) fn maybe_complete_join(&mut self, now_ms: i64) {
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
    pub(super) fn join_outcome(&self, member_id: &str, skip_assignment: bool) -> JoinOutcome {
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
    pub(super) fn candidate_protocols(&self) -> Vec<String> {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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
    pub(super) fn check_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Option<ResponseError> {
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
}
