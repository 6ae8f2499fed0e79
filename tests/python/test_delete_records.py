"""DeleteRecords and DescribeLogDirs, driven by real admin clients.

DeleteRecords (confluent-kafka `AdminClient.delete_records`): the low watermark moves to the
requested offset (or to the high watermark for OFFSET_END), whole segments below it are
deleted, a consumer reading from the beginning starts exactly there, an offset below the
current start changes nothing, an offset past the high watermark is refused, and the new start
survives a SIGKILL restart (it is checkpointed before the broker answers).

DescribeLogDirs (kafka-python `describe_log_dirs`, which negotiates v4; and a raw v1 request
with null topics, meaning "all"): the broker's one absolute data directory, each partition's
size in bytes as the segment files on disk add up to, and from v4 the volume's total and
usable bytes as statvfs reports them.
"""

import os
import struct
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from karst import (
    RawConnection,
    Reader,
    confluent_admin,
    confluent_consumer,
    confluent_producer,
    create_topic,
    frame,
    request_header_v1,
    watermarks,
)

TOPIC = "delete-records"
PARTITION_COUNT = 2
RECORDS_PER_PARTITION = 1000
RECORD_VALUE_BYTES = 200
# Small segments, so a deletion spans several whole segments that must go from disk.
SEGMENT_BYTES = 16384
ADMIN_TIMEOUT_S = 30
API_DELETE_RECORDS = 21
API_DESCRIBE_LOG_DIRS = 35
ERROR_NONE = 0
ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3


def value_of(partition: int, index: int) -> bytes:
    return f"{partition}:{index:06d}".encode().ljust(RECORD_VALUE_BYTES, b".")


def produce_records(broker, topic, partition, start_index, count):
    producer = confluent_producer(broker, **{"batch.size": 4096, "linger.ms": 1})
    errors = []
    for index in range(start_index, start_index + count):
        producer.produce(topic, value=value_of(partition, index), partition=partition,
                         on_delivery=lambda error, _message: error and errors.append(error))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def delete_records(broker, offsets: dict[int, int], topic=TOPIC) -> dict[int, object]:
    """DeleteRecords for {partition: offset}; {partition: low watermark or KafkaException}."""
    admin = confluent_admin(broker)
    futures = admin.delete_records([TopicPartition(topic, p, offset) for p, offset in offsets.items()],
                                   request_timeout=ADMIN_TIMEOUT_S, operation_timeout=ADMIN_TIMEOUT_S)
    outcomes = {}
    for topic_partition, future in futures.items():
        try:
            outcomes[topic_partition.partition] = future.result(timeout=ADMIN_TIMEOUT_S).low_watermark
        except KafkaException as error:
            outcomes[topic_partition.partition] = error
    return outcomes


def first_offset_from_beginning(broker, topic, partition, timeout_s=20):
    consumer = confluent_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message.offset(), message.value()
        raise AssertionError(f"no record from the beginning of {topic}/{partition} within {timeout_s}s")
    finally:
        consumer.close()


def segment_bases(broker, topic, partition):
    return [int(path.name.split(".")[0]) for path in broker.segment_files(topic, partition)]


def assert_deleted_state(broker, where):
    assert watermarks(broker, TOPIC, 0) == (400, RECORDS_PER_PARTITION), where
    assert watermarks(broker, TOPIC, 1) == (RECORDS_PER_PARTITION, RECORDS_PER_PARTITION), where
    assert first_offset_from_beginning(broker, TOPIC, 0) == (400, value_of(0, 400)), where


