"""Consumer groups (issue 9): the group coordinator driven by real clients.

* three confluent-kafka members (separate processes) share a 6-partition topic, each
  partition owned by exactly one member; a SIGKILLed member's partitions move to the others
  within session.timeout.ms + 1 s; a new member is taken in — with the eager `range` and the
  incremental `cooperative-sticky` assignors;
* commit, close, broker SIGKILL and restart: the next member resumes exactly after the
  committed offsets;
* kafka-python's KafkaConsumer and `kcat -G` consume through groups on the same broker, and
  each library's admin client describes the groups the other consumed with;
* a static member (group.instance.id) restarting within its session timeout gets its
  partitions back while the others see no rebalance;
* hand-built OffsetCommit requests from an unknown member, an old generation, for a missing
  partition, with over-long metadata and with an empty group id get Kafka's error codes and
  change no committed offset.
"""
from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from karst import (
    RawConnection,
    Reader,
    confluent_admin,
    confluent_consumer,
    confluent_producer,
    create_topic,
    die_with_parent,
    frame,
    request_header_v1,
    wait_until,
)

MEMBER_SCRIPT = Path(__file__).resolve().parent / "group_member.py"
SESSION_TIMEOUT_S = 6.0  # group_member.py's session.timeout.ms
PARTITIONS = 6

# Fast enough group formation for tests; Kafka's default initial delay is 3 s.
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0}

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_SYNC_GROUP = 14

ERROR_NONE = 0
ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERROR_OFFSET_METADATA_TOO_LARGE = 12
ERROR_COORDINATOR_LOAD_IN_PROGRESS = 14
ERROR_ILLEGAL_GENERATION = 22
ERROR_INVALID_GROUP_ID = 24
ERROR_UNKNOWN_MEMBER_ID = 25


def report(capsys, message: str) -> None:
    with capsys.disabled():
        print(f"\n    [measured] {message}")


