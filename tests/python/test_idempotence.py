"""The idempotent producer: InitProducerId, duplicate detection, sequence and epoch checks,
and producer state that survives a SIGKILL.

Real clients with idempotence on (confluent-kafka with `enable.idempotence=true`, kafka-python
3.x with its defaults) must round-trip exactly. A raw client then replays batches by hand:
the same producer id, epoch and sequence must get the original offset and be stored once;
a gap must be OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch INVALID_PRODUCER_EPOCH.
"""

import json
import subprocess
import time

import pytest

from karst import (
    Cluster,
    ERROR_INVALID_PRODUCER_EPOCH,
    ERROR_NONE,
    ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER,
    ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    RawConnection,
    confluent_producer,
    consume_partitions,
    create_topic,
    init_producer_id_v1,
    raw_produce_v9,
    record_batch,
    wait_until,
    watermarks,
)

RECORD_COUNT = 20_000
PARTITION_COUNT = 3
CONSUME_TIMEOUT_S = 120
NOW_MS = int(time.time() * 1000)
# InitProducerId's answer while the broker has no producer-id block and cannot get one yet
# (not registered, no controller): retriable.
ERROR_COORDINATOR_LOAD_IN_PROGRESS = 14
# Ids per block the controller allocates (src/controller/producer_ids.rs).
PRODUCER_ID_BLOCK_SIZE = 1000
FAST_LIFECYCLE = {"broker.heartbeat.interval.ms": 200, "broker.session.timeout.ms": 2000}


def produce_idempotent(connection, correlation_id, topic, producer_id, epoch, sequence, values):
    """One idempotent batch of `values` over a raw connection; the partition response."""
    batch = record_batch(values, NOW_MS, producer_id=producer_id, producer_epoch=epoch,
                         base_sequence=sequence)
    return raw_produce_v9(connection, correlation_id, topic, 0, batch)


def consume_values(broker, topic, end_offset):
    records = consume_partitions(broker, topic, {0: end_offset}, timeout_s=60)[0]
    return [record.value for record in records]


def test_confluent_idempotent_producer_round_trips_exactly(brokers):
    broker = brokers.start()
    topic = "idempotent-confluent"
    create_topic(broker, topic, partitions=PARTITION_COUNT)
    producer = confluent_producer(broker, **{"enable.idempotence": True, "linger.ms": 2})
    delivered = {}
    failures = []

    def on_delivery(error, message):
        if error is not None:
            failures.append(error)
        else:
            delivered[(message.partition(), message.offset())] = message.value()

    for index in range(RECORD_COUNT):
        producer.produce(topic, key=f"k{index % 97}".encode(), value=f"v{index}".encode(),
                         on_delivery=on_delivery)
        if index % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "records still queued after 60 s"
    assert not failures, failures[:5]
    assert len(delivered) == RECORD_COUNT

    end_offsets = {p: 1 + max((o for (q, o) in delivered if q == p), default=-1)
                   for p in range(PARTITION_COUNT)}
    assert sum(end_offsets.values()) == RECORD_COUNT, f"offsets have gaps or duplicates: {end_offsets}"
    consumed = consume_partitions(broker, topic, end_offsets, timeout_s=CONSUME_TIMEOUT_S)
    values = []
    for partition, records in consumed.items():
        assert [r.offset for r in records] == list(range(end_offsets[partition])), partition
        for record in records:
            assert delivered[(partition, record.offset)] == record.value
        values.extend(record.value for record in records)
    assert sorted(values) == sorted(f"v{index}".encode() for index in range(RECORD_COUNT))


def test_kafka_python_with_default_settings_round_trips_exactly(brokers):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker = brokers.start()
    topic = "idempotent-kafka-python"
    create_topic(broker, topic, partitions=PARTITION_COUNT)
    # kafka-python 3.x defaults: enable_idempotence=True, acks=all.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert producer.config["enable_idempotence"], "kafka-python's default is idempotent"
    count = RECORD_COUNT // 4
    futures = [producer.send(topic, value=f"v{index}".encode()) for index in range(count)]
    producer.flush(timeout=60)
    placed = {}
    for index, future in enumerate(futures):
        metadata = future.get(timeout=30)
        placed[(metadata.partition, metadata.offset)] = f"v{index}".encode()
    producer.close(timeout=10)
    assert len(placed) == count

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITION_COUNT)]
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)
        consumed = {}
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(consumed) < count:
            assert time.monotonic() < deadline, f"consumed only {len(consumed)} of {count}"
            for partition, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    key = (partition.partition, record.offset)
                    assert key not in consumed, f"offset delivered twice: {key}"
                    consumed[key] = record.value
    finally:
        consumer.close()
    assert consumed == placed