def test_delete_records_moves_the_log_start_and_survives_sigkill(brokers):
    broker = brokers.start()
    create_topic(broker, TOPIC, partitions=PARTITION_COUNT, config={"segment.bytes": str(SEGMENT_BYTES)})
    for partition in range(PARTITION_COUNT):
        produce_records(broker, TOPIC, partition, 0, RECORDS_PER_PARTITION)
    segments_before = segment_bases(broker, TOPIC, 0)
    assert len(segments_before) > 5, f"want several segments, got {segments_before}"

    # Partition 0 up to offset 400; partition 1 everything (OFFSET_END = the high watermark).
    assert delete_records(broker, {0: 400, 1: OFFSET_END}) == {0: 400, 1: RECORDS_PER_PARTITION}
    assert_deleted_state(broker, "right after DeleteRecords")

    # Whole segments below the new start are gone from disk; the one holding 400 stays.
    remaining = segment_bases(broker, TOPIC, 0)
    assert remaining[0] <= 400 and all(base > 400 for base in remaining[1:]), remaining
    assert len(remaining) < len(segments_before)

    # An offset below the current start changes nothing and answers the current start.
    assert delete_records(broker, {0: 100}) == {0: 400}

    # SIGKILL: the new start was checkpointed before the answer, so it holds after recovery.
    broker.kill()
    broker.restart()
    assert_deleted_state(broker, "after a SIGKILL restart")

    # Appends continue at the log end; reading from the beginning still starts at 400.
    produce_records(broker, TOPIC, 0, RECORDS_PER_PARTITION, 10)
    assert watermarks(broker, TOPIC, 0) == (400, RECORDS_PER_PARTITION + 10)
    assert first_offset_from_beginning(broker, TOPIC, 0) == (400, value_of(0, 400))


def test_delete_records_refuses_offsets_past_the_high_watermark_and_unknown_partitions(brokers):
    broker = brokers.start()
    create_topic(broker, TOPIC, partitions=1)
    produce_records(broker, TOPIC, 0, 0, 10)

    outcome = delete_records(broker, {0: 11})[0]
    assert isinstance(outcome, KafkaException), outcome
    assert outcome.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, outcome
    assert watermarks(broker, TOPIC, 0) == (0, 10), "a refused DeleteRecords moved the log start"

    # The client refuses partitions it finds no leader for, so ask the broker directly: one
    # request with a hosted partition, a partition the topic lacks, and an unknown topic.
    answers = raw_delete_records_v0(broker, {TOPIC: {0: 5, 7: 1}, "no-such-topic": {0: 1}})
    assert answers == {
        (TOPIC, 0): (5, ERROR_NONE),
        (TOPIC, 7): (-1, ERROR_UNKNOWN_TOPIC_OR_PARTITION),
        ("no-such-topic", 0): (-1, ERROR_UNKNOWN_TOPIC_OR_PARTITION),
    }, answers
    assert watermarks(broker, TOPIC, 0) == (5, 10)

    # Deleting exactly up to the high watermark empties the partition.
    assert delete_records(broker, {0: 10}) == {0: 10}
    assert watermarks(broker, TOPIC, 0) == (10, 10)


