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
    let mut first = later(group.join(request(&ids[0], None, &["range"]), &options(), expiry + 200));
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

#[test]
fn a_full_group_refuses_another_member_but_not_a_rejoining_one() {
    let options = GroupOptions {
        group_size_max: 2,
        ..GroupOptions::default()
    };
    let mut group = Group::new("g", 0, 0);
    let dynamic = |member_id: &str| JoinRequest {
        require_known_member_id: false,
        ..request(member_id, None, &["range"])
    };
    let mut first = later(group.join(dynamic(""), &options, 0));
    let first = first.try_recv().unwrap();
    let _second = later(group.join(dynamic(""), &options, 1));
    let refused = now(group.join(dynamic(""), &options, 2));
    assert_eq!(refused.error, Some(ResponseError::GroupMaxSizeReached));
    assert_eq!(group.members.len(), 2);
    // A member already in the group may always rejoin.
    let _rejoin = later(group.join(dynamic(&first.member_id), &options, 3));
}
