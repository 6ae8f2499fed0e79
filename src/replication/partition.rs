//! A hosted replica of one partition: long-lived and mutable, leader or follower.
//!
//! The log (storage) knows its end offsets; the [`Partition`] decides what readers see. As
//! leader it tracks every follower's fetch offset, keeps the high watermark at the smallest
//! log end offset over the ISR, and notices which followers lag; as follower it takes the
//! high watermark the leader reports (never past its own durable end). The ISR itself is
//! the controller's: it changes here only when a metadata image (or the controller's answer
//! to an AlterPartition) says so.
//!
//! Every change a waiter could care about — records published, high watermark moved, role,
//! epoch or ISR changed — bumps a version on a `watch` channel, so long-polling fetches and
//! acks=all produces wait on one thing and can never miss a wake-up. The Partition outlives
//! epoch and config changes (they update it in place), so no waiter is left on a dropped
//! notifier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use uuid::Uuid;

use karst_storage::{LeaderEpoch, Log, Offset, TopicPartition};

/// Who this replica follows, or that it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// `leader` is -1 while the partition has no leader.
    Follower {
        leader: i32,
    },
}

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowerState {
    /// The follower's durable log end, from its latest fetch (-1: not fetched since this
    /// replica became leader).
    pub log_end_offset: i64,
    /// The last time the follower had fetched everything the leader had (Kafka's
    /// lastCaughtUpTimeMs): a fetch at the leader's end, or at the end the leader had at the
    /// follower's previous fetch.
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end at the follower's previous fetch.
    pub leader_end_at_last_fetch: i64,
}

/// The controller's view of the partition as last applied here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added (they fetch like any follower and
    /// join the ISR when caught up) and replicas dropped when it completes.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl Assignment {
    /// Replicas the partition should have in sync: the target of a reassignment in progress
    /// (Kafka counts under-replication against it), else all.
    pub fn replication_factor(&self) -> usize {
        self.replicas.len() - self.removing_replicas.len()
    }
}

/// A consistent snapshot of a partition's replication state, for handlers and operators.
#[derive(Clone, Debug)]
pub struct PartitionView {
    pub role: Role,
    pub assignment: Assignment,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub min_insync_replicas: i32,
    /// (broker id, its log end offset as last fetched) for each follower, leader only.
    pub followers: Vec<(i32, i64)>,
    /// An AlterPartition sent and not yet answered.
    pub pending_isr: Option<Vec<i32>>,
}

pub(super) struct ReplicaState {
    pub role: Role,
    pub assignment: Assignment,
    pub high_watermark: Offset,
    pub min_insync_replicas: i32,
    pub followers: HashMap<i32, FollowerState>,
    pub pending_isr: Option<Vec<i32>>,
    /// A follower must find where its log diverges from the new leader's (OffsetForLeaderEpoch)
    /// before it fetches: set on every leader or epoch change.
    pub needs_truncation: bool,
}

pub struct Partition {
    pub topic_partition: TopicPartition,
    pub topic_id: Uuid,
    pub log: Arc<Log>,
    node_id: i32,
    state: Mutex<ReplicaState>,
    changes: watch::Sender<u64>,
    /// Held by the follower fetcher while it appends or truncates this replica, so a fetcher
    /// of an old leader and one of a new leader never touch the log at once.
    pub(super) follower_io: tokio::sync::Mutex<()>,
}

/// Why an acks=all produce or a fetch cannot be served by this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotLeader {
    /// Another broker leads (or nobody does: -1).
    LedBy(i32),
}

/// Everything a new replica starts from.
pub(super) struct NewPartition {
    pub topic_partition: TopicPartition,
    pub topic_id: Uuid,
    pub log: Arc<Log>,
    /// This node.
    pub node_id: i32,
    pub assignment: Assignment,
    pub min_insync_replicas: i32,
    /// From the high watermark checkpoint (capped by the log's durable end).
    pub high_watermark: Offset,
    /// The replica manager's clock: a new leader counts its followers caught up now.
    pub now_ms: i64,
}

