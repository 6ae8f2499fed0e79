"""Karst's compatibility scenario with confluent-kafka (librdkafka), the shape of the Java, Go
and JavaScript ones (issue 11), against a running broker or cluster that has automatic topic
creation turned off:

1. admin: cluster, create a topic with configs, describe it, alter and describe configs, add
   partitions; an existing topic and a bad config;
2. produce keyed records with headers in every compression codec;
3. consume them back with assign() and check every record by offset; then in a consumer group:
   commit, close, resume exactly after the commit in a new member, the group listed,
   described and deleted by the admin; list offsets;
4. a missing topic: describe, describe configs, delete and produce fail with
   UNKNOWN_TOPIC_OR_PARTITION;
5. delete the topic, after which it is missing too.

Run with the suite's venv (tests/python/requirements.txt pins confluent-kafka):
    .venv/bin/python tests/compat/python/scenario.py --bootstrap HOST:PORT[,...] --brokers N
        --replication-factor R --topic-prefix NAME
Prints one line per step; exits 1 naming the failed step.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             Producer, TopicCollection, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, OffsetSpec)

# Every admin call, flush and poll loop is bounded by this.
CALL_TIMEOUT_S = 30.0
# Metadata and configs reach every node of a cluster within this (eventual reads).
PROPAGATION_TIMEOUT_S = 20.0
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RECORDS_PER_CODEC = 400
PARTITIONS_CREATED = 3
PARTITIONS_AFTER_GROWTH = 4
UNKNOWN_TOPIC = KafkaError.UNKNOWN_TOPIC_OR_PART

checks = 0


def check(condition: bool, what: str) -> None:
    global checks
    if not condition:
        raise AssertionError(f"check failed: {what}")
    checks += 1


def step(name: str, run):
    started, before = time.monotonic(), checks
    value = run()
    print(f"ok  {name:<45} {checks - before:4d} checks {int((time.monotonic() - started) * 1000):6d} ms", flush=True)
    return value


def eventually(what: str, attempt):
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while True:
        value = attempt()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {PROPAGATION_TIMEOUT_S}s waiting for {what}")
        time.sleep(0.05)


def error_code(failure: BaseException):
    error = failure.args[0] if failure.args else None
    return error.code() if isinstance(error, KafkaError) else None


def expect_error(code, what: str, call) -> None:
    try:
        call()
    except KafkaException as failure:
        check(error_code(failure) == code, f"{what}: {failure}, want {KafkaError(code).name()}")
        return
    raise AssertionError(f"{what}: succeeded, want {KafkaError(code).name()}")


def expected_record(codec: str, index: int) -> dict:
    value = b"" if index == 7 else f"value {codec} {index} ".encode() * (1 + index % 5)
    return {
        "key": f"key-{codec}-{index}".encode(),
        "value": value,
        "headers": [("codec", codec.encode()), ("index", struct.pack(">i", index)), ("null-valued", None),
                    ("codec", b"again")],
    }


def run(options) -> None:
    bootstrap, topic, missing = options.bootstrap, f"{options.topic_prefix}-codecs", f"{options.topic_prefix}-missing"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    base_producer = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                     "message.timeout.ms": int(CALL_TIMEOUT_S * 1000),
                     # librdkafka is not idempotent by default; said here so that issue 8's
                     # flip is as visible as in the other scenarios.
                     "enable.idempotence": False}

    def describe_cluster():
        cluster = admin.describe_cluster(request_timeout=CALL_TIMEOUT_S).result(CALL_TIMEOUT_S)
        check(len(cluster.nodes) == options.brokers, f"{len(cluster.nodes)} brokers, want {options.brokers}")
        check(bool(cluster.cluster_id), "cluster id present")
        check(cluster.controller is not None, "a controller is named")

    def describe_topic(name: str):
        return admin.describe_topics(TopicCollection([name]), request_timeout=CALL_TIMEOUT_S)[name].result(CALL_TIMEOUT_S)

    def topic_configs(name: str) -> dict:
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        return admin.describe_configs([resource], request_timeout=CALL_TIMEOUT_S)[resource].result(CALL_TIMEOUT_S)

    def create_and_describe():
        admin.create_topics([NewTopic(topic, PARTITIONS_CREATED, options.replication_factor,
                                      config={"retention.ms": "86400000", "cleanup.policy": "delete"})],
                            request_timeout=CALL_TIMEOUT_S)[topic].result(CALL_TIMEOUT_S)

        def described():
            try:
                description = describe_topic(topic)
            except KafkaException:
                return None
            partitions = description.partitions
            return description if len(partitions) == PARTITIONS_CREATED and all(p.leader for p in partitions) else None

        description = eventually(f"{topic} with leaders", described)
        for partition in description.partitions:
            check(len(partition.replicas) == options.replication_factor,
                  f"partition {partition.id} has {options.replication_factor} replicas")
        expect_error(KafkaError.TOPIC_ALREADY_EXISTS, "create an existing topic",
                     lambda: admin.create_topics([NewTopic(topic, 1, options.replication_factor)])[topic].result(CALL_TIMEOUT_S))
        bad = f"{topic}-bad-config"
        expect_error(KafkaError.INVALID_CONFIG, "create with retention.ms=not-a-number",
                     lambda: admin.create_topics([NewTopic(bad, 1, options.replication_factor,
                                                           config={"retention.ms": "not-a-number"})])[bad].result(CALL_TIMEOUT_S))

    def alter_configs():
        configs = topic_configs(topic)
        check(configs["retention.ms"].value == "86400000", "retention.ms as created")
        check(configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, "retention.ms is a topic override")
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.bytes", "1073741824", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
        admin.incremental_alter_configs([resource], request_timeout=CALL_TIMEOUT_S)[resource].result(CALL_TIMEOUT_S)

        def altered():
            entries = topic_configs(topic)
            done = (entries["retention.bytes"].value == "1073741824"
                    and entries["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
            return entries if done else None

        configs = eventually(f"altered configs of {topic}", altered)
        check(configs["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, "retention.bytes is a topic override")
        check(configs["retention.ms"].value == "604800000", "retention.ms back to 7 days")
        check(configs["cleanup.policy"].value == "delete", "cleanup.policy kept")

    def grow():
        admin.create_partitions([NewPartitions(topic, PARTITIONS_AFTER_GROWTH)],
                                request_timeout=CALL_TIMEOUT_S)[topic].result(CALL_TIMEOUT_S)
        eventually(f"{topic} with {PARTITIONS_AFTER_GROWTH} partitions",
                   lambda: len(describe_topic(topic).partitions) == PARTITIONS_AFTER_GROWTH)
        check(True, "partitions grown")

    produced: dict[int, dict[int, dict]] = {}

    def produce_every_codec():
        for codec in CODECS:
            producer = Producer({**base_producer, "compression.type": codec})
            failures = []

            def delivered(error, message, record):
                if error is not None:
                    failures.append(error)
                    return
                check(message.offset() not in produced.setdefault(message.partition(), {}),
                      f"offset {message.offset()} of partition {message.partition()} acknowledged once")
                produced[message.partition()][message.offset()] = {**record, "timestamp": message.timestamp()[1]}

            for index in range(RECORDS_PER_CODEC):
                record = expected_record(codec, index)
                producer.produce(topic, key=record["key"], value=record["value"], headers=record["headers"],
                                 on_delivery=lambda error, message, record=record: delivered(error, message, record))
                producer.poll(0)
            check(producer.flush(CALL_TIMEOUT_S) == 0, f"{codec}: every record delivered within {CALL_TIMEOUT_S}s")
            check(not failures, f"{codec}: delivery errors {failures[:3]}")
        check(sum(len(records) for records in produced.values()) == len(CODECS) * RECORDS_PER_CODEC,
              "every record acknowledged")
        check(len(produced) > 1, "keys spread over partitions")

    def read_checking(consumer, start: dict) -> None:
        """Consumes until every partition of `start` (partition -> first offset) has reached the
        end of what was produced there, checking each record and that offsets follow on."""
        following = dict(start)
        wanted = sum(len(produced[partition]) - offset for partition, offset in start.items())
        consumed, deadline = 0, time.monotonic() + CALL_TIMEOUT_S
        while consumed < wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"consumed {consumed} of {wanted} records in {CALL_TIMEOUT_S}s")
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    raise AssertionError(f"consumer error: {message.error()}")
                where = f"{message.topic()}-{message.partition()}@{message.offset()}"
                if message.offset() != following.get(message.partition()):
                    raise AssertionError(f"{where}: want offset {following.get(message.partition())}")
                following[message.partition()] += 1
                want = produced[message.partition()][message.offset()]
                got = {"key": message.key(), "value": message.value() or b"",
                       "headers": message.headers() or [], "timestamp": message.timestamp()[1]}
                if got != want:
                    raise AssertionError(f"{where}: {got}, want {want}")
                consumed += 1
        global checks
        checks += consumed

    def consume_and_check():
        # No group membership: assign() (librdkafka wants a group.id even so).
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "karst-compat-never-joined",
                             "enable.auto.commit": False, "enable.auto.offset.store": False})
        try:
            consumer.assign([TopicPartition(topic, partition, 0) for partition in produced])
            read_checking(consumer, {partition: 0 for partition in produced})
        finally:
            consumer.close()

    def group_commit_and_resume():
        """A first member reads every record, commits the middle of each partition and leaves;
        the admin lists and describes the group and its offsets; a second member resumes
        exactly there, commits the end; the group is deleted."""
        group = f"{options.topic_prefix}-group"
        middle = {partition: len(records) // 2 for partition, records in produced.items()}
        ends = {partition: len(records) for partition, records in produced.items()}

        def member(name: str) -> Consumer:
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": f"{group}-{name}",
                                 "auto.offset.reset": "earliest", "enable.auto.commit": False})
            consumer.subscribe([topic])
            return consumer

        def describe_group():
            return admin.describe_consumer_groups([group], request_timeout=CALL_TIMEOUT_S)[group].result(CALL_TIMEOUT_S)

        def committed_offsets() -> dict:
            request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition) for partition in produced])
            answer = admin.list_consumer_group_offsets([request], request_timeout=CALL_TIMEOUT_S)[group].result(CALL_TIMEOUT_S)
            return {tp.partition: (tp.offset, tp.metadata) for tp in answer.topic_partitions}

        first = member("first")
        try:
            read_checking(first, {partition: 0 for partition in produced})
            commit = [TopicPartition(topic, partition, offset, metadata="first member") for partition, offset in middle.items()]
            first.commit(offsets=commit, asynchronous=False)
            read_back = first.committed([TopicPartition(topic, partition) for partition in produced], timeout=CALL_TIMEOUT_S)
            check({tp.partition: tp.offset for tp in read_back} == middle, f"committed() reads back the commit: {read_back}")
        finally:
            first.close()  # leaves the group

        listed = admin.list_consumer_groups(request_timeout=CALL_TIMEOUT_S).result(CALL_TIMEOUT_S)
        check(any(listing.group_id == group and not listing.is_simple_consumer_group for listing in listed.valid),
              f"list_consumer_groups names {group}: {listed.valid}")
        empty = describe_group()
        check(empty.state == ConsumerGroupState.EMPTY, f"{group} empty after its member left: {empty.state}")
        check(not empty.members, "no members after close")
        want_middle = {partition: (offset, "first member") for partition, offset in middle.items()}
        check(committed_offsets() == want_middle, f"list_consumer_group_offsets shows the commit: {committed_offsets()}")

        second = member("second")
        try:
            read_checking(second, middle)
            second.commit(asynchronous=False)
            stable = describe_group()
            check(stable.state == ConsumerGroupState.STABLE, f"{group} stable with its member: {stable.state}")
            check(not stable.is_simple_consumer_group, "not a simple consumer group")
            check(len(stable.members) == 1 and stable.members[0].client_id == f"{group}-second",
                  f"one member, the second: {stable.members}")
            assigned = stable.members[0].assignment.topic_partitions
            check(len(assigned) == PARTITIONS_AFTER_GROWTH, f"the member has every partition: {assigned}")
            check({partition: offset for partition, (offset, _) in committed_offsets().items()} == ends,
                  f"the end committed: {committed_offsets()}")
        finally:
            second.close()

        admin.delete_consumer_groups([group], request_timeout=CALL_TIMEOUT_S)[group].result(CALL_TIMEOUT_S)
        listed = admin.list_consumer_groups(request_timeout=CALL_TIMEOUT_S).result(CALL_TIMEOUT_S)
        check(all(listing.group_id != group for listing in listed.valid), f"{group} gone after delete_consumer_groups")

    def list_offsets():
        for spec, name in ((OffsetSpec.earliest(), "earliest"), (OffsetSpec.latest(), "latest"),
                           (OffsetSpec.max_timestamp(), "max timestamp")):
            requests = {TopicPartition(topic, partition): spec for partition in produced}
            answers = admin.list_offsets(requests, request_timeout=CALL_TIMEOUT_S)
            for partition_key, future in answers.items():
                info, records = future.result(CALL_TIMEOUT_S), produced[partition_key.partition]
                if name == "earliest":
                    check(info.offset == 0, f"{partition_key.partition} earliest {info.offset}")
                elif name == "latest":
                    check(info.offset == len(records), f"{partition_key.partition} latest {info.offset}, want {len(records)}")
                else:
                    newest = max(record["timestamp"] for record in records.values())
                    check(info.timestamp == newest, f"{partition_key.partition} max timestamp {info.timestamp}, want {newest}")
                    check(records[info.offset]["timestamp"] == newest, "max-timestamp offset holds it")

    def missing_topic_errors(name: str):
        expect_error(UNKNOWN_TOPIC, f"describe {name}", lambda: describe_topic(name))
        expect_error(UNKNOWN_TOPIC, f"describe configs of {name}", lambda: topic_configs(name))
        expect_error(UNKNOWN_TOPIC, f"delete {name}",
                     lambda: admin.delete_topics([name], request_timeout=CALL_TIMEOUT_S)[name].result(CALL_TIMEOUT_S))
        # librdkafka waits topic.metadata.propagation.max.ms for a topic to appear, then fails
        # the record with UNKNOWN_TOPIC_OR_PART.
        producer = Producer({**base_producer, "topic.metadata.propagation.max.ms": 2000})
        failures = []
        producer.produce(name, value=b"v", on_delivery=lambda error, message: failures.append(error))
        producer.flush(CALL_TIMEOUT_S)
        check(len(failures) == 1 and failures[0] is not None and failures[0].code() == UNKNOWN_TOPIC,
              f"produce to {name}: {failures}")
        check(name not in admin.list_topics(timeout=CALL_TIMEOUT_S).topics, f"{name} still does not exist")

    def delete():
        admin.delete_topics([topic], request_timeout=CALL_TIMEOUT_S)[topic].result(CALL_TIMEOUT_S)

        def gone():
            try:
                describe_topic(topic)
                return False
            except KafkaException as failure:
                return error_code(failure) == UNKNOWN_TOPIC

        eventually(f"{topic} gone from metadata", gone)
        check(True, "deleted")
        missing_topic_errors(topic)

    step("describe cluster", describe_cluster)
    step("create and describe topic", create_and_describe)
    step("alter and describe configs", alter_configs)
    step("create partitions", grow)
    step("produce in every codec", produce_every_codec)
    step("consume with assign and check every record", consume_and_check)
    step("consume in a group, commit, resume", group_commit_and_resume)
    step("list offsets", list_offsets)
    step("missing topic errors", lambda: missing_topic_errors(missing))
    step("delete topic", delete)
    print(f"confluent-kafka scenario: all {checks} checks held", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--brokers", type=int, required=True)
    parser.add_argument("--replication-factor", type=int, required=True)
    parser.add_argument("--topic-prefix", required=True)
    options = parser.parse_args()
    try:
        run(options)
    except Exception as failure:  # the test shows this output whole
        import traceback

        print(f"FAILED: {failure!r}")
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)


if __name__ == "__main__":
    main()