def test_a_replayed_batch_gets_its_original_offset_and_is_stored_once(brokers):
    broker = brokers.start()
    topic = "idempotent-replay"
    create_topic(broker, topic)
    with RawConnection(broker) as connection:
        error, producer_id, epoch = init_producer_id_v1(connection, 1)
        assert (error, epoch) == (ERROR_NONE, 0) and producer_id >= 0

        first = produce_idempotent(connection, 2, topic, producer_id, epoch, 0, [b"a", b"b"])
        second = produce_idempotent(connection, 3, topic, producer_id, epoch, 2, [b"c"])
        assert (first.error_code, first.base_offset) == (ERROR_NONE, 0)
        assert (second.error_code, second.base_offset) == (ERROR_NONE, 2)

        # Replays of both: acknowledged with the original offsets, nothing written.
        for correlation_id, (sequence, values, offset) in enumerate(
                [(0, [b"a", b"b"], 0), (2, [b"c"], 2), (0, [b"a", b"b"], 0)], start=4):
            replay = produce_idempotent(connection, correlation_id, topic, producer_id, epoch, sequence, values)
            assert (replay.error_code, replay.base_offset) == (ERROR_NONE, offset), replay
        assert watermarks(broker, topic, 0) == (0, 3)

        # The producer goes on where it left off.
        third = produce_idempotent(connection, 10, topic, producer_id, epoch, 3, [b"d"])
        assert (third.error_code, third.base_offset) == (ERROR_NONE, 3)
    assert consume_values(broker, topic, 4) == [b"a", b"b", b"c", b"d"]


def test_a_sequence_gap_is_out_of_order_and_writes_nothing(brokers):
    broker = brokers.start()
    topic = "idempotent-gap"
    create_topic(broker, topic)
    with RawConnection(broker) as connection:
        _, producer_id, epoch = init_producer_id_v1(connection, 1)
        assert produce_idempotent(connection, 2, topic, producer_id, epoch, 0, [b"a"]).error_code == ERROR_NONE
        gap = produce_idempotent(connection, 3, topic, producer_id, epoch, 5, [b"lost?"])
        assert gap.error_code == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER, gap
        assert gap.error_message and "sequence" in gap.error_message
        assert watermarks(broker, topic, 0) == (0, 1)
        # The next sequence is still accepted.
        assert produce_idempotent(connection, 4, topic, producer_id, epoch, 1, [b"b"]).base_offset == 1


def test_an_older_epoch_is_fenced(brokers):
    broker = brokers.start()
    topic = "idempotent-fenced"
    create_topic(broker, topic)
    with RawConnection(broker) as connection:
        _, producer_id, _ = init_producer_id_v1(connection, 1)
        assert produce_idempotent(connection, 2, topic, producer_id, 0, 0, [b"old"]).error_code == ERROR_NONE
        # A newer instance bumps the epoch (and starts at sequence 0) ...
        assert produce_idempotent(connection, 3, topic, producer_id, 1, 0, [b"new"]).base_offset == 1
        # ... which fences the old one.
        fenced = produce_idempotent(connection, 4, topic, producer_id, 0, 1, [b"zombie"])
        assert fenced.error_code == ERROR_INVALID_PRODUCER_EPOCH, fenced
        # A new epoch that does not start at sequence 0 is out of order.
        skipped = produce_idempotent(connection, 5, topic, producer_id, 2, 7, [b"skip"])
        assert skipped.error_code == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER, skipped
    assert consume_values(broker, topic, 2) == [b"old", b"new"]


def test_init_producer_id_hands_out_distinct_ids_and_refuses_transactional_ids(brokers):
    broker = brokers.start()
    with RawConnection(broker) as connection:
        ids = set()
        for correlation_id in range(1, 51):
            error, producer_id, epoch = init_producer_id_v1(connection, correlation_id)
            assert (error, epoch) == (ERROR_NONE, 0)
            ids.add(producer_id)
        assert len(ids) == 50
        error, producer_id, _ = init_producer_id_v1(connection, 99, transactional_id="txn-1")
        assert (error, producer_id) == (ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1)
    # A restarted broker asks for a new block: no id is handed out twice.
    broker.kill()
    broker.start()
    with RawConnection(broker) as connection:
        error, producer_id, _ = init_producer_id_v1(connection, 1)
        assert error == ERROR_NONE and producer_id not in ids and producer_id > max(ids)


