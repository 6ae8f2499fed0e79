"""Partition data replication on a three-node cluster (issue 7), driven by confluent-kafka.

Topics have replication factor 3 and min.insync.replicas=2; producers use acks=all. What
this file shows:

* every replica holds the same bytes: followers fetch, append with the leader's offsets and
  epochs, and the ISR reported in Metadata is the controller's real one;
* a loop SIGKILLs and restarts the current leader at least 10 times while 200,000 records
  are produced: every acknowledged record is read back at its acknowledged offset (no loss;
  duplicates, allowed without idempotence, are counted and reported);
* a dead follower leaves the ISR within replica.lag.time.max.ms + 1 s and acks=all goes on;
  a second dead follower makes acks=all fail with NOT_ENOUGH_REPLICAS while committed
  records stay readable; both back, the ISR is whole again;
* a leader that appended records it could not replicate (its followers stopped) is replaced
  while stopped, then returns: it truncates that uncommitted suffix by leader epoch and the
  three logs end byte-identical;
* a whole-cluster SIGKILL mid-produce loses no acknowledged record on any replica;
* a bit flipped in the leader's sealed segment is never served: the leader's log goes
  offline, leadership moves, every record is read from the healthy copies, and the damaged
  replica cuts its log back, fetches again and rejoins the ISR with the healthy bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter

import pytest

from karst import (
    Cluster,
    RawConnection,
    confluent_admin,
    confluent_producer,
    consume_partitions,
    raw_produce_v9,
    record_batch,
    wait_until,
)

pytestmark = pytest.mark.slow

ERROR_NOT_ENOUGH_REPLICAS = 19
# Heartbeats, fencing and ISR lag fast enough for tests that kill nodes.
FAST_REPLICATION = {
    "broker.heartbeat.interval.ms": 200,
    "broker.session.timeout.ms": 2000,
    "replica.lag.time.max.ms": 3000,
    "replica.fetch.backoff.ms": 100,
}
LEADER_KILLS_MIN = 10
# Parked follower fetches answer within this (the divergence test waits them out).
FOLLOWER_FETCH_WAIT_MS = 100


def report(capsys, message: str) -> None:
    """Print past pytest's capture: measured figures belong in the test run's output."""
    with capsys.disabled():
        print(f"\n    [measured] {message}")


def start_cluster(brokers, settings=None, voter_ids=(1, 2, 3)) -> Cluster:
    cluster = Cluster(brokers, voter_ids=voter_ids, settings={**FAST_REPLICATION, **(settings or {})})
    cluster.start()
    cluster.wait_for_leader()
    return cluster


def create_replicated_topic(cluster: Cluster, name: str, partitions: int = 1, config=None) -> None:
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(cluster.nodes[1])
    topic = NewTopic(name, num_partitions=partitions, replication_factor=3,
                     config={"min.insync.replicas": "2", **(config or {})})
    admin.create_topics([topic], operation_timeout=30, request_timeout=30)[name].result(timeout=30)
    for partition in range(partitions):
        wait_until(lambda p=partition: leader_of(cluster, name, p) is not None, timeout_s=30,
                   what=f"{name}-{partition} has a leader on every node")


def partition_views(node) -> dict:
    """`/v1/partitions` of one node: (topic, partition) -> its replica's view."""
    try:
        status, body = node.http_get("/v1/partitions", timeout_s=5)
    except OSError:
        return {}
    if status != 200:
        return {}
    return {(p["topic"], p["partition"]): p for p in json.loads(body)["partitions"]}


def leader_of(cluster: Cluster, topic: str, partition: int):
    """The live node whose replica is leader, as that node itself says."""
    for node in cluster.alive_nodes:
        view = partition_views(node).get((topic, partition))
        if view and view["role"] == "leader":
            return node.node_id
    return None


def isr_of(cluster: Cluster, topic: str, partition: int) -> list[int]:
    """The ISR in the Metadata a live node answers (the controller's, applied there)."""
    node = cluster.alive_nodes[0]
    metadata = cluster.metadata(node).topic(topic)
    return sorted(metadata.partitions[partition].isr) if metadata else []


