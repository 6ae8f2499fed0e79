"""Hostile and malformed input must not disturb anyone else.

One broker serves the whole module while a healthy confluent-kafka producer and consumer keep
working against it in the background. After each hostile case the test asserts that this pair
made fresh progress, saw no error of any kind, and that the broker process is still alive.
"""

import os
import random
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from karst import (
    API_API_VERSIONS,
    API_METADATA,
    ERROR_CORRUPT_MESSAGE,
    ERROR_INVALID_TOPIC_EXCEPTION,
    ERROR_NONE,
    ERROR_UNSUPPORTED_VERSION,
    NO_TAGGED_FIELDS,
    ConnectionClosed,
    RawConnection,
    Reader,
    api_versions_v0,
    compact_string,
    confluent_admin,
    confluent_consumer,
    confluent_producer,
    create_topic,
    frame,
    free_port,
    raw_produce_v9,
    record_batch,
    request_header_v1,
    request_header_v2,
    watermarks,
)

STEADY_TOPIC = "steady-traffic"
# After each case the healthy pair must move this many records further within the deadline.
PROGRESS_RECORDS = 20
PROGRESS_DEADLINE_S = 15
# How long the broker gets to drop a connection that sent something it must refuse.
CLOSE_DEADLINE_S = 5


class SteadyTraffic:
    """A producer thread (acks=all) and a consumer thread on one partition. Values are
    consecutive integers, so the consumer also checks for loss, duplication and reordering."""

    def __init__(self, broker):
        self.broker = broker
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.delivered = 0
        self.consumed = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._consume, daemon=True)]

    def _error(self, text):
        with self.lock:
            self.errors.append(text)

    def _produce(self):
        producer = confluent_producer(self.broker, **{"linger.ms": 1, "error_cb": lambda e: self._error(f"producer: {e}")})

        def on_delivery(error, _message):
            if error is not None:
                self._error(f"delivery: {error}")
            else:
                with self.lock:
                    self.delivered += 1

        sequence = 0
        # Bounded: at most one record per 5 ms for the life of the module (a few minutes).
        while not self.stop.is_set() and sequence < 200_000:
            producer.produce(STEADY_TOPIC, value=str(sequence).encode(), partition=0, on_delivery=on_delivery)
            sequence += 1
            producer.poll(0.005)
        producer.flush(10)

    def _consume(self):
        consumer = confluent_consumer(self.broker, error_cb=lambda e: self._error(f"consumer: {e}"))
        consumer.assign([TopicPartition(STEADY_TOPIC, 0, 0)])
        expected = 0
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        self._error(f"consume: {message.error()}")
                    continue
                value = int(message.value())
                if value != expected or message.offset() != expected:
                    self._error(f"consume: offset {message.offset()} value {value}, expected {expected}")
                expected = value + 1
                with self.lock:
                    self.consumed += 1
        finally:
            consumer.close()

    def start(self):
        for thread in self.threads:
            thread.start()

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)

    def assert_healthy(self, case):
        with self.lock:
            delivered_before, consumed_before = self.delivered, self.consumed
        deadline = time.monotonic() + PROGRESS_DEADLINE_S
        while True:
            with self.lock:
                moved = (self.delivered - delivered_before >= PROGRESS_RECORDS
                         and self.consumed - consumed_before >= PROGRESS_RECORDS)
                errors = list(self.errors)
            assert not errors, f"after {case}: the healthy pair saw errors: {errors[:5]}"
            assert self.broker.alive, f"after {case}: the broker process died\n{self.broker.log_tail()}"
            if moved:
                return
            assert time.monotonic() < deadline, (
                f"after {case}: the healthy pair made no progress in {PROGRESS_DEADLINE_S}s "
                f"(delivered {self.delivered - delivered_before}, consumed {self.consumed - consumed_before})")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def broker(module_brokers):
    broker = module_brokers.start(name="hostile")
    create_topic(broker, STEADY_TOPIC, partitions=1)
    return broker


