//! SyncGroup, Heartbeat and LeaveGroup, member removal and the session timers.

use bytes::Bytes;
use proto_kafka::ResponseError;
use tokio::sync::oneshot;

use super::*;

impl Group {
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

    pub(super) fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
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
    pub(super) fn remove_member(&mut self, member_id: &str, now_ms: i64) {
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

    pub(super) fn remove_member_only(&mut self, member_id: &str) {
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
}