def wait_isr(cluster: Cluster, topic: str, partition: int, expected: list[int], timeout_s: float) -> float:
    started = time.monotonic()
    wait_until(lambda: isr_of(cluster, topic, partition) == sorted(expected), timeout_s=timeout_s,
               interval_s=0.05, what=f"ISR of {topic}-{partition} == {sorted(expected)}")
    return time.monotonic() - started


def wait_replicas_converged(cluster: Cluster, topic: str, partition: int, timeout_s: float = 60) -> int:
    """Waits until every live replica has the same log end and high watermark; returns it."""
    def converged():
        ends = set()
        for node in cluster.alive_nodes:
            view = partition_views(node).get((topic, partition))
            if view is not None:  # nodes that host no replica of it have no view
                ends.add((view["log_end_offset"], view["high_watermark"]))
        if len(ends) == 1:
            (end, high_watermark) = ends.pop()
            return end if end == high_watermark else None
        return None

    try:
        return wait_until(converged, timeout_s=timeout_s, interval_s=0.1,
                          what=f"replicas of {topic}-{partition} converged")
    except AssertionError as error:
        views = {node.node_id: partition_views(node).get((topic, partition)) for node in cluster.alive_nodes}
        raise AssertionError(f"{error}\n{json.dumps(views, indent=1)}") from None


def describe_replicas(cluster: Cluster, topic: str, partition: int) -> str:
    """Every live replica's view, for failure messages."""
    return json.dumps({node.node_id: partition_views(node).get((topic, partition))
                       for node in cluster.alive_nodes}, indent=1)


def log_digest(node, topic: str, partition: int) -> str:
    """SHA-256 over the partition's segment files' contents, in offset order."""
    digest = hashlib.sha256()
    for path in sorted(node.partition_dir(topic, partition).glob("*.log")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


class AckedProducer:
    """confluent-kafka with acks=all, idempotence off, retries on; remembers the offset of
    every acknowledged value, and every failed delivery."""

    def __init__(self, cluster: Cluster, **overrides):
        self.producer = confluent_producer(cluster.nodes[1], **{
            "bootstrap.servers": ",".join(node.bootstrap for node in cluster.nodes.values()),
            "linger.ms": 5,
            "retries": 1000000,
            "retry.backoff.ms": 50,
            "message.timeout.ms": 120000,
            "batch.num.messages": 2000,
            "topic.metadata.refresh.interval.ms": 500,
            **overrides,
        })
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[str] = []

    def _delivered(self, error, message):
        if error is not None:
            self.failed.append(str(error))
        else:
            self.acked[message.value()] = (message.partition(), message.offset())

    def produce(self, topic: str, value: bytes, partition: int = 0) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, partition=partition, on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float = 120) -> None:
        assert self.producer.flush(timeout_s) == 0, "records still undelivered"


def check_every_ack_at_its_offset(cluster: Cluster, topic: str, acked: dict, partitions: int = 1):
    """Reads each partition to its end and checks every acknowledged value is at its
    acknowledged offset; returns (records read, duplicates)."""
    ends = {}
    for partition in range(partitions):
        ends[partition] = wait_replicas_converged(cluster, topic, partition)
    records = consume_partitions(cluster.alive_nodes[0], topic, ends, timeout_s=120,
                                 **{"bootstrap.servers": ",".join(n.bootstrap for n in cluster.alive_nodes)})
    at = {(record.partition, record.offset): record.value for partition in records.values()
          for record in partition}
    lost = [(value, place) for value, place in acked.items() if at.get(place) != value]
    counts = Counter(at.values())
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    assert not lost, f"{len(lost)} acknowledged records lost or moved, first: {lost[:3]}"
    return len(at), duplicates