@pytest.fixture(scope="module")
def traffic(broker):
    traffic = SteadyTraffic(broker)
    traffic.start()
    traffic.assert_healthy("start-up")
    yield traffic
    traffic.close()


@pytest.fixture
def healthy(traffic, module_brokers):
    # (module_brokers is requested so that a failing test's report carries the broker log.)
    return traffic


def answered_or_closed(connection, correlation_id):
    """After a request the broker must refuse: it either answers (with our correlation id) or
    closes the connection, promptly. Returns the answer, or None if it closed."""
    connection.sock.settimeout(CLOSE_DEADLINE_S)
    try:
        response = connection.recv_frame()
    except TimeoutError:
        pytest.fail(f"broker neither answered nor closed the connection within {CLOSE_DEADLINE_S}s")
    except (ConnectionClosed, OSError):
        return None
    assert Reader(response).unpack(">i") == correlation_id
    return response


def test_random_bytes_on_raw_sockets_do_not_disturb_other_clients(broker, healthy):
    rng = random.Random(7)
    for _ in range(20):
        with RawConnection(broker) as connection:
            try:
                connection.send(rng.randbytes(rng.choice([1, 3, 7, 64, 512, 4096, 65536])))
            except OSError:
                pass  # the broker may hang up while we are still writing garbage
    with RawConnection(broker) as connection:
        connection.send(os.urandom(4096))
    healthy.assert_healthy("random bytes")