class Member:
    """A group_member.py process and the events it printed."""

    def __init__(self, bootstrap: str, topic: str, group: str, strategy: str, instance: str | None = None):
        command = [sys.executable, str(MEMBER_SCRIPT), bootstrap, topic, group, strategy]
        if instance:
            command.append(instance)
        self.process = subprocess.Popen(die_with_parent(command), stdout=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        self.history: list[dict] = []
        self.partitions: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def drain(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.history.append(event)
            if event["event"] in ("assigned", "revoked"):
                self.partitions = event["partitions"]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def wait_for_assignment(members: list[Member], partitions: int, timeout_s: float) -> float:
    """Waits until the members' assignments are disjoint, cover every partition and none is
    empty; returns the seconds it took."""
    started = time.monotonic()

    def balanced() -> bool:
        for member in members:
            member.drain()
        owned = [p for m in members for p in m.partitions]
        return sorted(owned) == list(range(partitions)) and all(m.partitions for m in members)

    wait_until(balanced, timeout_s=timeout_s, interval_s=0.02,
               what=f"{len(members)} members own {partitions} partitions, each exactly once")
    return time.monotonic() - started


@pytest.fixture
def members():
    started: list[Member] = []
    yield started
    for member in started:
        if member.process.poll() is None:
            member.kill()


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_members_share_partitions_and_rebalance_when_one_dies_and_one_joins(
        brokers, members, capsys, strategy):
    broker = brokers.start(GROUP_SETTINGS)
    topic = f"shared-{strategy}"
    create_topic(broker, topic, partitions=PARTITIONS)
    group = f"group-{strategy}"
    for _ in range(3):
        members.append(Member(broker.bootstrap, topic, group, strategy))
    formed = wait_for_assignment(members, PARTITIONS, timeout_s=30)

    admin = confluent_admin(broker)
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert len(described.members) == 3
    assert described.state.name == "STABLE"
    assert described.partition_assignor == strategy
    assigned = sorted(tp.partition for m in described.members for tp in m.assignment.topic_partitions)
    assert assigned == list(range(PARTITIONS)), "DescribeGroups shows the same assignment"

    # A member crashes: its partitions move once its session runs out.
    killed_at = time.monotonic()
    members[2].kill()
    survivors = members[:2]
    moved = wait_for_assignment(survivors, PARTITIONS, timeout_s=SESSION_TIMEOUT_S + 10)
    moved_after = time.monotonic() - killed_at
    assert moved_after <= SESSION_TIMEOUT_S + 1.0, (
        f"partitions moved {moved_after:.2f}s after the kill (session timeout {SESSION_TIMEOUT_S}s)")

    # A new member joins.
    members.append(Member(broker.bootstrap, topic, group, strategy))
    joined = wait_for_assignment(survivors + [members[3]], PARTITIONS, timeout_s=30)
    report(capsys, f"{strategy}: formed in {formed:.2f}s, partitions moved {moved_after:.2f}s after "
                   f"SIGKILL (session {SESSION_TIMEOUT_S:.0f}s), join rebalance {joined:.2f}s")
    del moved


def produce(broker, topic: str, count: int, partitions: int) -> None:
    producer = confluent_producer(broker)
    for index in range(count):
        producer.produce(topic, key=str(index).encode(), value=f"value-{index}".encode(),
                         partition=index % partitions)
    assert producer.flush(30) == 0


def test_consumption_resumes_exactly_after_committed_offsets_across_a_broker_restart(brokers):
    from confluent_kafka import TopicPartition

    broker = brokers.start(GROUP_SETTINGS)
    topic, group = "resume", "resume-group"
    create_topic(broker, topic, partitions=3)
    produce(broker, topic, 3000, 3)

    consumer = confluent_consumer(broker, **{"group.id": group})
    consumer.subscribe([topic])
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 60
    while sum(map(len, seen.values())) < 1200:
        assert time.monotonic() < deadline, f"consumed only {seen}"
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen[message.partition()].append(message.offset())
    positions = {p: offsets[-1] + 1 for p, offsets in seen.items() if offsets}
    committed = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                                asynchronous=False)
    assert all(tp.error is None for tp in committed), committed
    consumer.close()

    # The coordinator's state must come back from __consumer_offsets alone.
    broker.kill()
    broker.restart()

    resumed = confluent_consumer(broker, **{"group.id": group})
    fetched = resumed.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    assert {tp.partition: tp.offset for tp in fetched if tp.offset >= 0} == positions
    resumed.subscribe([topic])
    first: dict[int, int] = {}
    total = 0
    deadline = time.monotonic() + 60
    while total < 3000 - sum(positions.values()):
        assert time.monotonic() < deadline, f"resumed consumer got {total} records"
        message = resumed.poll(0.5)
        if message is None or message.error():
            continue
        first.setdefault(message.partition(), message.offset())
        total += 1
    resumed.close()
    assert total == 3000 - sum(positions.values()), "nothing consumed twice, nothing skipped"
    for partition in range(3):
        committed_offset = positions.get(partition, 0)
        if committed_offset < 1000:  # records left to resume from
            assert first[partition] == committed_offset, (
                f"partition {partition} resumed at {first[partition]}, committed {committed_offset}")


def test_kafka_python_and_kcat_groups_described_by_each_others_admin(brokers):
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    broker = brokers.start(GROUP_SETTINGS)
    topic = "cross"
    create_topic(broker, topic, partitions=2)
    produce(broker, topic, 200, 2)

    # kafka-python consumes through a group and stays subscribed while confluent describes it.
    python_consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="python-group",
                                    client_id="python-member", auto_offset_reset="earliest",
                                    enable_auto_commit=False, consumer_timeout_ms=30000)
    received = 0
    for _message in python_consumer:
        received += 1
        if received == 200:
            break
    assert received == 200
    python_consumer.commit()
    admin = confluent_admin(broker)
    described = admin.describe_consumer_groups(["python-group"])["python-group"].result(timeout=10)
    assert described.state.name == "STABLE"
    assert [m.client_id for m in described.members] == ["python-member"]
    assert sorted(tp.partition for tp in described.members[0].assignment.topic_partitions) == [0, 1]
    python_consumer.close()

    # kcat -G consumes all 200 through its own group.
    kcat = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-G", "kcat-group", "-o", "beginning", "-e",
         "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100", "-f", "%o\n", topic],
        capture_output=True, text=True, timeout=60)
    assert kcat.returncode == 0, kcat.stderr
    assert len(kcat.stdout.split()) == 200

    # kafka-python's admin sees both groups and confluent's committed offsets.
    python_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    listed = {group["group_id"] for group in python_admin.list_groups()}
    assert {"python-group", "kcat-group"} <= listed, listed
    kcat_group = python_admin.describe_groups(["kcat-group"])
    kcat_group = kcat_group["kcat-group"] if isinstance(kcat_group, dict) else kcat_group[0]
    assert kcat_group["group_state"] == "Empty", kcat_group
    offsets = python_admin.list_group_offsets("python-group")["python-group"]
    assert sum(meta.offset for meta in offsets.values()) == 200, offsets
    python_admin.close()


