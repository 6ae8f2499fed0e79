"""The applications users write on Kafka (issue 11, item 2), run against a real Karst:

* a Kafka Streams 4.4.0 word count (tests/compat/streams), at-least-once: its counts are
  exact, also after a clean stop and a restart on an empty state directory, which restores the
  counts from the changelog topic and resumes the input after the committed offsets;
* a Spring Boot 4.0 application with a @KafkaListener that answers on a reply topic through
  @SendTo (tests/compat/spring): every record is received exactly once, records produced
  while it is down arrive after its restart, and every answer is on the reply topic.

Kafka Streams' `exactly_once_v2` needs transactions, which Karst does not serve yet: the word
count runs at-least-once, Kafka Streams' default.

The test produces the input and reads the output with confluent-kafka, a client of another
implementation. Each broker runs with `group.initial.rebalance.delay.ms=0`, as Kafka's own
development setups do, so a group's first rebalance does not wait three seconds.
"""

from __future__ import annotations

import collections
import queue
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic

from compat import spring_app_command, streams_app_command
from karst import Cluster, confluent_admin, confluent_consumer, confluent_producer, die_with_parent, wait_until

APP_SETTINGS = {"auto.create.topics.enable": "false", "group.initial.rebalance.delay.ms": 0}

# A JVM start, a group join and the first records through the topology; generous on a loaded
# two-core machine.
APP_OUTPUT_TIMEOUT_S = 120.0
# SIGTERM to exit: Kafka Streams and Spring flush, commit and leave their groups.
APP_STOP_TIMEOUT_S = 60.0
ADMIN_TIMEOUT_S = 30.0
PARTITIONS = 3


@pytest.fixture(scope="module")
def single_node(module_brokers):
    broker = module_brokers.start(settings=APP_SETTINGS, name="apps")
    return broker.bootstrap, 1


@pytest.fixture(scope="module")
def three_nodes(module_brokers):
    cluster = Cluster(module_brokers, settings=APP_SETTINGS).start()
    cluster.wait_for_leader()
    return cluster.bootstrap, 3


class App:
    """A JVM application as its own process, its stdout lines collected as they come."""

    def __init__(self, command: list, name: str):
        self.name = name
        self.process = subprocess.Popen(die_with_parent([str(part) for part in command]), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.new_lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self.new_lines.put(line)
        self.new_lines.put(None)

    def output(self) -> str:
        return "\n".join(self.lines[-300:])

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"{self.name} exited {self.process.returncode}:\n{self.output()}"
        failures = [line for line in self.lines if line.startswith("FAILED")]
        assert not failures, f"{self.name} failed:\n{self.output()}"

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; the JVM runs the shutdown hooks and exits
        143 (128 + SIGTERM)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=APP_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{self.name} did not stop within {APP_STOP_TIMEOUT_S}s:\n{self.output()}")
        self.reader.join(timeout=5)
        assert code in (0, 128 + signal.SIGTERM), f"{self.name} exited {code}:\n{self.output()}"
        assert not any(line.startswith("FAILED") for line in self.lines), f"{self.name} failed:\n{self.output()}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def apps():
    started: list[App] = []

    def start(command: list, name: str) -> App:
        app = App(command, name)
        started.append(app)
        return app

    yield start
    for app in started:
        app.kill()


def create_topics(bootstrap: str, replication_factor: int, *names: str) -> None:
    admin = confluent_admin_for(bootstrap)
    futures = admin.create_topics([NewTopic(name, PARTITIONS, replication_factor) for name in names],
                                  request_timeout=ADMIN_TIMEOUT_S)
    for future in futures.values():
        future.result(ADMIN_TIMEOUT_S)


def confluent_admin_for(bootstrap: str):
    return confluent_admin(_Bootstrap(bootstrap))


class _Bootstrap:
    """What karst.py's client factories read of a Broker: its bootstrap address (here a
    cluster's, every node)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap


def produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> None:
    producer = confluent_producer(_Bootstrap(bootstrap), **{"enable.idempotence": True})
    failures = []
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode(),
                         on_delivery=lambda error, message: error and failures.append(error))
    assert producer.flush(ADMIN_TIMEOUT_S) == 0, "records not delivered in time"
    assert not failures, failures


class TopicReader:
    """Reads every partition of a topic from the beginning, as the test goes on."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = confluent_consumer(_Bootstrap(bootstrap))
        self.consumer.assign([TopicPartition(topic, partition, 0) for partition in range(PARTITIONS)])

    def read_until(self, on_message: Callable, done: Callable[[], bool], what: str, app: App) -> None:
        deadline = time.monotonic() + APP_OUTPUT_TIMEOUT_S
        while not done():
            app.check_alive()
            assert time.monotonic() < deadline, f"timed out after {APP_OUTPUT_TIMEOUT_S}s waiting for {what}:\n{app.output()}"
            for message in self.consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                on_message(message)

    def close(self) -> None:
        self.consumer.close()


def group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = confluent_admin_for(bootstrap)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition) for partition in range(PARTITIONS)])
    answer = admin.list_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)[group].result(ADMIN_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in answer.topic_partitions}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = confluent_consumer(_Bootstrap(bootstrap))
    try:
        return {partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=ADMIN_TIMEOUT_S)[1]
                for partition in range(PARTITIONS)}
    finally:
        consumer.close()