def test_truncated_frame_then_close_does_not_disturb_other_clients(broker, healthy):
    with RawConnection(broker) as connection:
        connection.send(struct.pack(">i", 100) + b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00")
    healthy.assert_healthy("truncated frame")


@pytest.mark.parametrize("length", [2**31 - 1, -1, 100 * 1024 * 1024 + 1], ids=["2^31-1", "negative", "100MiB+1"])
def test_oversized_or_negative_frame_length_is_refused_by_closing_the_connection(broker, healthy, length):
    with RawConnection(broker) as connection:
        connection.send(struct.pack(">i", length) + request_header_v1(API_API_VERSIONS, 0, 1))
        assert connection.closed_by_peer_within(CLOSE_DEADLINE_S), (
            f"a frame length of {length} must make the broker close the connection")
    healthy.assert_healthy(f"frame length {length}")


def test_unknown_api_key_gets_no_crash_and_other_connections_work(broker, healthy):
    with RawConnection(broker) as connection:
        connection.send(frame(request_header_v1(9999, 0, 42) + b"\x00" * 16))
        answered_or_closed(connection, 42)
    with RawConnection(broker) as connection:
        assert API_API_VERSIONS in api_versions_v0(connection), "a fresh connection still works"
    healthy.assert_healthy("unknown api key 9999")


def test_unsupported_metadata_version_gets_no_crash(broker, healthy):
    with RawConnection(broker) as connection:
        # Metadata v99 with a v2 header and an empty (flexible) body.
        connection.send(frame(request_header_v2(API_METADATA, 99, 43) + b"\x01" + NO_TAGGED_FIELDS))
        answered_or_closed(connection, 43)
    healthy.assert_healthy("Metadata v99")


def test_unsupported_api_versions_version_is_answered_with_unsupported_version_and_supported_range(broker, healthy):
    with RawConnection(broker) as connection:
        body = compact_string("karst-e2e") + compact_string("1.0") + NO_TAGGED_FIELDS
        response = Reader(connection.request(frame(request_header_v2(API_API_VERSIONS, 99, 44) + body)))
        # KIP-511: the answer is an ApiVersions v0 response, so that any client can read it.
        assert response.unpack(">i") == 44
        error_code = response.unpack(">h")
        assert error_code == ERROR_UNSUPPORTED_VERSION, f"error code {error_code}, want 35 UNSUPPORTED_VERSION"
        ranges = {}
        for _ in range(response.unpack(">i")):
            api_key, low, high = response.unpack(">hhh")
            ranges[api_key] = (low, high)
        assert API_API_VERSIONS in ranges, "the error response names the ApiVersions versions supported"
        low, high = ranges[API_API_VERSIONS]
        assert low == 0 and high >= 3, ranges[API_API_VERSIONS]
        # The connection stays usable for the downgraded request.
        assert API_API_VERSIONS in api_versions_v0(connection, correlation_id=45)
    healthy.assert_healthy("ApiVersions v99")


def test_produce_batch_with_wrong_crc_is_refused_with_corrupt_message(broker, healthy):
    topic = "crc-check"
    create_topic(broker, topic, partitions=1)
    with RawConnection(broker) as connection:
        produce_range = api_versions_v0(connection).get(0)
        assert produce_range and produce_range[0] <= 9 <= produce_range[1], f"Produce versions {produce_range}"

        # Positive control: the same hand-built batch with a correct CRC is accepted, which
        # shows that the request itself is well formed.
        good = raw_produce_v9(connection, 1, topic, 0,
                              record_batch([b"good-1", b"good-2"], int(time.time() * 1000), keys=[b"k1", None]))
        assert good.error_code == ERROR_NONE, f"valid batch refused: {good}"
        assert good.base_offset == 0
        low, high_before = watermarks(broker, topic, 0)
        assert high_before == 2

        bad = raw_produce_v9(connection, 2, topic, 0,
                             record_batch([b"bad-1", b"bad-2"], int(time.time() * 1000), corrupt_crc=True))
        assert bad.error_code == ERROR_CORRUPT_MESSAGE, f"wrong CRC answered with {bad}, want CORRUPT_MESSAGE (2)"

        # The connection survives a refused batch, and nothing was appended.
        again = raw_produce_v9(connection, 3, topic, 0, record_batch([b"good-3"], int(time.time() * 1000)))
        assert again.error_code == ERROR_NONE and again.base_offset == 2, again
    assert watermarks(broker, topic, 0) == (0, 3), "the corrupt batch must not move the high watermark"
    healthy.assert_healthy("produce with wrong CRC")


def test_create_topic_with_invalid_name_is_refused_with_invalid_topic_exception(broker, healthy):
    admin = confluent_admin(broker)
    futures = admin.create_topics([NewTopic("bad topic!", num_partitions=1, replication_factor=1)],
                                  request_timeout=15)
    with pytest.raises(KafkaException) as raised:
        futures["bad topic!"].result(timeout=20)
    # librdkafka's TOPIC_EXCEPTION is Kafka's INVALID_TOPIC_EXCEPTION, code 17.
    assert raised.value.args[0].code() == ERROR_INVALID_TOPIC_EXCEPTION == KafkaError.TOPIC_EXCEPTION, raised.value
    assert "bad topic!" not in admin.list_topics(timeout=10).topics
    healthy.assert_healthy("CreateTopics 'bad topic!'")


def test_config_file_with_misspelled_key_is_refused_while_a_broker_serves(broker, healthy, karst_bin, tmp_path):
    config = tmp_path / "karst.toml"
    config.write_text(
        f'"listeners" = "PLAINTEXT://127.0.0.1:{free_port()}"\n'
        f'"log.dirs" = "{tmp_path / "data"}"\n'
        f'"admin.listener" = "127.0.0.1:{free_port()}"\n'
        '"log.retention.hourz" = 5\n')
    result = subprocess.run([str(karst_bin), "server", "--config", str(config)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "log.retention.hourz" in result.stderr, result.stderr
    healthy.assert_healthy("misspelled config key")


def test_broker_is_alive_and_healthy_after_all_hostile_cases(broker, healthy):
    assert broker.alive
    with RawConnection(broker) as connection:
        assert API_API_VERSIONS in api_versions_v0(connection)
    assert broker.http_get("/health")[0] == 200
    healthy.assert_healthy("all hostile cases")
    print(f"healthy pair: {healthy.delivered} records delivered, {healthy.consumed} consumed in order, no errors")
