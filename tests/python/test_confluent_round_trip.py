"""confluent-kafka (librdkafka): 100,000 keyed records with headers per compression codec,
read back exactly, and still exactly after a SIGKILL restart and after a SIGTERM restart."""

import functools
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from karst import Record, confluent_producer, consume_partitions, create_topic

RECORD_COUNT = 100_000
PARTITION_COUNT = 6
# Records appended after the SIGKILL restart, before the SIGTERM restart.
APPENDED_COUNT = 5_000
PRODUCE_TIMEOUT_S = 180
CONSUME_TIMEOUT_S = 180


def record_content(index: int):
    key = f"key-{index % 1009}".encode()
    value = (f"value-{index:06d}-" + "abcdefghij" * (index % 23)).encode()
    headers = [("index", str(index).encode()), ("source", b"karst-e2e")]
    if index % 7 == 0:
        headers.append(("null-valued", None))
    return key, value, headers


def produce_all(broker, topic, compression, indexes=range(RECORD_COUNT)):
    """Produce the records numbered `indexes` with acks=all; return the acknowledged records per
    partition in production order, as the delivery reports describe them."""
    producer = confluent_producer(
        broker, **{"compression.type": compression, "batch.num.messages": 10000, "linger.ms": 5})
    delivered = {partition: [] for partition in range(PARTITION_COUNT)}
    errors = []

    # Distinct CreateTime timestamps, one millisecond apart, starting now.
    base_timestamp_ms = int(time.time() * 1000)

    def on_delivery(index, error, message):
        if error is not None:
            errors.append(error)
            return
        # Expected content is what we produced; the position is what the broker acknowledged.
        # The acknowledged timestamp must be our CreateTime (a CreateTime topic answers
        # log_append_time -1, so librdkafka reports the record's own timestamp).
        key, value, headers = record_content(index)
        timestamp = (TIMESTAMP_CREATE_TIME, base_timestamp_ms + index)
        if message.timestamp() != timestamp:
            errors.append(f"record {index}: delivery report timestamp {message.timestamp()}, produced {timestamp}")
        delivered[message.partition()].append(Record(
            partition=message.partition(),
            offset=message.offset(),
            key=key,
            value=value,
            headers=tuple(headers),
            timestamp=base_timestamp_ms + index,
        ))

    deadline = time.monotonic() + PRODUCE_TIMEOUT_S
    for index in indexes:
        key, value, headers = record_content(index)
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers,
                                 timestamp=base_timestamp_ms + index,
                                 on_delivery=functools.partial(on_delivery, index))
                break
            except BufferError:
                assert time.monotonic() < deadline, "producer queue stayed full"
                producer.poll(0.05)
        if index % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert remaining == 0, f"{remaining} records not delivered within {PRODUCE_TIMEOUT_S}s"
    assert errors == [], f"delivery errors: {errors[:5]} ({len(errors)} total)"
    assert sum(len(records) for records in delivered.values()) == len(indexes)
    return delivered


def assert_log_matches(broker, topic, delivered, phase):
    end_offsets = {partition: len(records) for partition, records in delivered.items()}
    consumed = consume_partitions(broker, topic, end_offsets, timeout_s=CONSUME_TIMEOUT_S)
    for partition, expected in delivered.items():
        got = consumed[partition]
        offsets = [record.offset for record in got]
        assert offsets == list(range(len(expected))), (
            f"{phase}: partition {partition} offsets are not 0..{len(expected) - 1} in order "
            f"(first 10: {offsets[:10]}, count {len(offsets)})")
        if got != expected:
            first_difference = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            pytest.fail(f"{phase}: partition {partition} differs at offset {first_difference}: "
                        f"consumed {got[first_difference]} but produced {expected[first_difference]}")


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_hundred_thousand_records_round_trip_and_survive_sigkill_and_sigterm(brokers, compression):
    broker = brokers.start()
    topic = f"round-trip-{compression}"
    create_topic(broker, topic, partitions=PARTITION_COUNT)

    delivered = produce_all(broker, topic, compression)

    # Delivery reports: per partition, offsets are contiguous from 0 in production order.
    for partition, records in delivered.items():
        assert records, f"partition {partition} received no records (keys should spread)"
        assert [r.offset for r in records] == list(range(len(records))), (
            f"partition {partition}: acknowledged offsets are not contiguous from 0 in production order")

    assert_log_matches(broker, topic, delivered, "after produce")

    broker.kill()
    broker.restart()
    assert_log_matches(broker, topic, delivered, "after SIGKILL and restart")

    # Appends after recovery continue each partition exactly where the acknowledged log ended.
    appended = produce_all(broker, topic, compression, indexes=range(RECORD_COUNT, RECORD_COUNT + APPENDED_COUNT))
    for partition, records in appended.items():
        assert [r.offset for r in records] == list(range(len(delivered[partition]),
                                                         len(delivered[partition]) + len(records))), (
            f"partition {partition}: offsets after recovery do not continue the log")
        delivered[partition].extend(records)

    exit_code = broker.terminate()
    assert exit_code == 0, f"SIGTERM shutdown exited with {exit_code}"
    broker.restart()
    assert_log_matches(broker, topic, delivered, "after SIGTERM and restart")



def test_zero_copy_fetch_when_turned_on_serves_the_same_records(brokers):
    """`fetch.zero.copy.enable=true` (off by default: it skips the read-side CRC check) sends
    verified segment bytes with sendfile; the records read back must be the same."""
    broker = brokers.start({"fetch.zero.copy.enable": "true"})
    topic = "round-trip-zero-copy"
    create_topic(broker, topic, partitions=PARTITION_COUNT)
    delivered = produce_all(broker, topic, "none", indexes=range(20_000))
    assert_log_matches(broker, topic, delivered, "zero-copy, after produce")
    broker.kill()
    broker.restart()
    # After a restart nothing is verified yet: the first read checks, later ones send.
    assert_log_matches(broker, topic, delivered, "zero-copy, after SIGKILL and restart (first read)")
    assert_log_matches(broker, topic, delivered, "zero-copy, after SIGKILL and restart (second read)")
