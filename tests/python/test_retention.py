"""Retention by size and by time: whole old segments are deleted, the log start offset moves,
and a consumer reading from the beginning starts exactly at the new start offset."""

import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from karst import confluent_consumer, confluent_producer, create_topic, wait_until, watermarks

SEGMENT_BYTES = 16384
RETENTION_BYTES = 65536
RECORD_VALUE_BYTES = 1000
RETENTION_CHECK_INTERVAL_MS = 500
# How long retention gets to act: a handful of check intervals.
RETENTION_DEADLINE_S = 15
# Time retention: an hour. Records stamped a day ago are far past it; records produced by the
# test are far inside it, so they must survive every retention pass while the test runs.
RETENTION_MS = 3600 * 1000


def start_broker(brokers):
    return brokers.start({"log.retention.check.interval.ms": RETENTION_CHECK_INTERVAL_MS})


def produce_values(broker, topic, count, timestamp_ms=None, start_index=0):
    # Small batches (a few records each) so that segments hold several batches and roll often.
    producer = confluent_producer(broker, **{"batch.size": 4096, "linger.ms": 1})
    errors = []
    for index in range(start_index, start_index + count):
        value = f"{index:08d}".encode().ljust(RECORD_VALUE_BYTES, b".")
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        producer.produce(topic, value=value, partition=0,
                         on_delivery=lambda error, _message: error and errors.append(error), **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def base_offset_of(segment_path):
    return int(segment_path.name.split(".")[0])


def first_record_from_beginning(broker, topic):
    consumer = confluent_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message
        raise AssertionError("no record from the beginning of the log within 20s")
    finally:
        consumer.close()


def assert_start_offset_consistent(broker, topic):
    """The log start offset is the first remaining segment's base offset (once the files of
    deleted segments are gone: the start offset may move first), and a consumer reading from
    the beginning gets exactly that offset first. Returns the start offset."""

    def settled():
        low, _ = watermarks(broker, topic, 0)
        segments = broker.segment_files(topic, 0)
        return (low,) if segments and base_offset_of(segments[0]) == low else None

    try:
        (low,) = wait_until(settled, timeout_s=RETENTION_DEADLINE_S, what="segment files to match the start offset")
    except AssertionError as error:
        raise AssertionError(f"{error}: start offset {watermarks(broker, topic, 0)[0]}, segments "
                             f"{[s.name for s in broker.segment_files(topic, 0)]}") from None
    first = first_record_from_beginning(broker, topic)
    assert first.offset() == low, f"consumer from OFFSET_BEGINNING got offset {first.offset()}, log starts at {low}"
    assert first.value().startswith(f"{low:08d}".encode()), "the record at the start offset has its original value"
    return low


def test_size_retention_deletes_old_segments_and_moves_the_start_offset(brokers):
    broker = start_broker(brokers)
    topic = "retention-by-size"
    create_topic(broker, topic, partitions=1, config={
        "segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(RETENTION_BYTES)})
    record_count = 1000  # ~1 MB: about 60 segments' worth
    produce_values(broker, topic, record_count)
    segments_needed = record_count * RECORD_VALUE_BYTES // SEGMENT_BYTES

    low, high = wait_until(lambda: (lambda w: w if w[0] > 0 else None)(watermarks(broker, topic, 0)),
                           timeout_s=RETENTION_DEADLINE_S, what="log start offset above 0")
    assert high == record_count

    # Wait for the retention pass to finish: it keeps about RETENTION_BYTES of segments.
    # (A segment holds 3-4 batches of ~4 KB; whole segments go while the rest stays >= retention.bytes.)
    most_segments_kept = 2 * RETENTION_BYTES // SEGMENT_BYTES
    wait_until(lambda: len(broker.segment_files(topic, 0)) <= most_segments_kept, timeout_s=RETENTION_DEADLINE_S,
               what=f"at most {most_segments_kept} segments (data needed {segments_needed})")
    low = assert_start_offset_consistent(broker, topic)
    assert 0 < low < record_count
    kept_bytes = sum(path.stat().st_size for path in broker.segment_files(topic, 0))
    assert kept_bytes >= RETENTION_BYTES - SEGMENT_BYTES, f"retention deleted too much: {kept_bytes} bytes kept"


def test_time_retention_deletes_segments_of_old_records(brokers):
    broker = start_broker(brokers)
    topic = "retention-by-time"
    create_topic(broker, topic, partitions=1, config={
        "segment.bytes": str(SEGMENT_BYTES), "retention.ms": str(RETENTION_MS)})
    old_count = 300
    day_ago_ms = int(time.time() * 1000) - 24 * 3600 * 1000
    produce_values(broker, topic, old_count, timestamp_ms=day_ago_ms)
    fresh_count = 5
    produce_values(broker, topic, fresh_count, start_index=old_count)
    segments_written = old_count * RECORD_VALUE_BYTES // SEGMENT_BYTES

    low, high = wait_until(lambda: (lambda w: w if w[0] > 0 else None)(watermarks(broker, topic, 0)),
                           timeout_s=RETENTION_DEADLINE_S, what="log start offset above 0")
    assert high == old_count + fresh_count
    # Every segment whose newest record is a day old goes; the segment holding fresh records stays.
    wait_until(lambda: len(broker.segment_files(topic, 0)) <= 3, timeout_s=RETENTION_DEADLINE_S,
               what=f"old segments deleted (about {segments_written} were written)")
    low = assert_start_offset_consistent(broker, topic)
    assert 0 < low <= old_count, f"start offset {low}: fresh records (from {old_count}) must survive"
    assert watermarks(broker, topic, 0)[1] == old_count + fresh_count