def test_a_static_member_restarting_gets_its_partitions_back_without_rebalancing_others(brokers, members):
    broker = brokers.start(GROUP_SETTINGS)
    topic, group = "static", "static-group"
    create_topic(broker, topic, partitions=PARTITIONS)
    # The first member leads the group: the restart below is of a follower.
    members.append(Member(broker.bootstrap, topic, group, "range", "instance-1"))
    wait_for_assignment(members, PARTITIONS, timeout_s=30)
    for index in (2, 3):
        members.append(Member(broker.bootstrap, topic, group, "range", f"instance-{index}"))
    wait_for_assignment(members, PARTITIONS, timeout_s=30)
    before = [list(m.partitions) for m in members]
    others_events = [len(m.history) for m in members[:2]]

    members[2].kill()
    restarted = Member(broker.bootstrap, topic, group, "range", "instance-3")
    members.append(restarted)
    wait_until(lambda: (restarted.drain(), restarted.partitions)[1] == before[2], timeout_s=SESSION_TIMEOUT_S,
               what="the restarted static member has its old partitions back")
    # Longer than a heartbeat interval: a rebalance would have reached the others by now.
    time.sleep(2.0)
    for member, count, partitions in zip(members[:2], others_events, before[:2]):
        member.drain()
        assert len(member.history) == count, f"another member saw a rebalance: {member.history[count:]}"
        assert member.partitions == partitions
    admin = confluent_admin(broker)
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert sorted(m.group_instance_id for m in described.members) == ["instance-1", "instance-2", "instance-3"]


# --- hand-built requests ---------------------------------------------------------------------