def produce_while_killing_the_leader(cluster: Cluster, topic: str, producer: "AckedProducer", total: int) -> int:
    """Produces `total` values `{topic}-{i:07d}` (paced, so they span the failovers) from a
    background thread while this thread SIGKILLs and restarts partition 0's leader
    LEADER_KILLS_MIN times, each time once a further share of the records was sent. Nodes are
    killed and restarted from this thread only: each node dies with the thread that started
    it (die_with_parent). Returns the number of kills."""
    sent = 0
    done = threading.Event()

    def produce_all():
        nonlocal sent
        for i in range(total):
            producer.produce(topic, f"{topic}-{i:07d}".encode())
            sent = i + 1
            if i % 1000 == 0:
                producer.poll()
                time.sleep(0.15)
        done.set()

    thread = threading.Thread(target=produce_all, daemon=True)
    thread.start()
    kills = 0
    while kills < LEADER_KILLS_MIN:
        wait_until(lambda: sent > (kills + 1) * total // (LEADER_KILLS_MIN + 2), timeout_s=120,
                   what="records flowing before the next kill")
        leader = wait_until(lambda: leader_of(cluster, topic, 0), timeout_s=60, what="a leader to kill")
        node = cluster.nodes[leader]
        node.kill()
        kills += 1
        wait_until(lambda: leader_of(cluster, topic, 0) not in (None, leader), timeout_s=60,
                   what="a new leader after the kill")
        node.restart()
        wait_isr(cluster, topic, 0, [1, 2, 3], timeout_s=60)
    assert done.wait(timeout=300), f"only {sent} records sent"
    thread.join(timeout=10)
    producer.flush(300)
    return kills


# ---------------------------------------------------------------------------------------------


def test_followers_hold_the_leaders_bytes_and_metadata_reports_the_real_isr(brokers):
    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "mirrored", partitions=3)
    producer = AckedProducer(cluster)
    for i in range(3000):
        producer.produce("mirrored", f"mirrored-{i:05d}".encode(), partition=i % 3)
    producer.flush()
    assert not producer.failed, producer.failed[:3]
    for partition in range(3):
        end = wait_replicas_converged(cluster, "mirrored", partition)
        assert end == 1000, f"partition {partition} ends at {end}"
        digests = {node.node_id: log_digest(node, "mirrored", partition) for node in cluster.nodes.values()}
        assert len(set(digests.values())) == 1, f"replicas of partition {partition} differ: {digests}"
        assert isr_of(cluster, "mirrored", partition) == [1, 2, 3]
    check_every_ack_at_its_offset(cluster, "mirrored", producer.acked, partitions=3)


def test_a_dead_follower_leaves_the_isr_and_two_dead_followers_refuse_acks_all(brokers, capsys):
    # Five voters: with two of a partition's three replicas dead the metadata quorum still
    # stands, so the controller can shrink the ISR (with three voters it could not, in Kafka
    # as here, and acks=all would time out instead).
    cluster = start_cluster(brokers, voter_ids=(1, 2, 3, 4, 5))
    create_replicated_topic(cluster, "shrinking")
    producer = AckedProducer(cluster)
    for i in range(500):
        producer.produce("shrinking", f"before-{i}".encode())
    producer.flush()
    leader = leader_of(cluster, "shrinking", 0)
    replicas = cluster.metadata(cluster.nodes[leader]).topic("shrinking").partitions[0].replicas
    followers = [node_id for node_id in replicas if node_id != leader]

    # One follower dies: it leaves the ISR within replica.lag.time.max.ms + 1 s ...
    cluster.nodes[followers[0]].kill()
    lag_max_s = FAST_REPLICATION["replica.lag.time.max.ms"] / 1000
    shrink_s = wait_isr(cluster, "shrinking", 0, [leader, followers[1]], timeout_s=lag_max_s + 1)
    report(capsys, f"ISR shrank {shrink_s:.2f} s after a follower's SIGKILL (limit {lag_max_s + 1:.0f} s)")
    # ... and acks=all goes on with two in-sync replicas.
    for i in range(500):
        producer.produce("shrinking", f"two-isr-{i}".encode())
    producer.flush()
    assert not producer.failed, producer.failed[:3]

    # A second follower dies: ISR 1 < min.insync.replicas 2.
    cluster.nodes[followers[1]].kill()
    wait_isr(cluster, "shrinking", 0, [leader], timeout_s=lag_max_s + 1)
    with RawConnection(cluster.nodes[leader]) as connection:
        answer = raw_produce_v9(connection, 1, "shrinking", 0, record_batch([b"refused"], int(time.time() * 1000)))
    assert answer.error_code == ERROR_NOT_ENOUGH_REPLICAS, answer
    # Committed records stay readable from the remaining replica.
    records = consume_partitions(cluster.nodes[leader], "shrinking", {0: 1000}, timeout_s=60)
    assert len(records[0]) == 1000
    check_every_ack_at_its_offset(cluster, "shrinking", producer.acked)

    # Both come back: the ISR is whole again.
    for follower in followers:
        cluster.nodes[follower].restart()
    wait_isr(cluster, "shrinking", 0, list(replicas), timeout_s=60)
    for i in range(100):
        producer.produce("shrinking", f"after-{i}".encode())
    producer.flush()
    assert not producer.failed, producer.failed[:3]
    end = wait_replicas_converged(cluster, "shrinking", 0)
    assert end == 1100
    digests = {log_digest(cluster.nodes[n], "shrinking", 0) for n in replicas}
    assert len(digests) == 1, "replicas differ after both followers returned"


