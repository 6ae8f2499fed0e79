"""ListOffsets: earliest, latest, by timestamp and max timestamp, through two librdkafka APIs."""

import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

from karst import confluent_admin, confluent_consumer, confluent_producer, create_topic

# Ten records one second apart, a day in the past (well inside any timestamp bounds).
RECORD_COUNT = 10
STEP_MS = 1000


def produce_with_timestamps(broker, topic, timestamps, flush_each):
    producer = confluent_producer(broker, **{"linger.ms": 50})
    errors = []
    offsets = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(error)
        else:
            offsets.append(message.offset())

    for index, timestamp in enumerate(timestamps):
        producer.produce(topic, value=f"record-{index}".encode(), partition=0, timestamp=timestamp,
                         on_delivery=on_delivery)
        if flush_each:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0
    assert errors == []
    assert offsets == list(range(len(timestamps)))


def offsets_for_times(broker, topic, timestamp):
    consumer = confluent_consumer(broker)
    try:
        [result] = consumer.offsets_for_times([TopicPartition(topic, 0, timestamp)], timeout=10)
        assert result.error is None, result.error
        return result.offset
    finally:
        consumer.close()


def admin_list_offset(broker, topic, spec):
    partition = TopicPartition(topic, 0)
    admin = confluent_admin(broker)  # must outlive the future: a dropped client never completes it
    futures = admin.list_offsets({partition: spec}, request_timeout=10)
    info = futures[partition].result(timeout=15)
    return info.offset, info.timestamp


def test_offsets_for_times_returns_first_offset_at_or_after_timestamp(brokers):
    broker = brokers.start()
    topic = "offsets-by-time"
    create_topic(broker, topic, partitions=1)
    base = int(time.time() * 1000) - 24 * 3600 * 1000
    timestamps = [base + i * STEP_MS for i in range(RECORD_COUNT)]
    # One produce call, one batch: the lookup must find records inside a batch, not just batch starts.
    produce_with_timestamps(broker, topic, timestamps, flush_each=False)

    assert offsets_for_times(broker, topic, base - 60_000) == 0, "before every record"
    assert offsets_for_times(broker, topic, timestamps[3]) == 3, "exact match"
    assert offsets_for_times(broker, topic, timestamps[3] + STEP_MS // 2) == 4, "between records 3 and 4"
    assert offsets_for_times(broker, topic, timestamps[0] + 1) == 1
    assert offsets_for_times(broker, topic, timestamps[-1]) == RECORD_COUNT - 1, "exact match on the last"
    assert offsets_for_times(broker, topic, timestamps[-1] + 1) == -1, "after every record: no offset"

    for spec, expected in ((OffsetSpec.for_timestamp(timestamps[6] - 1), 6),
                           (OffsetSpec.for_timestamp(timestamps[6]), 6),
                           (OffsetSpec.for_timestamp(timestamps[6] + 1), 7)):
        offset, _ = admin_list_offset(broker, topic, spec)
        assert offset == expected, f"AdminClient.list_offsets({spec}) = {offset}"


def test_earliest_latest_and_max_timestamp_offsets(brokers):
    broker = brokers.start()
    topic = "offsets-earliest-latest"
    create_topic(broker, topic, partitions=1)

    consumer = confluent_consumer(broker)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 0)
    finally:
        consumer.close()
    assert admin_list_offset(broker, topic, OffsetSpec.earliest())[0] == 0
    assert admin_list_offset(broker, topic, OffsetSpec.latest())[0] == 0

    # The largest timestamp sits in the middle (offset 2); each record is its own batch so the
    # answer is unambiguous.
    base = int(time.time() * 1000) - 3600 * 1000
    timestamps = [base, base + 1000, base + 9000, base + 2000, base + 3000]
    produce_with_timestamps(broker, topic, timestamps, flush_each=True)

    consumer = confluent_consumer(broker)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 5)
    finally:
        consumer.close()
    assert admin_list_offset(broker, topic, OffsetSpec.earliest())[0] == 0
    assert admin_list_offset(broker, topic, OffsetSpec.latest())[0] == 5
    assert admin_list_offset(broker, topic, OffsetSpec.max_timestamp()) == (2, base + 9000)