def string(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack(">h", len(encoded)) + encoded


def find_coordinator_v0(connection: RawConnection, group: str) -> int:
    reader = Reader(connection.request(frame(request_header_v1(API_FIND_COORDINATOR, 0, 1) + string(group))))
    reader.unpack(">i")
    error, node_id = reader.unpack(">hi")
    assert error == ERROR_NONE, error
    return node_id


def join_group_v1(connection: RawConnection, group: str) -> tuple[int, str]:
    """A one-member group through JoinGroup v1 (no KIP-394 round trip): (generation, member id)."""
    body = (string(group) + struct.pack(">ii", 6000, 6000) + string("") + string("consumer")
            + struct.pack(">i", 1) + string("range") + struct.pack(">i", 0))

    def attempt():
        reader = Reader(connection.request(frame(request_header_v1(API_JOIN_GROUP, 1, 2) + body)))
        reader.unpack(">i")
        error, generation = reader.unpack(">hi")
        # A coordinator that just took over __consumer_offsets answers "loading": retry, as clients do.
        return None if error == ERROR_COORDINATOR_LOAD_IN_PROGRESS else (error, generation, reader)

    error, generation, reader = wait_until(attempt, timeout_s=10, what="JoinGroup past loading")
    assert error == ERROR_NONE, f"JoinGroup error {error}"
    _protocol, _leader = reader.string(), reader.string()
    return generation, reader.string()


def sync_group_v0(connection: RawConnection, group: str, generation: int, member: str) -> None:
    body = string(group) + struct.pack(">i", generation) + string(member) + struct.pack(">i", 0)
    reader = Reader(connection.request(frame(request_header_v1(API_SYNC_GROUP, 0, 3) + body)))
    reader.unpack(">i")
    assert reader.unpack(">h") == ERROR_NONE


def offset_commit_v2(connection: RawConnection, group: str, generation: int, member: str,
                     commits: list[tuple[str, int, int, str]]) -> list[int]:
    """OffsetCommit v2: one error code per (topic, partition, offset, metadata)."""
    body = string(group) + struct.pack(">i", generation) + string(member) + struct.pack(">q", -1)
    body += struct.pack(">i", len(commits))
    for topic, partition, offset, metadata in commits:
        body += string(topic) + struct.pack(">i", 1) + struct.pack(">iq", partition, offset) + string(metadata)
    reader = Reader(connection.request(frame(request_header_v1(API_OFFSET_COMMIT, 2, 4) + body)))
    reader.unpack(">i")
    errors = []
    for _ in range(reader.unpack(">i")):
        reader.string()
        for _ in range(reader.unpack(">i")):
            _partition, error = reader.unpack(">ih")
            errors.append(error)
    return errors


def offset_fetch_v1(connection: RawConnection, group: str, topic: str, partition: int) -> int:
    body = string(group) + struct.pack(">i", 1) + string(topic) + struct.pack(">ii", 1, partition)
    reader = Reader(connection.request(frame(request_header_v1(API_OFFSET_FETCH, 1, 5) + body)))
    reader.unpack(">i")
    reader.unpack(">i")
    reader.string()
    reader.unpack(">i")
    _partition, offset = reader.unpack(">iq")
    return offset


def test_bad_offset_commits_get_kafkas_error_codes_and_change_nothing(brokers):
    broker = brokers.start(GROUP_SETTINGS)
    create_topic(broker, "commits", partitions=1)
    group = "strict-group"
    with RawConnection(broker) as connection:
        assert find_coordinator_v0(connection, group) == 1  # node.id of a default single node
        generation, member = join_group_v1(connection, group)
        sync_group_v0(connection, group, generation, member)
        assert offset_commit_v2(connection, group, generation, member, [("commits", 0, 10, "")]) == [ERROR_NONE]
        assert offset_fetch_v1(connection, group, "commits", 0) == 10

        refused = [
            (generation, "not-a-member", [("commits", 0, 99, "")], ERROR_UNKNOWN_MEMBER_ID),
            (generation - 1, member, [("commits", 0, 99, "")], ERROR_ILLEGAL_GENERATION),
            (generation, member, [("commits", 7, 99, "")], ERROR_UNKNOWN_TOPIC_OR_PARTITION),
            (generation, member, [("missing-topic", 0, 99, "")], ERROR_UNKNOWN_TOPIC_OR_PARTITION),
            (generation, member, [("commits", 0, 99, "m" * 5000)], ERROR_OFFSET_METADATA_TOO_LARGE),
        ]
        for commit_generation, commit_member, commits, expected in refused:
            errors = offset_commit_v2(connection, group, commit_generation, commit_member, commits)
            assert errors == [expected], f"{commit_member}@{commit_generation} {commits[0][:2]}: {errors}"
        assert offset_commit_v2(connection, "", -1, "", [("commits", 0, 99, "")]) == [ERROR_INVALID_GROUP_ID]
        assert offset_fetch_v1(connection, group, "commits", 0) == 10, "no refused commit changed anything"
    assert broker.alive


# --- coordinator failover on three nodes ----------------------------------------------------

def java_string_hash(text: str) -> int:
    value = 0
    for unit in struct.unpack(f"<{len(text.encode('utf-16-le')) // 2}H", text.encode("utf-16-le")):
        value = (value * 31 + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def offsets_partition(group: str, partitions: int = 50) -> int:
    """Kafka's mapping of a group to its __consumer_offsets partition."""
    value = java_string_hash(group)
    return (0 if value == -(1 << 31) else abs(value)) % partitions


@pytest.mark.slow
def test_coordinator_failover_loses_no_committed_offset_and_consumers_continue(brokers, capsys):
    from confluent_kafka import KafkaException, TopicPartition
    from test_replication import create_replicated_topic, leader_of, start_cluster

    cluster = start_cluster(brokers, settings=GROUP_SETTINGS)
    topic, group, total = "failover", "failover-group", 20_000
    create_replicated_topic(cluster, topic, partitions=3)
    producer = confluent_producer(cluster.nodes[1], **{"bootstrap.servers": cluster.bootstrap})
    for index in range(total):
        producer.produce(topic, value=str(index).encode(), partition=index % 3)
    assert producer.flush(60) == 0

    consumer = confluent_consumer(cluster.nodes[1], **{"bootstrap.servers": cluster.bootstrap,
                                                       "group.id": group, "session.timeout.ms": 10000})
    consumer.subscribe([topic])
    consumed: set[tuple[int, int]] = set()
    positions: dict[int, int] = {}
    last_commit: dict[int, int] = {}
    killed_at = None
    committed_after_kill = None
    coordinator = None
    deadline = time.monotonic() + 180
    while len(consumed) < total or committed_after_kill is None:
        assert time.monotonic() < deadline, f"consumed {len(consumed)}/{total}; commit after kill: {committed_after_kill}"
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            consumed.add((message.partition(), message.offset()))
            positions[message.partition()] = message.offset() + 1
        if len(consumed) % 500 == 0 or message is None:
            try:
                answer = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                                         asynchronous=False)
                if all(tp.error is None for tp in answer):
                    for tp in answer:
                        assert tp.offset >= last_commit.get(tp.partition, 0)
                        last_commit[tp.partition] = tp.offset
                    if killed_at is not None and committed_after_kill is None:
                        committed_after_kill = time.monotonic() - killed_at
            except KafkaException:
                pass  # the coordinator is moving: the next commit retries
        if killed_at is None and len(consumed) >= total // 4 and last_commit:
            coordinator = leader_of(cluster, "__consumer_offsets", offsets_partition(group))
            before_kill = dict(last_commit)
            cluster.nodes[coordinator].kill()
            killed_at = time.monotonic()

    # The new coordinator answers with every commit acknowledged before the kill, or later ones.
    fetched = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    for tp in fetched:
        assert tp.offset >= before_kill.get(tp.partition, 0), f"committed offset went back: {tp} vs {before_kill}"
        assert tp.offset == last_commit[tp.partition]
    consumer.close()
    assert len(consumed) == total
    new_coordinator = leader_of(cluster, "__consumer_offsets", offsets_partition(group))
    assert new_coordinator not in (None, coordinator)
    report(capsys, f"coordinator {coordinator} SIGKILLed: first commit acknowledged by coordinator "
                   f"{new_coordinator} {committed_after_kill:.2f}s later; all {total} records consumed")


# --- karst groups ----------------------------------------------------------------------------

def karst_groups(karst_bin, broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(karst_bin), "groups", "--bootstrap-server", broker.bootstrap, *args],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"karst groups {' '.join(args)}: {result.stderr}"
    return result


def describe_rows(output: str) -> dict[int, list[str]]:
    """`karst groups describe` rows by partition: the columns after GROUP and TOPIC."""
    lines = output.strip().splitlines()
    assert lines[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]
    return {int(line.split()[2]): line.split()[3:] for line in lines[1:]}


def test_karst_groups_shows_lag_under_load_and_resets_an_empty_group(brokers, karst_bin):
    from confluent_kafka import TopicPartition

    broker = brokers.start(GROUP_SETTINGS)
    topic, group = "lagging", "lag-group"
    create_topic(broker, topic, partitions=2)
    produce(broker, topic, 1000, 2)

    consumer = confluent_consumer(broker, **{"group.id": group})
    consumer.subscribe([topic])
    wait_until(lambda: (consumer.poll(0.1), len(consumer.assignment()) == 2)[1], timeout_s=30,
               what="the member owns both partitions")
    committed = {0: 120, 1: 45}
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()], asynchronous=False)

    stop = threading.Event()

    def keep_producing():
        producer = confluent_producer(broker)
        index = 0
        while not stop.is_set():
            producer.produce(topic, value=b"more", partition=index % 2)
            index += 1
            if index % 100 == 0:
                producer.flush(10)
        producer.flush(10)

    writer = threading.Thread(target=keep_producing)
    writer.start()
    try:
        for _ in range(3):
            before = {p: watermark(broker, topic, p) for p in (0, 1)}
            rows = describe_rows(karst_groups(karst_bin, broker, "describe", "--group", group).stdout)
            after = {p: watermark(broker, topic, p) for p in (0, 1)}
            for partition in (0, 1):
                current, log_end, lag, member = rows[partition][:4]
                assert int(current) == committed[partition]
                assert before[partition] <= int(log_end) <= after[partition], (rows, before, after)
                assert int(lag) == int(log_end) - committed[partition]
                assert member.startswith("rdkafka-"), "the owning member is shown"
    finally:
        stop.set()
        writer.join()
    listed = karst_groups(karst_bin, broker, "list", "--state").stdout
    assert any(line.split() == [group, "Stable"] for line in listed.splitlines()), listed

    # A reset is refused while the group has members, then planned (dry run) and executed.
    refused = karst_groups(karst_bin, broker, "reset-offsets", "--group", group, "--topic", topic,
                           "--to-earliest", "--execute", check=False)
    assert refused.returncode != 0 and "inactive" in refused.stderr
    consumer.close()
    plan = karst_groups(karst_bin, broker, "reset-offsets", "--group", group, "--topic", topic, "--to-earliest")
    assert [line.split()[2:] for line in plan.stdout.splitlines()[1:]] == [["0", "0"], ["1", "0"]]
    rows = describe_rows(karst_groups(karst_bin, broker, "describe", "--group", group).stdout)
    assert [int(rows[p][0]) for p in (0, 1)] == [120, 45], "a dry run commits nothing"
    karst_groups(karst_bin, broker, "reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute")

    restarted = confluent_consumer(broker, **{"group.id": group})
    restarted.subscribe([topic])
    first: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while len(first) < 2:
        assert time.monotonic() < deadline, f"first offsets so far: {first}"
        message = restarted.poll(0.5)
        if message is not None and not message.error():
            first.setdefault(message.partition(), message.offset())
    restarted.close()
    assert first == {0: 0, 1: 0}, "the next consumer starts from the beginning"

    karst_groups(karst_bin, broker, "delete", "--group", group)
    assert group not in karst_groups(karst_bin, broker, "list").stdout.split()


def watermark(broker, topic: str, partition: int) -> int:
    from karst import watermarks
    return watermarks(broker, topic, partition)[1]
