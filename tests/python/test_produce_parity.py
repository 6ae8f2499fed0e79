"""Produce-path parity with Kafka (issue 12): a topic's `compression.type` with broker-side
recompression, per-record errors (KIP-467), LogAppendTime and the timestamp bounds.

What the broker stored is read from its segment files (`stored_batches`): the codec and
timestamp type of every batch as written, and its CRC. Records are read back with real
clients (confluent-kafka = librdkafka, kafka-python). The KIP-467 delivery reports are
compared with Apache Kafka's (`scripts/kafka-peer`) in the same test.
"""

from __future__ import annotations

import gzip
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from compat import KAFKA_PEER, PREPARE_TIMEOUT_S, kafka_classpath
from karst import (
    ERROR_NONE, RawConnection, build_batch, confluent_admin, confluent_consumer, confluent_producer,
    consume_partitions, create_topic, encode_record, raw_produce_v9, record_batch, stored_batches,
    wait_until, watermarks,
)

# compression.type values and the codec id a batch stored under each carries.
TOPIC_CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# librdkafka's compression.type values, by codec id.
PRODUCER_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
RECORDS_PER_PRODUCER = 40

ERROR_INVALID_RECORD = 87
ERROR_INVALID_TIMESTAMP = 32
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def broker(module_brokers):
    return module_brokers.start(name="produce-parity")


def records_for(codec: str) -> list[tuple[bytes, bytes, list]]:
    """Keyed records with a header, compressible enough for every codec to shrink them."""
    return [(f"{codec}-key-{index}".encode(), f"{codec} value {index} ".encode() * 8,
             [("index", str(index).encode())]) for index in range(RECORDS_PER_PRODUCER)]


def produce_with_confluent(broker, topic: str, codec: str, records) -> None:
    producer = confluent_producer(broker, **{"compression.type": codec, "linger.ms": 20})
    failures = []
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, partition=0,
                         on_delivery=lambda error, _message: error and failures.append(error))
    assert producer.flush(30) == 0, f"{codec}: undelivered records"
    assert not failures, f"{codec}: {failures}"


def expected_codecs(topic_codec: str, producer_codecs: list[int]) -> set[int]:
    return set(producer_codecs) if topic_codec == "producer" else {TOPIC_CODECS[topic_codec]}


def test_confluent_topics_store_batches_in_their_codec_whatever_the_producer_used(broker):
    # 1. confluent-kafka's AdminClient creates one topic per compression.type.
    topic_codecs = ["producer", *TOPIC_CODECS]
    for topic_codec in topic_codecs:
        create_topic(broker, f"confluent-{topic_codec}", config={"compression.type": topic_codec})
    for topic_codec in topic_codecs:
        topic = f"confluent-{topic_codec}"
        # 2. Every librdkafka codec produces into it, producer after producer.
        expected = []
        for codec_id, codec in PRODUCER_CODECS.items():
            records = records_for(codec)
            produce_with_confluent(broker, topic, codec, records)
            expected += records
        # 3. Consumed back intact, in order.
        consumed = consume_partitions(broker, topic, {0: len(expected)})[0]
        assert [(r.key, r.value, r.headers) for r in consumed] == \
            [(k, v, tuple(h)) for k, v, h in expected], topic
        assert [r.offset for r in consumed] == list(range(len(expected)))
        # 4. Stored in the topic's codec (the producer's own, for `producer`), CRCs valid.
        batches = stored_batches(broker, topic)
        assert all(batch.crc_valid for batch in batches), topic
        assert {batch.codec for batch in batches} == expected_codecs(topic_codec, list(PRODUCER_CODECS)), \
            (topic, [batch.codec for batch in batches])
        assert sum(batch.records_count for batch in batches) == len(expected)


def python_compressors() -> dict[int, callable]:
    import cramjam
    import lz4.frame
    import zstandard

    return {
        0: None,
        1: gzip.compress,
        2: lambda data: bytes(cramjam.snappy.compress_raw(data)),
        3: lambda data: lz4.frame.compress(data, block_linked=False, content_checksum=False),
        4: lambda data: zstandard.ZstdCompressor().compress(data),
    }