@pytest.mark.parametrize("segment_bytes", [None, 1024], ids=["no-snapshot", "snapshots-at-rolls"])
def test_producer_state_survives_sigkill_and_a_replay_is_still_detected(brokers, segment_bytes):
    broker = brokers.start()
    topic = "idempotent-restart"
    create_topic(broker, topic, config={"segment.bytes": str(segment_bytes)} if segment_bytes else None)
    batches = 40
    with RawConnection(broker) as connection:
        _, producer_id, epoch = init_producer_id_v1(connection, 1)
        for index in range(batches):
            values = [f"r{index}-{n}".encode() * 8 for n in range(2)]
            response = produce_idempotent(connection, 2 + index, topic, producer_id, epoch, 2 * index, values)
            assert (response.error_code, response.base_offset) == (ERROR_NONE, 2 * index)
    if segment_bytes:
        snapshots = list(broker.partition_dir(topic, 0).glob("*.snapshot"))
        assert snapshots, "segment rolls write producer-state snapshots"

    broker.kill()
    broker.start()
    with RawConnection(broker) as connection:
        # Each of the last five batches is recognised after the restart.
        for index in range(batches - 5, batches):
            values = [f"r{index}-{n}".encode() * 8 for n in range(2)]
            replay = produce_idempotent(connection, 100 + index, topic, producer_id, epoch, 2 * index, values)
            assert (replay.error_code, replay.base_offset) == (ERROR_NONE, 2 * index), replay
        gap = produce_idempotent(connection, 200, topic, producer_id, epoch, 2 * batches + 1, [b"gap"])
        assert gap.error_code == ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER
        following = produce_idempotent(connection, 201, topic, producer_id, epoch, 2 * batches, [b"next"])
        assert (following.error_code, following.base_offset) == (ERROR_NONE, 2 * batches)
    assert watermarks(broker, topic, 0) == (0, 2 * batches + 1)

    # A clean restart (SIGTERM writes a snapshot at the log end) keeps it too.
    assert broker.terminate() == 0
    broker.start()
    with RawConnection(broker) as connection:
        replay = produce_idempotent(connection, 300, topic, producer_id, epoch, 2 * batches, [b"next"])
        assert (replay.error_code, replay.base_offset) == (ERROR_NONE, 2 * batches)
    assert watermarks(broker, topic, 0) == (0, 2 * batches + 1)


def test_karst_producers_describe_shows_the_producer(brokers, karst_bin):
    broker = brokers.start()
    topic = "idempotent-describe"
    create_topic(broker, topic, partitions=2)
    with RawConnection(broker) as connection:
        _, producer_id, epoch = init_producer_id_v1(connection, 1)
        assert produce_idempotent(connection, 2, topic, producer_id, epoch, 0, [b"a", b"b", b"c"]).error_code == 0
    result = subprocess.run(
        [str(karst_bin), "producers", "describe", "--topic", topic, "--bootstrap-server", broker.bootstrap],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["Partition", "ProducerId", "ProducerEpoch", "LastSequence"]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 1, result.stdout
    partition, described_id, described_epoch, last_sequence, last_timestamp, _, txn_start = rows[0]
    assert (int(partition), int(described_id), int(described_epoch), int(last_sequence)) == (
        0, producer_id, epoch, 2)
    assert int(last_timestamp) == NOW_MS
    assert int(txn_start) == -1
    # The operators' partition view counts the producers too.
    status, body = broker.http_get("/v1/partitions")
    assert status == 200
    producers = {p["partition"]: p["producers"] for p in json.loads(body)["partitions"] if p["topic"] == topic}
    assert producers == {0: 1, 1: 0}


def init_producer_id_when_ready(node, timeout_s=30.0):
    """A producer id from `node`, retrying while it answers COORDINATOR_LOAD_IN_PROGRESS."""
    def attempt():
        with RawConnection(node) as connection:
            error, producer_id, epoch = init_producer_id_v1(connection, 1)
        assert error in (ERROR_NONE, ERROR_COORDINATOR_LOAD_IN_PROGRESS), error
        return (producer_id, epoch) if error == ERROR_NONE else None

    producer_id, epoch = wait_until(attempt, timeout_s=timeout_s, interval_s=0.1,
                                    what=f"a producer id from node {node.node_id}")
    assert epoch == 0
    return producer_id


def test_producer_id_blocks_are_never_reused_across_a_controller_failover(brokers):
    cluster = Cluster(brokers, settings=FAST_LIFECYCLE).start()
    old_leader = cluster.wait_for_leader()
    # Each node takes its own block from the controller.
    before = {node_id: init_producer_id_when_ready(node) for node_id, node in cluster.nodes.items()}
    blocks_before = {producer_id // PRODUCER_ID_BLOCK_SIZE for producer_id in before.values()}
    assert len(blocks_before) == 3, before

    # SIGKILL the controller; a new one takes over from the Raft log.
    cluster.nodes[old_leader].kill()
    survivors = [node for node_id, node in cluster.nodes.items() if node_id != old_leader]
    cluster.wait_for_leader(survivors, exclude=[old_leader])
    # Nodes that restart have no block: they ask the new controller for one. One survivor
    # is SIGKILLed and restarted too, and the old controller comes back.
    survivors[0].kill()
    survivors[0].start()
    cluster.nodes[old_leader].start()
    after = {node.node_id: init_producer_id_when_ready(node)
             for node in (survivors[0], cluster.nodes[old_leader])}
    blocks_after = {producer_id // PRODUCER_ID_BLOCK_SIZE for producer_id in after.values()}
    assert len(blocks_after) == 2, after
    assert not blocks_after & blocks_before, (before, after)
    assert min(after.values()) >= PRODUCER_ID_BLOCK_SIZE * 3, (before, after)
    # The survivor that kept running still hands out ids from its first block.
    kept = init_producer_id_when_ready(survivors[1])
    assert kept // PRODUCER_ID_BLOCK_SIZE == before[survivors[1].node_id] // PRODUCER_ID_BLOCK_SIZE
    assert kept != before[survivors[1].node_id]