def raw_delete_records_v0(broker, offsets: dict[str, dict[int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """Raw DeleteRecords v0: {(topic, partition): (low watermark, error code)}."""
    body = struct.pack(">i", len(offsets))
    for topic, partitions in offsets.items():
        body += string(topic) + struct.pack(">i", len(partitions))
        body += b"".join(struct.pack(">iq", partition, offset) for partition, offset in partitions.items())
    body += struct.pack(">i", ADMIN_TIMEOUT_S * 1000)
    with RawConnection(broker) as connection:
        response = Reader(connection.request(frame(request_header_v1(API_DELETE_RECORDS, 0, 9) + body)))
    assert response.unpack(">i") == 9
    response.unpack(">i")  # throttle_time_ms
    answers = {}
    for _ in range(response.unpack(">i")):
        topic = response.take(response.unpack(">h")).decode()
        for _ in range(response.unpack(">i")):
            partition, low_watermark, error_code = response.unpack(">iqh")
            answers[(topic, partition)] = (low_watermark, error_code)
    assert response.position == len(response.data), "trailing bytes in DeleteRecords v0 response"
    return answers


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def on_disk_bytes(broker, topic, partition):
    return sum(path.stat().st_size for path in broker.segment_files(topic, partition))


def test_describe_log_dirs_reports_the_data_dir_partition_sizes_and_volume_space(brokers):
    from kafka import KafkaAdminClient

    broker = brokers.start()
    create_topic(broker, TOPIC, partitions=PARTITION_COUNT, config={"segment.bytes": str(SEGMENT_BYTES)})
    create_topic(broker, "other", partitions=1)
    produce_records(broker, TOPIC, 0, 0, 300)
    produce_records(broker, TOPIC, 1, 0, 30)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        described = admin.describe_log_dirs({TOPIC: [0, 1]})
    finally:
        admin.close()
    assert len(described) == 1, described
    results = described[0]["log_dirs"]
    assert len(results) == 1, results
    result = results[0]
    assert result["error_code"] == 0, result
    assert result["log_dir"] == os.path.abspath(broker.data_dir), result
    sizes = {(topic["name"], partition["partition_index"]): partition
             for topic in result["topics"] for partition in topic["partitions"]}
    assert set(sizes) == {(TOPIC, 0), (TOPIC, 1)}, f"asked for {TOPIC} only: {sizes}"
    for partition in range(PARTITION_COUNT):
        reported = sizes[(TOPIC, partition)]
        assert reported["partition_size"] == on_disk_bytes(broker, TOPIC, partition) > 0, reported
        assert reported["offset_lag"] == 0 and reported["is_future_key"] is False, reported

    # v4: the volume's total bytes exactly, usable bytes within what a busy disk may move.
    volume = os.statvfs(broker.data_dir)
    assert result["total_bytes"] == volume.f_blocks * volume.f_frsize, result
    assert abs(result["usable_bytes"] - volume.f_bavail * volume.f_frsize) < 256 * 1024 * 1024, result


def describe_log_dirs_v1_all(broker) -> list[tuple[str, int, int]]:
    """Raw DescribeLogDirs v1 with null topics: [(log dir, error, {(topic, partition): size})]."""
    body = struct.pack(">i", -1)  # topics: null = every partition
    with RawConnection(broker) as connection:
        response = Reader(connection.request(frame(request_header_v1(API_DESCRIBE_LOG_DIRS, 1, 5) + body)))
    assert response.unpack(">i") == 5
    response.unpack(">i")  # throttle_time_ms
    results = []
    for _ in range(response.unpack(">i")):
        error_code = response.unpack(">h")
        log_dir = response.take(response.unpack(">h")).decode()
        sizes = {}
        for _ in range(response.unpack(">i")):
            topic = response.take(response.unpack(">h")).decode()
            for _ in range(response.unpack(">i")):
                partition, size, offset_lag, is_future = response.unpack(">iqqb")
                assert offset_lag == 0 and is_future == 0
                sizes[(topic, partition)] = size
        results.append((log_dir, error_code, sizes))
    assert response.position == len(response.data), "trailing bytes in DescribeLogDirs v1 response"
    return results


def test_describe_log_dirs_with_null_topics_lists_every_partition_and_sees_deletions(brokers):
    broker = brokers.start()
    create_topic(broker, TOPIC, partitions=PARTITION_COUNT, config={"segment.bytes": str(SEGMENT_BYTES)})
    create_topic(broker, "other", partitions=1)
    produce_records(broker, TOPIC, 0, 0, RECORDS_PER_PARTITION)

    [(log_dir, error_code, sizes)] = describe_log_dirs_v1_all(broker)
    assert (log_dir, error_code) == (os.path.abspath(broker.data_dir), 0)
    assert set(sizes) == {(TOPIC, 0), (TOPIC, 1), ("other", 0)}, sizes
    assert sizes[(TOPIC, 0)] == on_disk_bytes(broker, TOPIC, 0) > RECORDS_PER_PARTITION * RECORD_VALUE_BYTES
    assert sizes[(TOPIC, 1)] == 0 and sizes[("other", 0)] == 0, sizes

    # DeleteRecords drops whole segments: the reported size shrinks with the files.
    assert delete_records(broker, {0: OFFSET_END}) == {0: RECORDS_PER_PARTITION}
    [(_, _, after)] = describe_log_dirs_v1_all(broker)
    assert after[(TOPIC, 0)] == on_disk_bytes(broker, TOPIC, 0) < sizes[(TOPIC, 0)] // 4, (sizes, after)


@pytest.mark.parametrize("offset", [OFFSET_END, 0])
def test_delete_records_on_an_empty_partition_keeps_it_empty(brokers, offset):
    broker = brokers.start()
    create_topic(broker, TOPIC, partitions=1)
    assert delete_records(broker, {0: offset}) == {0: 0}
    assert watermarks(broker, TOPIC, 0) == (0, 0)