def describe_group(bootstrap: str, group: str):
    admin = confluent_admin_for(bootstrap)
    return admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)[group].result(ADMIN_TIMEOUT_S)


# -- Kafka Streams ----------------------------------------------------------------------------

WORDS = ["karst", "kafka", "stream", "count", "word", "broker", "log", "offset", "group", "topic",
         "partition", "replica", "leader", "commit", "fsync"]


def text_lines(first: int, count: int) -> list[tuple[str, str]]:
    """Deterministic lines of 1 to 7 words, mixed case and punctuation (the topology lowercases
    and splits on non-word characters)."""
    lines = []
    for number in range(first, first + count):
        words = [WORDS[(number * 7 + position * 3) % len(WORDS)] for position in range(1 + number % 7)]
        if number % 5 == 0:
            words[0] = words[0].upper()
        lines.append((f"line-{number}", ", ".join(words) + ("!" if number % 3 == 0 else "")))
    return lines


def word_counts(lines: list[tuple[str, str]]) -> dict[str, int]:
    counts: collections.Counter = collections.Counter()
    for _, line in lines:
        counts.update(word.lower() for word in line.replace(",", " ").replace("!", " ").split())
    return dict(counts)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["single_node", "three_nodes"])
def test_kafka_streams_word_count_is_exact_across_a_restart_on_an_empty_state_dir(topology, request, apps, tmp_path):
    bootstrap, replication_factor = request.getfixturevalue(topology)
    application_id = f"word-count-{topology}".replace("_", "-")
    source, sink = f"{application_id}-lines", f"{application_id}-counts"
    create_topics(bootstrap, replication_factor, source, sink)
    command = streams_app_command()

    def start(state_dir: Path) -> App:
        return apps([*command, "--bootstrap", bootstrap, "--application-id", application_id, "--input", source,
                     "--output", sink, "--state-dir", state_dir, "--replication-factor", replication_factor],
                    f"Kafka Streams word count ({state_dir.name})")

    # The latest count per word on the output topic; counts only grow, so any count above the
    # expected one is a record processed twice.
    latest: dict[str, int] = {}

    def on_count(message) -> None:
        (count,) = struct.unpack(">q", message.value())
        latest[message.key().decode()] = count

    def counts_reached(expected: dict[str, int]) -> Callable[[], bool]:
        return lambda: all(latest.get(word, 0) >= count for word, count in expected.items())

    output = TopicReader(bootstrap, sink)
    try:
        # 1. Lines first, then the application: it starts from the earliest offset.
        first_lines = text_lines(0, 300)
        produce(bootstrap, source, first_lines)
        app = start(tmp_path / "state-first")
        expected = word_counts(first_lines)
        output.read_until(on_count, counts_reached(expected), "the first lines' counts", app)
        assert latest == expected

        # 2. A clean stop commits what was processed: the group is empty, its offsets at the
        # input's end.
        app.stop()
        assert "closed" in app.lines, app.output()
        assert describe_group(bootstrap, application_id).state == ConsumerGroupState.EMPTY
        assert group_offsets(bootstrap, application_id, source) == end_offsets(bootstrap, source)

        # 3. More lines while it is down, then a restart on an empty state directory (another
        # machine): the store is restored from the changelog topic and the input resumes
        # after the committed offsets, so every count is exact, none counted twice.
        second_lines = text_lines(300, 200)
        produce(bootstrap, source, second_lines)
        app = start(tmp_path / "state-second")
        expected = word_counts(first_lines + second_lines)
        output.read_until(on_count, counts_reached(expected), "the counts of all lines", app)
        assert latest == expected, {word: (latest.get(word), count) for word, count in expected.items()
                                    if latest.get(word) != count}
        app.stop()
    finally:
        output.close()

    # Kafka Streams made its internal topics through the admin API: a compacted changelog for
    # the store, a repartition topic for the grouping.
    topics = confluent_admin_for(bootstrap).list_topics(timeout=ADMIN_TIMEOUT_S).topics
    assert f"{application_id}-counts-changelog" in topics, sorted(topics)
    assert f"{application_id}-words-repartition" in topics, sorted(topics)