def test_a_sigkilled_leader_is_fenced_at_once_but_a_paused_one_only_after_its_session(brokers, capsys):
    # Kafka's default 9 s session. A SIGSTOPped node still accepts connections (the kernel
    # does), so only its session can fence it: it must keep its leadership through a pause
    # shorter than the session. A SIGKILLed node refuses connections, which the controller
    # takes as death (broker.fencing.connection.refused.ms, 500 ms): leadership moves long
    # before the session would end.
    session_s = 9
    # Kafka's 30 s replica lag too: a leader resumed after a pause longer than the lag limit
    # shrinks its ISR to itself (its followers' fetches waited while it was stopped), and then
    # no replica could take over after the SIGKILL.
    cluster = start_cluster(brokers, settings={"broker.session.timeout.ms": session_s * 1000,
                                               "broker.heartbeat.interval.ms": 2000,
                                               "replica.lag.time.max.ms": 30000})
    # The leader must not be the controller (a dead controller costs an election first):
    # replicas placed so that the preferred leader is another node.
    from confluent_kafka.admin import NewTopic

    controller = cluster.agreed_leader()
    others = [node_id for node_id in (1, 2, 3) if node_id != controller]
    admin = confluent_admin(cluster.nodes[1])
    topic = NewTopic("fencing", num_partitions=1, replication_factor=-1,
                     replica_assignment=[others + [controller]],
                     config={"min.insync.replicas": "2"})
    admin.create_topics([topic], operation_timeout=30)["fencing"].result(timeout=30)
    wait_until(lambda: leader_of(cluster, "fencing", 0) == others[0], timeout_s=30,
               what="fencing-0 led by its preferred replica")
    leader = others[0]

    paused = cluster.nodes[leader]
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        # Four seconds: nobody fences it (a wrong fast path would within one).
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            views = [partition_views(node).get(("fencing", 0)) for node in cluster.alive_nodes
                     if node is not paused]
            assert not any(view and view["role"] == "leader" for view in views), \
                "a paused broker lost its leadership before its session ended"
            time.sleep(0.2)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    assert leader_of(cluster, "fencing", 0) == leader
    wait_isr(cluster, "fencing", 0, [1, 2, 3], timeout_s=10)

    paused.kill()
    killed_at = time.monotonic()
    wait_until(lambda: leader_of(cluster, "fencing", 0) not in (None, leader), timeout_s=session_s,
               interval_s=0.05, what="a new leader after the SIGKILL")
    moved_s = time.monotonic() - killed_at
    report(capsys, f"leadership moved {moved_s:.2f} s after the leader's SIGKILL (session {session_s} s)")
    assert moved_s < 3, f"leadership took {moved_s:.2f} s to move after a SIGKILL"