def hand_built_batch(codec: int, compress, tag: str) -> bytes:
    now = int(time.time() * 1000)
    records = [encode_record(index, index, f"{tag}-{index}".encode(), f"value {index}".encode() * 4,
                             [("h", b"x")]) for index in range(5)]
    return build_batch(records, now, now + 4, codec=codec, compress=compress)


def test_producer_codec_keeps_batches_byte_for_byte_and_other_codecs_rewrite_them(broker):
    compressors = python_compressors()
    create_topic(broker, "bytes-producer", config={"compression.type": "producer"})
    create_topic(broker, "bytes-zstd", config={"compression.type": "zstd"})
    with RawConnection(broker) as connection:
        for correlation_id, (codec, compress) in enumerate(compressors.items(), start=1):
            sent = hand_built_batch(codec, compress, f"codec{codec}")
            for topic in ("bytes-producer", "bytes-zstd"):
                answer = raw_produce_v9(connection, correlation_id, topic, 0, sent)
                assert answer.error_code == ERROR_NONE, (topic, codec, answer)
            # `producer`: the producer's bytes from byte 17 on (after base offset, length,
            # leader epoch, magic) are what is on disk, CRC included.
            stored = stored_batches(broker, "bytes-producer")[-1]
            assert stored.data[17:] == sent[17:], f"codec {codec} was rewritten"
            # `zstd`: rebuilt in zstd (same records, new CRC) unless it arrived in zstd.
            rebuilt = stored_batches(broker, "bytes-zstd")[-1]
            assert rebuilt.codec == 4 and rebuilt.crc_valid
            assert (rebuilt.data[17:] == sent[17:]) == (codec == 4), f"codec {codec}"
    for topic in ("bytes-producer", "bytes-zstd"):
        consumed = consume_partitions(broker, topic, {0: 5 * len(compressors)})[0]
        assert [r.key for r in consumed] == \
            [f"codec{codec}-{index}".encode() for codec in compressors for index in range(5)], topic


def test_kafka_python_topics_and_producers_in_every_codec(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    # 1. kafka-python's admin client creates one topic per compression.type.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(f"kafka-python-{codec}", 1, 1, topic_configs={"compression.type": codec})
                             for codec in ["producer", *TOPIC_CODECS]])
    finally:
        admin.close()
    producer_codecs = {0: None, 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
    for topic_codec in ["producer", *TOPIC_CODECS]:
        topic = f"kafka-python-{topic_codec}"
        wait_until(lambda: watermarks(broker, topic, 0) == (0, 0), timeout_s=30, what=f"{topic} served")
        # 2. A kafka-python producer per codec, each flushing its records as one batch.
        expected = []
        for codec_id, codec in producer_codecs.items():
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec,
                                     linger_ms=50, acks="all")
            try:
                for index in range(RECORDS_PER_PRODUCER):
                    value = f"{codec} {index} ".encode() * 8
                    producer.send(topic, key=f"k{index}".encode(), value=value, partition=0)
                    expected.append(value)
                producer.flush(timeout=30)
            finally:
                producer.close(timeout=10)
        # 3. kafka-python consumes them back intact.
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                 consumer_timeout_ms=10000)
        try:
            consumer.assign([TopicPartition(topic, 0)])
            consumer.seek_to_beginning()
            values = [message.value for _, message in zip(range(len(expected)), consumer)]
        finally:
            consumer.close()
        assert values == expected, topic
        # 4. Stored in the topic's codec.
        batches = stored_batches(broker, topic)
        assert all(batch.crc_valid for batch in batches)
        assert {batch.codec for batch in batches} == expected_codecs(topic_codec, list(producer_codecs)), \
            (topic, [batch.codec for batch in batches])


def test_a_compression_type_change_applies_to_new_batches(broker):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    topic = "codec-change"
    create_topic(broker, topic, config={"compression.type": "producer"})
    produce_with_confluent(broker, topic, "gzip", records_for("before"))
    # Switch the topic to zstd; new gzip batches are stored as zstd once the change is applied.
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET)])
    admin = confluent_admin(broker)
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    produced = len(records_for("before"))

    def next_batch_is_zstd() -> bool:
        nonlocal produced
        produce_with_confluent(broker, topic, "gzip", records_for("after")[:1])
        produced += 1
        return stored_batches(broker, topic)[-1].codec == 4

    wait_until(next_batch_is_zstd, timeout_s=30, what="a gzip batch stored as zstd")
    codecs = [batch.codec for batch in stored_batches(broker, topic)]
    first_zstd = codecs.index(4)
    assert set(codecs[:first_zstd]) == {1} and set(codecs[first_zstd:]) == {4}, codecs
    assert len(consume_partitions(broker, topic, {0: produced})[0]) == produced