impl Partition {
    pub(super) fn new(setup: NewPartition) -> Partition {
        let NewPartition {
            topic_partition,
            topic_id,
            log,
            node_id,
            assignment,
            min_insync_replicas,
            high_watermark,
            now_ms,
        } = setup;
        let role = role_of(&assignment, node_id);
        let end = log.offsets().durable_end_offset;
        let partition = Partition {
            topic_partition,
            topic_id,
            log,
            node_id,
            state: Mutex::new(ReplicaState {
                role,
                assignment,
                high_watermark: high_watermark.min(end),
                min_insync_replicas,
                followers: HashMap::new(),
                pending_isr: None,
                needs_truncation: role != Role::Leader,
            }),
            changes: watch::channel(0).0,
            follower_io: tokio::sync::Mutex::new(()),
        };
        if role == Role::Leader {
            let mut state = partition.lock();
            partition.become_leader(&mut state, now_ms);
            // Alone in the ISR, a leader's durable end is its high watermark at once.
            partition.advance_high_watermark(&mut state);
        }
        partition
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ReplicaState> {
        self.state.lock().expect("partition state lock poisoned")
    }

    /// A receiver that wakes on the next change (records, high watermark, role, ISR).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    pub fn view(&self) -> PartitionView {
        let state = self.lock();
        let offsets = self.log.offsets();
        let mut followers: Vec<(i32, i64)> = state
            .followers
            .iter()
            .map(|(id, follower)| (*id, follower.log_end_offset))
            .collect();
        followers.sort();
        PartitionView {
            role: state.role,
            assignment: state.assignment.clone(),
            high_watermark: state.high_watermark,
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.durable_end_offset,
            min_insync_replicas: state.min_insync_replicas,
            followers,
            pending_isr: state.pending_isr.clone(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.lock().role == Role::Leader
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.lock().assignment.leader_epoch)
    }

    pub fn high_watermark(&self) -> Offset {
        self.lock().high_watermark
    }

    /// This replica as leader, or who leads instead.
    pub fn check_leader(&self) -> Result<(), NotLeader> {
        let state = self.lock();
        match state.role {
            Role::Leader => Ok(()),
            Role::Follower { leader } => Err(NotLeader::LedBy(leader)),
        }
    }

    /// ISR size and min.insync.replicas, for the acks=all checks.
    pub fn insync_counts(&self) -> (usize, i32) {
        let state = self.lock();
        (state.assignment.isr.len(), state.min_insync_replicas)
    }

    /// Applies the controller's view (a metadata image or an AlterPartition answer) in
    /// place. Returns true when this replica must (re)start following: a new leader or a new
    /// epoch.
    pub(super) fn apply_assignment(
        &self,
        assignment: Assignment,
        min_insync_replicas: i32,
        now_ms: i64,
    ) -> bool {
        let mut state = self.lock();
        if assignment == state.assignment && min_insync_replicas == state.min_insync_replicas {
            return false;
        }
        // Images arrive in order, but an AlterPartition answer may come before the image
        // that carries it: never step back.
        if (assignment.leader_epoch, assignment.partition_epoch)
            < (
                state.assignment.leader_epoch,
                state.assignment.partition_epoch,
            )
        {
            return false;
        }
        let new_epoch = assignment.leader_epoch != state.assignment.leader_epoch;
        let role = role_of(&assignment, self.node_id);
        let was = state.role;
        state.min_insync_replicas = min_insync_replicas;
        if state
            .pending_isr
            .as_ref()
            .is_some_and(|_| assignment.partition_epoch != state.assignment.partition_epoch)
        {
            // The controller decided (on our request or otherwise): the request is answered.
            state.pending_isr = None;
        }
        state.assignment = assignment;
        state.role = role;
        let restart_following = match role {
            Role::Leader => {
                if was != Role::Leader || new_epoch {
                    self.become_leader(&mut state, now_ms);
                } else {
                    self.track_replica_set(&mut state, now_ms);
                }
                false
            }
            Role::Follower { .. } => {
                if was != role || new_epoch {
                    state.followers.clear();
                    state.pending_isr = None;
                    state.needs_truncation = true;
                    true
                } else {
                    false
                }
            }
        };
        if role == Role::Leader {
            self.advance_high_watermark(&mut state);
        }
        drop(state);
        self.notify();
        restart_following
    }

    /// Fresh follower states for a new leadership: nothing fetched yet, every ISR member
    /// counted as caught up now (it was in sync when the controller made us leader).
    fn become_leader(&self, state: &mut ReplicaState, now_ms: i64) {
        state.followers = state
            .assignment
            .replicas
            .iter()
            .filter(|id| **id != self.node_id)
            .map(|id| {
                (
                    *id,
                    FollowerState {
                        log_end_offset: -1,
                        last_caught_up_ms: now_ms,
                        last_fetch_ms: now_ms,
                        leader_end_at_last_fetch: -1,
                    },
                )
            })
            .collect();
        state.pending_isr = None;
        state.needs_truncation = false;
        tracing::info!(
            partition = %self.topic_partition,
            leader_epoch = state.assignment.leader_epoch,
            isr = ?state.assignment.isr,
            high_watermark = state.high_watermark.0,
            "became leader"
        );
    }

    /// The replica set changed under the same leader epoch (a reassignment started): track
    /// the added followers from scratch, forget the ones gone. An added follower is not in
    /// the ISR, so it holds back neither the high watermark nor a shrink.
    fn track_replica_set(&self, state: &mut ReplicaState, now_ms: i64) {
        let replicas = &state.assignment.replicas;
        state.followers.retain(|id, _| replicas.contains(id));
        for id in replicas.iter().filter(|id| **id != self.node_id) {
            state.followers.entry(*id).or_insert(FollowerState {
                log_end_offset: -1,
                last_caught_up_ms: now_ms,
                last_fetch_ms: now_ms,
                leader_end_at_last_fetch: -1,
            });
        }
    }

    /// The leader's records became durable locally: the high watermark may move.
    pub fn on_local_append(&self) {
        let mut state = self.lock();
        if state.role == Role::Leader {
            self.advance_high_watermark(&mut state);
        }
        drop(state);
        self.notify();
    }

    /// A follower fetched from `fetch_offset` (everything below it is durable on the
    /// follower). Updates its state and the high watermark; returns the ISR this leader
    /// should ask the controller for when the follower has caught up but is not in it.
    pub fn record_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<Vec<i32>> {
        let leader_end = self.log.offsets().durable_end_offset.0;
        let mut state = self.lock();
        if state.role != Role::Leader {
            return None;
        }
        let entry = state.followers.get_mut(&follower)?;
        if fetch_offset >= leader_end {
            entry.last_caught_up_ms = now_ms;
        } else if fetch_offset >= entry.leader_end_at_last_fetch
            && entry.leader_end_at_last_fetch >= 0
        {
            entry.last_caught_up_ms = entry.last_caught_up_ms.max(entry.last_fetch_ms);
        }
        entry.leader_end_at_last_fetch = leader_end;
        entry.last_fetch_ms = now_ms;
        entry.log_end_offset = fetch_offset;
        let moved = self.advance_high_watermark(&mut state);
        let expansion = self.expansion_for(&state, follower, fetch_offset);
        if let Some(isr) = &expansion {
            state.pending_isr = Some(isr.clone());
        }
        drop(state);
        if moved {
            self.notify();
        }
        expansion
    }

    /// Kafka's rule for joining the ISR: the follower has reached the high watermark and
    /// holds everything of the current leader epoch (its fetch offset is at or past the
    /// epoch's first offset), and no other ISR change is in flight.
    fn expansion_for(
        &self,
        state: &ReplicaState,
        follower: i32,
        fetch_offset: i64,
    ) -> Option<Vec<i32>> {
        if state.pending_isr.is_some() || state.assignment.isr.contains(&follower) {
            return None;
        }
        let epoch_start = self
            .log
            .end_for_epoch(LeaderEpoch(state.assignment.leader_epoch - 1))
            .end_offset
            .0
            .max(0);
        if fetch_offset < state.high_watermark.0 || fetch_offset < epoch_start {
            return None;
        }
        let mut isr = state.assignment.isr.clone();
        isr.push(follower);
        isr.sort_unstable();
        Some(isr)
    }

    /// The ISR without the followers that have not caught up for `lag_max_ms`, if that
    /// differs from the current one and no other change is in flight. Marks it pending.
    pub fn shrink_candidate(&self, now_ms: i64, lag_max_ms: u64) -> Option<Vec<i32>> {
        let mut state = self.lock();
        if state.role != Role::Leader || state.pending_isr.is_some() {
            return None;
        }
        let lagging = |id: &i32| {
            *id != self.node_id
                && state
                    .followers
                    .get(id)
                    .is_none_or(|f| now_ms - f.last_caught_up_ms > lag_max_ms as i64)
        };
        if !state.assignment.isr.iter().any(lagging) {
            return None;
        }
        let isr: Vec<i32> = state
            .assignment
            .isr
            .iter()
            .copied()
            .filter(|id| !lagging(id))
            .collect();
        state.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// The controller answered an AlterPartition: take its ISR now (the image carrying it
    /// follows) unless this replica has moved on to a newer epoch meanwhile.
    pub fn apply_isr_answer(&self, leader_epoch: i32, partition_epoch: i32, isr: Vec<i32>) {
        let mut state = self.lock();
        state.pending_isr = None;
        let current = (
            state.assignment.leader_epoch,
            state.assignment.partition_epoch,
        );
        if leader_epoch == current.0 && partition_epoch > current.1 {
            state.assignment.partition_epoch = partition_epoch;
            state.assignment.isr = isr;
        }
        if state.role == Role::Leader {
            self.advance_high_watermark(&mut state);
        }
        drop(state);
        self.notify();
    }

    /// The request for `isr` failed or was refused: allow another.
    pub fn clear_pending_isr(&self) {
        self.lock().pending_isr = None;
    }

    /// What an AlterPartition request carries besides the ISR.
    pub fn epochs(&self) -> (i32, i32) {
        let state = self.lock();
        (
            state.assignment.leader_epoch,
            state.assignment.partition_epoch,
        )
    }

    /// Moves the leader's high watermark to the smallest durable end over the ISR (and a
    /// follower being added, as Kafka's "maximal ISR" does while the change is pending).
    /// A follower whose end is unknown holds it back. It never moves back.
    fn advance_high_watermark(&self, state: &mut ReplicaState) -> bool {
        let mut candidate = self.log.offsets().durable_end_offset.0;
        let members = state
            .assignment
            .isr
            .iter()
            .chain(state.pending_isr.iter().flatten());
        for id in members {
            if *id == self.node_id {
                continue;
            }
            let end = state.followers.get(id).map_or(-1, |f| f.log_end_offset);
            candidate = candidate.min(end);
        }
        if candidate > state.high_watermark.0 {
            state.high_watermark = Offset(candidate);
            true
        } else {
            false
        }
    }

    /// A follower learned the leader's high watermark: it is its own, up to its durable end.
    pub fn set_follower_high_watermark(&self, leader_high_watermark: i64) {
        let end = self.log.offsets().durable_end_offset.0;
        let mut state = self.lock();
        if state.role == Role::Leader {
            return;
        }
        let next = Offset(leader_high_watermark.min(end));
        if next != state.high_watermark {
            state.high_watermark = next;
            drop(state);
            self.notify();
        }
    }

    /// After a follower truncated: its high watermark cannot lie past its end.
    pub(super) fn clamp_high_watermark(&self) {
        let end = self.log.offsets().durable_end_offset;
        let mut state = self.lock();
        state.high_watermark = state.high_watermark.min(end);
    }

    /// The follower's log does not follow the leader's: find the divergence again.
    pub(super) fn mark_diverged(&self) {
        self.lock().needs_truncation = true;
    }

    pub(super) fn needs_truncation(&self) -> bool {
        self.lock().needs_truncation
    }

    pub(super) fn truncation_done(&self, leader_epoch: i32) {
        let mut state = self.lock();
        if state.assignment.leader_epoch == leader_epoch {
            state.needs_truncation = false;
        }
    }

    /// The follower's fetch position: its durable end, and the leader and epoch it follows.
    pub(super) fn follower_position(&self) -> Option<(i32, i32, i64)> {
        let state = self.lock();
        match state.role {
            Role::Follower { leader } if leader >= 0 => Some((
                leader,
                state.assignment.leader_epoch,
                self.log.offsets().durable_end_offset.0,
            )),
            _ => None,
        }
    }
}

fn role_of(assignment: &Assignment, node_id: i32) -> Role {
    if assignment.leader == node_id {
        Role::Leader
    } else {
        Role::Follower {
            leader: assignment.leader,
        }
    }
}