# -- Spring Kafka -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["single_node", "three_nodes"])
def test_spring_kafka_listener_receives_every_record_once_and_resumes_after_a_restart(topology, request, apps):
    bootstrap, replication_factor = request.getfixturevalue(topology)
    name = f"spring-{topology}".replace("_", "-")
    topic, replies, group = f"{name}-orders", f"{name}-replies", f"{name}-listener"
    create_topics(bootstrap, replication_factor, topic, replies)
    command = [*spring_app_command(), f"--spring.kafka.bootstrap-servers={bootstrap}", f"--karst.topic={topic}",
               f"--karst.reply-topic={replies}", f"--karst.group={group}"]

    def batch(name: str, count: int) -> list[tuple[str, str]]:
        return [(f"{name}-key-{index % 17}", f"{name}-order-{index}") for index in range(count)]

    # (key, value) -> how many times the listener printed "received PARTITION OFFSET KEY VALUE",
    # across both runs of the application
    received: collections.Counter = collections.Counter()

    def take(line: Optional[str]) -> None:
        if line and line.startswith("received "):
            _, _partition, _offset, key, value = line.split(" ")
            received[(key, value)] += 1

    def receive_until(app: App, want: list[tuple[str, str]], what: str) -> None:
        deadline = time.monotonic() + APP_OUTPUT_TIMEOUT_S
        while not all(received[record] for record in want):
            app.check_alive()
            assert time.monotonic() < deadline, f"timed out after {APP_OUTPUT_TIMEOUT_S}s waiting for {what}:\n{app.output()}"
            try:
                take(app.new_lines.get(timeout=0.5))
            except queue.Empty:
                continue

    def stop(app: App) -> None:
        """Stops it and takes every line it printed up to its exit."""
        app.stop()
        while (line := app.new_lines.get(timeout=5)) is not None:
            take(line)

    # 1. Records before the application starts, then records while it runs.
    first, second, third = batch("first", 200), batch("second", 200), batch("third", 200)
    produce(bootstrap, topic, first)
    app = apps(command, "Spring Kafka listener (first run)")
    receive_until(app, first, "the records produced before the start")
    produce(bootstrap, topic, second)
    receive_until(app, second, "the records produced while it runs")

    # 2. SIGTERM: the container commits what the listener processed and leaves the group.
    stop(app)
    assert group_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)
    assert describe_group(bootstrap, group).state == ConsumerGroupState.EMPTY

    # 3. Records while it is down arrive after the restart, and nothing before them again.
    produce(bootstrap, topic, third)
    app = apps(command, "Spring Kafka listener (second run)")
    receive_until(app, third, "the records produced while it was down")
    stable = describe_group(bootstrap, group)
    assert stable.state == ConsumerGroupState.STABLE and len(stable.members) == 1, stable
    stop(app)
    everything = first + second + third
    assert received == collections.Counter(everything), {record: count for record, count in received.items()
                                                        if count != 1}

    # 4. Every answer of @SendTo is on the reply topic, once.
    answers: collections.Counter = collections.Counter()
    reader = TopicReader(bootstrap, replies)
    try:
        reader.read_until(lambda message: answers.update([message.value().decode()]),
                          lambda: sum(answers.values()) >= len(everything), "every reply", _Finished(app))
    finally:
        reader.close()
    assert answers == collections.Counter(value.upper() for _, value in everything)


class _Finished:
    """An App that has stopped cleanly, for TopicReader's liveness checks."""

    def __init__(self, app: App):
        self.app = app

    def check_alive(self) -> None:
        pass

    def output(self) -> str:
        return self.app.output()