def test_the_broker_default_compression_type_applies_to_topics_without_their_own(brokers):
    gzip_broker = brokers.start(settings={"compression.type": "gzip", "compression.gzip.level": "9"})
    create_topic(gzip_broker, "broker-default")
    create_topic(gzip_broker, "topic-override", config={"compression.type": "producer"})
    for topic in ("broker-default", "topic-override"):
        produce_with_confluent(gzip_broker, topic, "zstd", records_for(topic))
    assert {batch.codec for batch in stored_batches(gzip_broker, "broker-default")} == {1}
    assert {batch.codec for batch in stored_batches(gzip_broker, "topic-override")} == {4}
    consumed = consume_partitions(gzip_broker, "broker-default", {0: RECORDS_PER_PRODUCER})[0]
    assert [r.value for r in consumed] == [value for _, value, _ in records_for("broker-default")]


# ---------------------------------------------------------------------------------------------
# KIP-467: per-record errors
# ---------------------------------------------------------------------------------------------

KEYLESS_INDEXES = set(range(5, 100, 10))


def keyless_batch_outcomes(bootstrap: str, topic: str) -> list[int]:
    """Produces 100 records, those at KEYLESS_INDEXES without a key, as one librdkafka batch;
    returns each record's delivery error code (0: delivered)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2000, "batch.num.messages": 1000,
                         "acks": "all", "enable.idempotence": False, "retries": 0,
                         "compression.type": "zstd", "message.timeout.ms": 60000})
    outcomes: dict[int, int] = {}
    for index in range(100):
        key = None if index in KEYLESS_INDEXES else f"key-{index}".encode()
        producer.produce(topic, key=key, value=f"value-{index}".encode(), partition=0,
                         on_delivery=lambda error, _message, index=index:
                         outcomes.__setitem__(index, error.code() if error else 0))
    assert producer.flush(60) == 0
    return [outcomes[index] for index in range(100)]


@pytest.fixture(scope="module")
def apache_kafka():
    kafka_classpath()
    directory = Path(tempfile.mkdtemp(prefix="kafka-peer-")) / "peer"
    result = subprocess.run([str(KAFKA_PEER), "start", str(directory)], capture_output=True, text=True,
                            timeout=PREPARE_TIMEOUT_S)
    assert result.returncode == 0, f"Apache Kafka did not start:\n{result.stdout}\n{result.stderr}"
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_PEER), "stop", str(directory)], capture_output=True, timeout=60)
        directory.parent.rmdir()


def create_topic_at(bootstrap: str, name: str, config: dict) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config)],
                                  operation_timeout=30, request_timeout=30)
    futures[name].result(timeout=30)


def test_librdkafka_fails_only_the_keyless_records_as_with_apache_kafka(broker, apache_kafka):
    from confluent_kafka import KafkaError

    expected = [KafkaError.INVALID_RECORD if index in KEYLESS_INDEXES else KafkaError._INVALID_DIFFERENT_RECORD
                for index in range(100)]
    outcomes = {}
    for name, bootstrap in (("karst", broker.bootstrap), ("kafka", apache_kafka)):
        create_topic_at(bootstrap, "compacted-batch", {"cleanup.policy": "compact"})
        # The topic's leader may take a moment on either broker: librdkafka waits for it.
        outcomes[name] = keyless_batch_outcomes(bootstrap, "compacted-batch")
    assert outcomes["kafka"] == expected, "Apache Kafka's answer changed: revisit this test"
    assert outcomes["karst"] == expected
    # Nothing of the refused batch was stored.
    assert watermarks(broker, "compacted-batch", 0) == (0, 0)


def test_record_errors_name_each_refused_record_by_index(broker):
    topic = "compacted-raw"
    create_topic(broker, topic, config={"cleanup.policy": "compact"})
    keys = [b"a", None, b"c", b"d", None, b"f"]
    with RawConnection(broker) as connection:
        refused = raw_produce_v9(connection, 1, topic, 0, record_batch([b"v"] * 6, 1_700_000_000_000, keys=keys))
        assert refused.error_code == ERROR_INVALID_RECORD
        assert [index for index, _ in refused.record_errors] == [1, 4]
        assert all("Compacted topic cannot accept message without key" in message
                   for _, message in refused.record_errors), refused.record_errors
        assert refused.error_message.startswith("One or more records have been rejected due to 2 record errors")
        assert (refused.base_offset, refused.log_start_offset) == (-1, 0)
        accepted = raw_produce_v9(connection, 2, topic, 0, record_batch([b"v"] * 2, 1_700_000_000_000,
                                                                       keys=[b"a", b"b"]))
        assert (accepted.error_code, accepted.base_offset, accepted.record_errors) == (ERROR_NONE, 0, [])
    assert watermarks(broker, topic, 0) == (0, 2)


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------


def test_records_outside_the_timestamp_bounds_are_refused_by_index(broker):
    topic = "timestamp-bounds"
    create_topic(broker, topic, config={"message.timestamp.before.max.ms": str(HOUR_MS)})
    now = int(time.time() * 1000)
    # Deltas against a base two hours ago: records 0 and 2 are too old, 1 and 3 recent.
    deltas = [0, 2 * HOUR_MS - 1000, 1, 2 * HOUR_MS]
    records = [encode_record(index, delta, b"k", b"v") for index, delta in enumerate(deltas)]
    with RawConnection(broker) as connection:
        for correlation_id, compress in enumerate([None, gzip.compress], start=1):
            batch = build_batch(records, now - 2 * HOUR_MS, now, codec=1 if compress else 0, compress=compress)
            refused = raw_produce_v9(connection, correlation_id, topic, 0, batch)
            assert refused.error_code == ERROR_INVALID_TIMESTAMP, refused
            assert [index for index, _ in refused.record_errors] == [0, 2]
            assert "is out of range" in refused.record_errors[0][1]
        # The future bound is Kafka's default, an hour: a record two hours ahead is refused.
        ahead = build_batch([encode_record(0, 0, b"k", b"v")], now + 2 * HOUR_MS, now + 2 * HOUR_MS)
        refused = raw_produce_v9(connection, 3, topic, 0, ahead)
        assert (refused.error_code, refused.record_errors[0][0]) == (ERROR_INVALID_TIMESTAMP, 0)
    assert watermarks(broker, topic, 0) == (0, 0)
    # librdkafka reports the refusal per message too.
    from confluent_kafka import KafkaError
    producer = confluent_producer(broker, retries=0)
    errors = []
    producer.produce(topic, key=b"k", value=b"late", timestamp=now - 3 * HOUR_MS,
                     on_delivery=lambda error, _message: errors.append(error))
    assert producer.flush(30) == 0
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_TIMESTAMP, errors


def test_log_append_time_topics_answer_and_store_the_brokers_time(broker):
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    topic = "log-append-time"
    create_topic(broker, topic, config={"message.timestamp.type": "LogAppendTime", "compression.type": "zstd"})
    producer_time = 1_500_000_000_000  # far in the past: ignored, not refused
    with RawConnection(broker) as connection:
        before = int(time.time() * 1000)
        for correlation_id, compress in enumerate([None, gzip.compress], start=1):
            batch = build_batch([encode_record(0, 0, b"k", b"v")], producer_time, producer_time,
                                codec=1 if compress else 0, compress=compress)
            answer = raw_produce_v9(connection, correlation_id, topic, 0, batch)
            assert answer.error_code == ERROR_NONE, answer
            assert before <= answer.log_append_time_ms <= int(time.time() * 1000), answer
            stored = stored_batches(broker, topic)[-1]
            assert stored.attributes & 0x08, "timestamp type LogAppendTime"
            assert stored.max_timestamp_ms == answer.log_append_time_ms
            assert stored.codec == 4 and stored.crc_valid
    consumer = confluent_consumer(broker)
    try:
        from confluent_kafka import TopicPartition
        consumer.assign([TopicPartition(topic, 0, 0)])
        messages = []
        deadline = time.monotonic() + 30
        while len(messages) < 2 and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    assert [m.timestamp()[0] for m in messages] == [TIMESTAMP_LOG_APPEND_TIME] * 2
    assert all(m.timestamp()[1] >= before for m in messages), [m.timestamp() for m in messages]