def test_200000_records_survive_10_sigkills_of_the_leader_with_no_acknowledged_loss(brokers, capsys):
    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "failover")
    producer = AckedProducer(cluster)
    total = 200_000
    started = time.monotonic()
    kills = produce_while_killing_the_leader(cluster, "failover", producer, total)
    assert not producer.failed, (f"{len(producer.failed)} failed deliveries, first: {producer.failed[:3]}; "
                                 f"replicas: {describe_replicas(cluster, 'failover', 0)}")
    assert len(producer.acked) == total
    read, duplicates = check_every_ack_at_its_offset(cluster, "failover", producer.acked)
    report(capsys, f"{total} records, {kills} leader SIGKILLs in {time.monotonic() - started:.1f} s: "
                   f"0 lost, {duplicates} duplicates (retries without idempotence), {read} records in the log")
    digests = {log_digest(node, "failover", 0) for node in cluster.nodes.values()}
    assert len(digests) == 1, "replicas differ after the failovers"


def flip_bit(path, byte: int, bit: int) -> None:
    """Flips one bit of a file in place, through the file: the page cache holds the damage,
    as a running broker would read it after the disk returned it."""
    with open(path, "r+b") as file:
        file.seek(byte)
        value = file.read(1)[0]
        file.seek(byte)
        file.write(bytes([value ^ (1 << bit)]))


def test_a_bit_flipped_in_the_leaders_sealed_segment_is_never_served_and_the_replica_heals(brokers, capsys):
    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "flipped", config={"segment.bytes": "16384"})
    producer = AckedProducer(cluster, **{"linger.ms": 0, "batch.num.messages": 20})
    for i in range(4000):
        producer.produce("flipped", f"flipped-{i:05d}".encode())
    producer.flush()
    assert not producer.failed, producer.failed[:3]
    end = wait_replicas_converged(cluster, "flipped", 0)
    leader = leader_of(cluster, "flipped", 0)
    segments = sorted(cluster.nodes[leader].partition_dir("flipped", 0).glob("*.log"))
    assert len(segments) >= 3, f"want sealed segments, have {segments}"
    healthy = log_digest(cluster.nodes[leader], "flipped", 0)
    # A byte inside the first batch's records, covered by its CRC (the header is 61 bytes).
    flip_bit(segments[0], 70, 4)
    flipped_at = time.monotonic()

    # Every acknowledged record comes back at its offset, with librdkafka checking CRCs: the
    # damaged batch is never served, and the copies on the other replicas are.
    records = consume_partitions(cluster.alive_nodes[0], "flipped", {0: end}, timeout_s=60, **{
        "bootstrap.servers": ",".join(n.bootstrap for n in cluster.alive_nodes),
        "check.crcs": True,
        "topic.metadata.refresh.interval.ms": 500,
    })
    served = {record.offset: record.value for record in records[0]}
    lost = [(value, offset) for value, (_, offset) in producer.acked.items() if served.get(offset) != value]
    assert not lost, f"{len(lost)} acknowledged records not served at their offsets, first {lost[:3]}"
    read_s = time.monotonic() - flipped_at
    new_leader = leader_of(cluster, "flipped", 0)
    assert new_leader not in (None, leader), (
        f"leadership stayed on the damaged replica {leader}: {describe_replicas(cluster, 'flipped', 0)}")
    damaged = cluster.nodes[leader]
    assert "CRC mismatch" in damaged.log_text(), "the damaged replica did not say why it stopped"

    # The damaged replica cuts its log back to the damaged segment, fetches it again from
    # the new leader and rejoins the ISR; its bytes are the healthy ones again.
    healed_s = wait_isr(cluster, "flipped", 0, [1, 2, 3], timeout_s=60) + read_s
    wait_replicas_converged(cluster, "flipped", 0)
    wait_until(lambda: log_digest(damaged, "flipped", 0) == healthy, timeout_s=30,
               what="the damaged replica holds the healthy bytes again")
    assert partition_views(damaged)[("flipped", 0)]["offline"] is None
    _, metrics = damaged.http_get("/metrics", timeout_s=5)
    counters = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                if line.startswith(("karst_replica_repairs_total ", "karst_replica_offline_reports_total "))}
    assert counters.get("karst_replica_repairs_total") == 1, counters
    assert counters.get("karst_replica_offline_reports_total", 0) >= 1, counters
    report(capsys, f"bit flip in the leader's sealed segment: all {len(served)} records served "
                   f"from healthy replicas {read_s:.2f} s after the flip; leader {leader} -> {new_leader}; "
                   f"damaged replica repaired and back in the ISR {healed_s:.2f} s after the flip")


