"""kafka-python (a pure-Python client with its own protocol code) against a Karst broker."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from karst import wait_until

RECORD_COUNT = 5_000
PARTITION_COUNT = 3
CONSUME_TIMEOUT_S = 60


def admin_client(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="karst-e2e-admin",
                            request_timeout_ms=20000)


def topic_config(admin, topic):
    """All configs of `topic` as {name: {value, config_source, ...}}."""
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return described["topic"][topic]


def test_kafka_python_round_trips_keyed_records_with_headers(brokers):
    broker = brokers.start()
    topic = "kafka-python-round-trip"
    admin = admin_client(broker)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITION_COUNT, "replication_factor": 1}})
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                             client_id="karst-e2e-producer")
    futures = []
    for index in range(RECORD_COUNT):
        key = f"k{index % 101}".encode()
        value = f"v{index}".encode() * (1 + index % 5)
        headers = [("index", str(index).encode()), ("kind", b"kafka-python")]
        futures.append((key, value, headers, producer.send(topic, key=key, value=value, headers=headers)))
    producer.flush(timeout=60)
    expected = {partition: {} for partition in range(PARTITION_COUNT)}
    for key, value, headers, future in futures:
        metadata = future.get(timeout=30)
        expected[metadata.partition][metadata.offset] = (key, value, headers, metadata.timestamp)
    producer.close(timeout=10)
    for partition, records in expected.items():
        assert sorted(records) == list(range(len(records))), f"partition {partition}: offsets not contiguous from 0"
    assert sum(len(records) for records in expected.values()) == RECORD_COUNT

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id="karst-e2e-consumer")
    try:
        partitions = [TopicPartition(topic, partition) for partition in range(PARTITION_COUNT)]
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)
        consumed = {partition: [] for partition in range(PARTITION_COUNT)}
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while sum(map(len, consumed.values())) < RECORD_COUNT:
            assert time.monotonic() < deadline, f"consumed only {sum(map(len, consumed.values()))} records"
            for partition, records in consumer.poll(timeout_ms=500).items():
                consumed[partition.partition].extend(records)
    finally:
        consumer.close()

    for partition, records in consumed.items():
        assert [r.offset for r in records] == list(range(len(expected[partition]))), (
            f"partition {partition}: consumed offsets not 0..n-1 in order")
        for record in records:
            key, value, headers, timestamp = expected[partition][record.offset]
            assert (record.key, record.value, list(record.headers), record.timestamp) == (
                key, value, headers, timestamp), f"partition {partition} offset {record.offset}"


def test_kafka_python_admin_creates_describes_alters_and_deletes_a_topic(brokers):
    broker = brokers.start()
    topic = "kafka-python-admin"
    admin = admin_client(broker)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1,
                                     "configs": {"cleanup.policy": "delete"}}})
        wait_until(lambda: topic in admin.list_topics(), timeout_s=10, what=f"{topic} listed")

        configs = topic_config(admin, topic)
        assert "retention.ms" in configs, sorted(configs)
        assert configs["cleanup.policy"]["value"] == "delete"
        assert configs["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["retention.ms"]["config_source"] != "DYNAMIC_TOPIC_CONFIG", (
            "retention.ms was never set on the topic")

        # IncrementalAlterConfigs, then the legacy AlterConfigs: both must stick.
        for api, retention_ms in (("incremental", "123456789"), ("legacy", "987654321")):
            result = admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": retention_ms})],
                incremental=(api == "incremental"))
            assert result == {"topic": {topic: "OK"}}, f"{api} alter: {result}"
            configs = topic_config(admin, topic)
            assert configs["retention.ms"]["value"] == retention_ms, f"{api} alter: {configs['retention.ms']}"
            assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", configs["retention.ms"]

        admin.delete_topics([topic])
        wait_until(lambda: topic not in admin.list_topics(), timeout_s=10, what=f"{topic} gone from metadata")
    finally:
        admin.close()
