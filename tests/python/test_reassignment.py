"""Partition reassignment (issue 7, KIP-455) on a three-voter cluster plus a broker-only node 4.

Topics have replication factor 3 and min.insync.replicas=2; producers use acks=all. What this
file shows:

* a partition with data moves from {1,2,3} to {2,3,4} (`karst topics reassign`) while a
  producer writes with acks=all: ListPartitionReassignments lists the move, then clears; node
  4 ends in the ISR with the same bytes; node 1, the old leader, deletes its log; Metadata
  shows the new replicas; no acknowledged record is lost;
* a move whose new replica cannot catch up (node 4 killed, but still registered for a long
  session) is shown by `karst topics describe`, stays listed across a controller failover,
  and cancelling it reverts to the old replicas;
* bad requests get Kafka's error codes (kafka-python's admin client): UNKNOWN_TOPIC_OR_PARTITION,
  INVALID_REPLICA_ASSIGNMENT (empty, repeated or unknown brokers), NO_REASSIGNMENT_IN_PROGRESS;
* Kafka's own kafka-reassign-partitions tool runs the same kind of move.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from karst import Cluster, confluent_admin, wait_until
from test_replication import (
    AckedProducer,
    check_every_ack_at_its_offset,
    describe_replicas,
    isr_of,
    log_digest,
    partition_views,
    start_cluster,
    wait_isr,
)

pytestmark = pytest.mark.slow

# Records written before the move, so that node 4 has a log to copy while the move is listed.
PRELOADED_RECORDS = 40_000
RECORD_BYTES = 1024
# A session long enough that a killed node stays registered and unfenced for the test.
LONG_SESSION = {"broker.session.timeout.ms": 60_000}


def start_four_nodes(brokers, settings=None) -> Cluster:
    """Voters 1..3 and broker-only node 4, all registered."""
    cluster = start_cluster(brokers, settings)
    cluster.add_node(4, broker_only=True).start()
    wait_until(lambda: sorted(b[0] for b in cluster.metadata(cluster.nodes[1]).brokers) == [1, 2, 3, 4],
               timeout_s=30, what="four registered brokers")
    return cluster


def create_on_1_2_3(cluster: Cluster, name: str) -> None:
    """RF=3 on brokers 1, 2, 3 (1 the preferred leader), min.insync.replicas=2."""
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(cluster.nodes[1])
    topic = NewTopic(name, num_partitions=1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "2"})
    admin.create_topics([topic], operation_timeout=30, request_timeout=30)[name].result(timeout=30)
    wait_isr(cluster, name, 0, [1, 2, 3], timeout_s=30)


def karst_cli(cluster: Cluster, *args, check: bool = True) -> subprocess.CompletedProcess:
    binary = os.environ.get("KARST_BIN", "target/release/karst")
    command = [binary, "topics", "--bootstrap-server", cluster.bootstrap, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def kafka_python_admin(cluster: Cluster):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30_000)


def listed_moves(cluster: Cluster, topic: str) -> dict:
    """ListPartitionReassignments through `karst topics reassign --list`: partition -> line."""
    output = karst_cli(cluster, "reassign", "--list", "--topic", topic).stdout
    return {int(line.split(":")[0].rsplit("-", 1)[1]): line for line in output.splitlines()
            if line.startswith(f"{topic}-")}


def replicas_in_metadata(cluster: Cluster, topic: str) -> list[int]:
    metadata = cluster.metadata(cluster.alive_nodes[0]).topic(topic)
    return list(metadata.partitions[0].replicas) if metadata else []


# ---------------------------------------------------------------------------------------------


def test_a_partition_moves_from_1_2_3_to_2_3_4_under_acks_all_without_losing_a_record(brokers):
    cluster = start_four_nodes(brokers)
    create_on_1_2_3(cluster, "moving")

    # Data first: node 4 will have to copy all of it before it can join the ISR.
    producer = AckedProducer(cluster)
    for i in range(PRELOADED_RECORDS):
        producer.produce("moving", f"moving-{i:07d}-".encode().ljust(RECORD_BYTES, b"x"))
    producer.flush()

    # A producer keeps writing with acks=all through the whole move.
    stop = threading.Event()
    written = [0]

    def produce_until_stopped():
        i = PRELOADED_RECORDS
        while not stop.is_set():
            producer.produce("moving", f"moving-{i:07d}-".encode().ljust(RECORD_BYTES, b"x"))
            i += 1
            written[0] += 1
            if i % 100 == 0:
                producer.poll()
                stop.wait(0.01)

    thread = threading.Thread(target=produce_until_stopped, daemon=True)
    thread.start()
    wait_until(lambda: written[0] > 1000, timeout_s=30, what="the producer running")

    output = karst_cli(cluster, "reassign", "--topic", "moving", "--partition", "0", "--replicas", "2,3,4").stdout
    assert "Successfully started partition reassignment for moving-0." in output, output
    listed = listed_moves(cluster, "moving")
    assert listed.get(0) == "moving-0: replicas: 2,3,4,1. adding: 4. removing: 1.", listed

    wait_until(lambda: not listed_moves(cluster, "moving"), timeout_s=120, interval_s=0.2,
               what="the move to complete")
    wait_until(lambda: replicas_in_metadata(cluster, "moving") == [2, 3, 4], timeout_s=30,
               what="Metadata to show replicas 2,3,4")
    assert isr_of(cluster, "moving", 0) == [2, 3, 4], describe_replicas(cluster, "moving", 0)
    wait_until(lambda: not cluster.nodes[1].partition_dir("moving", 0).exists(), timeout_s=30,
               what="node 1 to delete its replica's log directory")
    assert ("moving", 0) not in partition_views(cluster.nodes[1])

    wait_until(lambda: written[0] > 2000, timeout_s=30, what="records produced after the move")
    stop.set()
    thread.join(timeout=30)
    producer.flush()
    assert not producer.failed, producer.failed[:3]

    read, duplicates = check_every_ack_at_its_offset(cluster, "moving", producer.acked)
    assert read >= len(producer.acked)
    digests = {node_id: log_digest(cluster.nodes[node_id], "moving", 0) for node_id in (2, 3, 4)}
    assert len(set(digests.values())) == 1, f"replicas differ: {digests}"


def test_a_stuck_move_survives_a_controller_failover_and_cancel_reverts_it(brokers):
    cluster = start_four_nodes(brokers, LONG_SESSION)
    create_on_1_2_3(cluster, "stuck")

    # Node 4 is killed: still registered and unfenced (long session), but it cannot fetch,
    # so the move cannot complete.
    fourth = cluster.nodes[4]
    fourth.kill()
    karst_cli(cluster, "reassign", "--topic", "stuck", "--partition", "0", "--replicas", "1,2,4")
    moving = "stuck-0: replicas: 1,2,4,3. adding: 4. removing: 3."
    assert listed_moves(cluster, "stuck") == {0: moving}
    assert replicas_in_metadata(cluster, "stuck") == [1, 2, 4, 3]
    described = karst_cli(cluster, "describe", "--topic", "stuck").stdout
    assert "\tAdding Replicas: 4\tRemoving Replicas: 3" in described, described

    # The move is in the metadata log: a new controller lists it the same.
    controller = cluster.wait_for_leader()
    cluster.nodes[controller].kill()
    cluster.wait_for_leader(exclude=[controller])
    wait_until(lambda: listed_moves(cluster, "stuck") == {0: moving}, timeout_s=30,
               what="the new controller to list the move")
    cluster.nodes[controller].restart()

    # Cancel: back to the original replicas, node 4 dropped from the replica set.
    output = karst_cli(cluster, "reassign", "--topic", "stuck", "--partition", "0", "--cancel").stdout
    assert "Successfully cancelled partition reassignment for stuck-0." in output, output
    assert listed_moves(cluster, "stuck") == {}
    wait_until(lambda: replicas_in_metadata(cluster, "stuck") == [1, 2, 3], timeout_s=30,
               what="Metadata to show replicas 1,2,3 again")
    wait_isr(cluster, "stuck", 0, [1, 2, 3], timeout_s=60)
    fourth.restart()
    assert ("stuck", 0) not in partition_views(fourth)


def test_bad_reassignments_get_kafkas_error_codes(brokers, tmp_path):
    cluster = start_four_nodes(brokers)
    create_on_1_2_3(cluster, "checked")
    admin = kafka_python_admin(cluster)
    from kafka import TopicPartition
    from kafka.errors import (
        InvalidReplicationAssignmentError,
        NoReassignmentInProgressError,
        UnknownTopicOrPartitionError,
    )

    checked = TopicPartition("checked", 0)
    assert admin.alter_partition_reassignments({checked: None}) == {checked: NoReassignmentInProgressError}
    assert admin.alter_partition_reassignments({checked: [2, 2, 3]}) == {checked: InvalidReplicationAssignmentError}
    assert admin.alter_partition_reassignments({checked: [2, 3, 9]}) == {checked: InvalidReplicationAssignmentError}
    missing = TopicPartition("missing", 0)
    assert admin.alter_partition_reassignments({missing: [1, 2, 3]}) == {missing: UnknownTopicOrPartitionError}
    beyond = TopicPartition("checked", 5)
    assert admin.alter_partition_reassignments({beyond: [1, 2, 3]}) == {beyond: UnknownTopicOrPartitionError}

    # An empty list: kafka-python refuses it before sending, so through Kafka's JSON file.
    plan = tmp_path / "empty.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "checked", "partition": 0, "replicas": []}]}))
    result = karst_cli(cluster, "reassign", "--reassignment-json-file", str(plan), check=False)
    assert result.returncode != 0 and "INVALID_REPLICA_ASSIGNMENT" in result.stderr, result.stderr

    assert admin.list_partition_reassignments() == {}
    assert replicas_in_metadata(cluster, "checked") == [1, 2, 3]


REASSIGN_PARTITIONS = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"  # kafka-reassign-partitions.sh


def test_kafka_reassign_partitions_moves_a_partition_and_verifies_it(brokers, tmp_path):
    from compat import kafka_tool

    cluster = start_four_nodes(brokers)
    create_on_1_2_3(cluster, "tooled")
    producer = AckedProducer(cluster)
    for i in range(1000):
        producer.produce("tooled", f"tooled-{i:05d}".encode())
    producer.flush()

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "tooled", "partition": 0, "replicas": [4, 3, 2], "log_dirs": ["any", "any", "any"]}]}))
    output = kafka_tool(REASSIGN_PARTITIONS, "--bootstrap-server", cluster.bootstrap,
                        "--reassignment-json-file", str(plan), "--execute")
    assert "Successfully started partition reassignment for tooled-0" in output, output

    # --verify would also clear broker-level throttles (not kept by Karst): keep them.
    def verified():
        return "Reassignment of partition tooled-0 is completed." in kafka_tool(
            REASSIGN_PARTITIONS, "--bootstrap-server", cluster.bootstrap, "--reassignment-json-file", str(plan),
            "--verify", "--preserve-throttles")

    wait_until(verified, timeout_s=60, interval_s=0.5, what="kafka-reassign-partitions --verify to report done")
    assert replicas_in_metadata(cluster, "tooled") == [4, 3, 2]
    wait_until(lambda: not cluster.nodes[1].partition_dir("tooled", 0).exists(), timeout_s=30,
               what="node 1 to delete its replica's log directory")
    check_every_ack_at_its_offset(cluster, "tooled", producer.acked)