def test_an_isolated_leaders_uncommitted_suffix_is_truncated_by_leader_epoch(brokers):
    # Fencing slow enough that stopping the followers briefly does not fence them.
    cluster = start_cluster(brokers, {"broker.session.timeout.ms": 3000, "replica.lag.time.max.ms": 10000,
                                      "replica.fetch.wait.max.ms": FOLLOWER_FETCH_WAIT_MS})
    create_replicated_topic(cluster, "diverge")
    producer = AckedProducer(cluster)
    for i in range(200):
        producer.produce("diverge", f"committed-{i}".encode())
    producer.flush()
    committed_end = wait_replicas_converged(cluster, "diverge", 0)
    leader = leader_of(cluster, "diverge", 0)
    followers = [cluster.nodes[n] for n in cluster.nodes if n != leader]
    old_leader = cluster.nodes[leader]

    # The followers stop; the leader appends records nobody else gets (acks=1 answers them).
    for follower in followers:
        os.kill(follower.pid, signal.SIGSTOP)
    try:
        # A fetch the followers sent just before they stopped is parked at the leader for up
        # to replica.fetch.wait.max.ms and would carry the next records into their socket
        # buffers. Nothing observable says it has been answered; waiting out several times
        # its limit lets it answer empty, and a stopped follower sends no other.
        time.sleep(FOLLOWER_FETCH_WAIT_MS * 5 / 1000)
        with RawConnection(old_leader) as connection:
            for i in range(5):
                answer = raw_produce_v9_acks(connection, i, "diverge", 0,
                                             record_batch([f"uncommitted-{i}".encode()], int(time.time() * 1000)),
                                             acks=1)
                assert answer.error_code == 0, answer
        assert partition_views(old_leader)[("diverge", 0)]["log_end_offset"] == committed_end + 5
        # The leader stops too; the followers resume and one of them takes over.
        os.kill(old_leader.pid, signal.SIGSTOP)
    finally:
        for follower in followers:
            os.kill(follower.pid, signal.SIGCONT)
    try:
        new_leader = wait_until(
            lambda: next((f.node_id for f in followers
                          if partition_views(f).get(("diverge", 0), {}).get("role") == "leader"), None),
            timeout_s=30, what="a follower elected leader")
        more = AckedProducer(cluster, **{"bootstrap.servers": ",".join(f.bootstrap for f in followers)})
        for i in range(100):
            more.produce("diverge", f"new-leader-{i}".encode())
        more.flush()
        assert not more.failed, more.failed[:3]
    finally:
        os.kill(old_leader.pid, signal.SIGCONT)

    # The old leader returns as a follower: it drops its 5 uncommitted records, fetches the
    # new leader's, and the three logs are the same bytes.
    wait_isr(cluster, "diverge", 0, [1, 2, 3], timeout_s=60)
    end = wait_replicas_converged(cluster, "diverge", 0)
    # 100 more records (a retry without idempotence may add a duplicate).
    assert end >= committed_end + 100
    check_every_ack_at_its_offset(cluster, "diverge", {**producer.acked, **more.acked})
    digests = {node.node_id: log_digest(node, "diverge", 0) for node in cluster.nodes.values()}
    assert len(set(digests.values())) == 1, f"replicas differ: {digests}"
    records = consume_partitions(cluster.nodes[new_leader], "diverge", {0: end}, timeout_s=60)
    values = [record.value for record in records[0]]
    assert not any(value.startswith(b"uncommitted") for value in values)
    assert "truncating a diverged follower log" in old_leader.log_text()


def test_a_whole_cluster_sigkill_mid_produce_keeps_every_acknowledged_record_on_every_replica(brokers):
    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "blackout", partitions=2)
    producer = AckedProducer(cluster, **{"message.timeout.ms": 5000, "retries": 0})
    for i in range(30_000):
        producer.produce("blackout", f"blackout-{i:06d}".encode(), partition=i % 2)
        if i % 500 == 0:
            producer.poll()
        if i == 20_000:
            # The blackout comes once acknowledgements flow (on a loaded machine enqueueing
            # 20,000 records can take less time than the first acks), with records in flight.
            wait_until(lambda: (producer.poll(), len(producer.acked) >= 2000)[1], timeout_s=60,
                       what="acknowledgements before the blackout")
            cluster.kill_all()
    producer.producer.flush(15)
    acked = dict(producer.acked)
    assert len(acked) > 1000, "too few records acknowledged before the blackout"
    for node in cluster.nodes.values():
        node.start(wait=False)
    for node in cluster.nodes.values():
        node.wait_ready()
    for partition in range(2):
        wait_isr(cluster, "blackout", partition, [1, 2, 3], timeout_s=60)
    check_every_ack_at_its_offset(cluster, "blackout", acked, partitions=2)
    for partition in range(2):
        digests = {log_digest(node, "blackout", partition) for node in cluster.nodes.values()}
        assert len(digests) == 1, f"replicas of partition {partition} differ after the restart"


def raw_produce_v9_acks(connection, correlation_id, topic, partition, batch, acks):
    """Produce v9 with the given acks (the kit's helper always asks for acks=all)."""
    from karst import Reader, parse_produce_response_v9, produce_request_v9

    response = Reader(connection.request(produce_request_v9(correlation_id, topic, partition, batch, acks=acks)))
    response.unpack(">i")
    response.skip_tagged_fields()
    (result,) = parse_produce_response_v9(response.data[response.position:])
    return result


def test_a_rolling_sigterm_restart_under_load_loses_nothing_and_leaders_return(brokers, capsys):
    cluster = start_cluster(brokers, {"leader.imbalance.check.interval.seconds": 1})
    partitions = 6
    create_replicated_topic(cluster, "rolling", partitions=partitions)
    producer = AckedProducer(cluster)
    stop = threading.Event()
    sent = 0

    def produce_until_stopped():
        nonlocal sent
        while not stop.is_set():
            producer.produce("rolling", f"rolling-{sent:07d}".encode(), partition=sent % partitions)
            sent += 1
            if sent % 500 == 0:
                producer.poll()
                time.sleep(0.05)

    thread = threading.Thread(target=produce_until_stopped, daemon=True)
    thread.start()
    shutdown_seconds = {}
    for node_id, node in cluster.nodes.items():
        before = sent
        wait_until(lambda: sent > before + 2000, timeout_s=60, what="records flowing")
        started = time.monotonic()
        assert node.terminate() == 0, f"node {node_id} did not shut down cleanly"
        shutdown_seconds[node_id] = time.monotonic() - started
        node.restart()
        for partition in range(partitions):
            wait_isr(cluster, "rolling", partition, [1, 2, 3], timeout_s=60)
    stop.set()
    thread.join(timeout=30)
    producer.flush()
    assert not producer.failed, f"{len(producer.failed)} failed deliveries, first: {producer.failed[:3]}"
    assert max(shutdown_seconds.values()) < 10, shutdown_seconds

    # The controller moves every leadership back to its preferred replica.
    def preferred_leaders():
        metadata = cluster.metadata(cluster.nodes[1]).topic("rolling")
        return all(p.leader == p.replicas[0] for p in metadata.partitions)

    wait_until(preferred_leaders, timeout_s=30, what="every partition led by its preferred replica")
    read, duplicates = check_every_ack_at_its_offset(cluster, "rolling", producer.acked, partitions=partitions)
    report(capsys, f"rolling SIGTERM restart: shutdowns {', '.join(f'{s:.2f}' for s in shutdown_seconds.values())} s; "
                   f"{len(producer.acked)} records acknowledged, 0 lost, {duplicates} duplicates")
    # On demand too: with every preferred replica leading, ElectLeaders has nothing to do.
    import subprocess
    from karst import die_with_parent
    node = cluster.nodes[2]
    result = subprocess.run(die_with_parent([str(node.binary), "topics", "elect-leaders", "--topic", "rolling",
                                             "--bootstrap-server", node.bootstrap]),
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "0 partition(s) got a new leader" in result.stdout, result.stdout
    assert result.stdout.count("ELECTION_NOT_NEEDED") == partitions, result.stdout


def test_an_idempotent_producer_writes_200000_records_exactly_once_across_10_leader_sigkills(brokers, capsys):
    """Issue 8 on the replicated cluster: with idempotence on, retries across leader failovers
    are recognised by the new leader (producer state follows the leader's on every replica),
    so the log holds every record exactly once, in send order."""
    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "exactly-once")
    producer = AckedProducer(cluster, **{"enable.idempotence": True})
    total = 200_000
    started = time.monotonic()
    kills = produce_while_killing_the_leader(cluster, "exactly-once", producer, total)
    assert not producer.failed, f"{len(producer.failed)} failed deliveries, first: {producer.failed[:3]}"
    end = wait_replicas_converged(cluster, "exactly-once", 0)
    records = consume_partitions(cluster.alive_nodes[0], "exactly-once", {0: end}, timeout_s=120,
                                 **{"bootstrap.servers": ",".join(n.bootstrap for n in cluster.alive_nodes)})
    values = [record.value for record in records[0]]
    expected = [f"exactly-once-{i:07d}".encode() for i in range(total)]
    duplicates = len(values) - len(set(values))
    missing = len(set(expected) - set(values))
    assert duplicates == 0 and missing == 0, f"{duplicates} duplicates, {missing} missing"
    assert values == expected, "records are not in send order"
    report(capsys, f"idempotent: {total} records, {kills} leader SIGKILLs in {time.monotonic() - started:.1f} s: "
                   f"0 duplicates, 0 lost, send order kept")


def test_producer_state_survives_the_leaders_sigkill_and_a_whole_cluster_restart(brokers):
    """Issue 8 on RF=3: a replayed batch (same producer id, epoch, sequence) is recognised by
    the new leader after the old one's SIGKILL (followers keep producer state from the batches
    they replicate), and again after every node was SIGKILLed and restarted."""
    from karst import ERROR_NONE, ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER, init_producer_id_v1
    from test_idempotence import produce_idempotent

    cluster = start_cluster(brokers)
    create_replicated_topic(cluster, "replayed")
    batches = 40
    leader = cluster.nodes[leader_of(cluster, "replayed", 0)]
    with RawConnection(leader) as connection:
        _, producer_id, epoch = wait_until(lambda: (answer := init_producer_id_v1(connection, 1))[0] == 0 and answer,
                                           timeout_s=30, what="a producer id")
        for index in range(batches):
            values = [f"r{index}-{n}".encode() for n in range(2)]
            response = produce_idempotent(connection, 2 + index, "replayed", producer_id, epoch, 2 * index, values)
            assert (response.error_code, response.base_offset) == (ERROR_NONE, 2 * index), response

    def replay_last_five(correlation_base: int) -> None:
        node = cluster.nodes[wait_until(lambda: leader_of(cluster, "replayed", 0), timeout_s=60, what="a leader")]
        with RawConnection(node) as connection:
            for index in range(batches - 5, batches):
                values = [f"r{index}-{n}".encode() for n in range(2)]
                replay = produce_idempotent(connection, correlation_base + index, "replayed", producer_id, epoch,
                                            2 * index, values)
                assert (replay.error_code, replay.base_offset) == (ERROR_NONE, 2 * index), (node.node_id, replay)
            gap = produce_idempotent(connection, correlation_base + 99, "replayed", producer_id, epoch,
                                     2 * batches + 1, [b"gap"])
            assert gap.error_code == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER, gap

    # The leader dies: a follower leads, and knows the producer.
    leader.kill()
    wait_until(lambda: leader_of(cluster, "replayed", 0) not in (None, leader.node_id), timeout_s=60,
               what="a new leader")
    replay_last_five(100)
    leader.restart()
    wait_isr(cluster, "replayed", 0, [1, 2, 3], timeout_s=60)

    # Every node dies at once and comes back.
    cluster.kill_all()
    for node in cluster.nodes.values():
        node.start(wait=False)
    for node in cluster.nodes.values():
        node.wait_ready()
    replay_last_five(200)
    assert wait_replicas_converged(cluster, "replayed", 0) == 2 * batches, "a replay was stored again"
