"""Helpers for the end-to-end suite: run real `karst` processes and talk Kafka to them.

What lives here:

* `Broker` starts one `karst server` process on free loopback ports with its own data
  directory, and can SIGKILL it, SIGTERM it and start it again on the same directory.
  Every broker is registered with a `BrokerPool`; the pytest fixtures in `conftest.py`
  kill whatever is still running when a test ends, pass or fail.
* `Cluster` runs several such processes as one cluster (voters and broker-only observers on
  one metadata quorum) and reads each node's own view: `/v1/cluster` and a raw Metadata v12
  request (`metadata_v12`), so that "every node answers the same" is checked per node.
* Client factories (`confluent_producer`, `confluent_consumer`, `confluent_admin`) with the
  settings this broker needs today: no consumer groups (consumers `assign()` explicit offsets,
  never subscribe or commit). Producers are not idempotent unless a test asks for it
  (`enable.idempotence=True`; `test_idempotence.py` does), librdkafka's own default.
* A raw wire kit for the hostile-input tests: frames, request headers, a table-driven
  CRC-32C and a record-batch (magic 2) builder, written with `struct`, big-endian, from the
  Kafka protocol guide, so that the tests can send exactly the bytes they mean.

Every wait here is bounded in time (and every loop in count); nothing waits forever.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

LOOPBACK = "127.0.0.1"

# Time a broker gets from exec to accepting TCP connections on its Kafka port.
BROKER_READY_TIMEOUT_S = 20.0
# Poll interval while waiting for that.
BROKER_READY_POLL_S = 0.05
# Time a broker gets to exit cleanly after SIGTERM.
BROKER_TERMINATE_TIMEOUT_S = 20.0

# Settings a consumer needs against a broker without group coordination: librdkafka insists
# on a group.id, but these tests never subscribe or commit, so the id is never used.
CONSUMER_GROUP_ID_UNUSED = "karst-e2e-never-joined"


def die_with_parent(command: list[str]) -> list[str]:
    """Wrap a broker command so the broker gets SIGKILL if the test process dies (a pytest
    crash or hard timeout) and no broker outlives the suite: util-linux `setpriv --pdeathsig`
    sets PR_SET_PDEATHSIG and execs the command, so the pid stays the broker's. (A Popen
    preexec_fn could do the same but is unsafe with the client threads these tests run.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Listening ports come from below the kernel's ephemeral range (source ports of outgoing
# connections). A port from inside it (what binding port 0 gives) can be taken while its
# broker is down: a client reconnecting to 127.0.0.1:P may be given P itself as its source
# port, a TCP self-connect on loopback, and the restarted broker then cannot bind P ("Address
# already in use"); seen in CI after a SIGKILL restart.
_LISTEN_PORTS = range(20000, min(32000, _ephemeral_ports_start()))
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port below the ephemeral range, free a moment ago and not handed out
    before in this session."""
    import random

    for _ in range(10_000):
        port = random.randrange(_LISTEN_PORTS.start, _LISTEN_PORTS.stop)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {_LISTEN_PORTS}")


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a listener could bind `port` now. SO_REUSEADDR as the broker sets it (tokio
    does): connections of an earlier test lingering in TIME_WAIT do not make a port busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; raise AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for {what} (last value: {last!r})")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------------
# Broker processes
# ---------------------------------------------------------------------------------------------


class BrokerStartError(AssertionError):
    """The broker exited or never listened; the message carries the end of its log."""


@dataclass
class Broker:
    """One `karst server` process (and its restarts) on fixed ports and a fixed data dir."""

    binary: Path
    data_dir: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    # Extra `--set key=value` settings, in order.
    settings: dict = field(default_factory=dict)
    # If set, the broker is started with `--config FILE` instead of the listener `--set`s.
    config_file: Optional[Path] = None
    process: Optional[subprocess.Popen] = None
    starts: int = 0

    # -- addresses --------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def segment_files(self, topic: str, partition: int) -> list[Path]:
        directory = self.partition_dir(topic, partition)
        if not directory.is_dir():
            return []
        return sorted(directory.glob("*.log"))

    # -- lifecycle --------------------------------------------------------------------------

    def command(self) -> list[str]:
        if self.config_file is not None:
            command = [str(self.binary), "server", "--config", str(self.config_file)]
        else:
            command = [
                str(self.binary), "server",
                "--set", f"listeners=PLAINTEXT://{LOOPBACK}:{self.port}",
                "--set", f"log.dirs={self.data_dir}",
                "--set", f"admin.listener={LOOPBACK}:{self.admin_port}",
            ]
        for key, value in self.settings.items():
            command += ["--set", f"{key}={value}"]
        return command

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"broker-{self.port}.log"

    def start(self, wait: bool = True) -> "Broker":
        assert not self.alive, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            die_with_parent(self.command()),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1"},
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = BROKER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(
                    f"broker exited with code {self.process.returncode} before listening on "
                    f"{self.bootstrap}\n{self.log_tail()}")
            if port_accepts(self.port):
                return
            time.sleep(BROKER_READY_POLL_S)
        raise BrokerStartError(
            f"broker did not accept connections on {self.bootstrap} within {timeout_s}s\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the crash we promise loses no acknowledged data."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = BROKER_TERMINATE_TIMEOUT_S) -> int:
        """SIGTERM and wait for the exit code (clean shutdown must exit 0)."""
        assert self.alive, "broker is not running"
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"broker did not exit within {timeout_s}s of SIGTERM\n{self.log_tail()}")

    def restart(self) -> "Broker":
        """Start again on the same ports and data directory (after kill or terminate)."""
        assert not self.alive, "stop the broker before restarting it"
        return self.start()

    def stop(self) -> None:
        """Finalizer: make sure the process is gone, whatever state it is in."""
        if self.alive:
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"--- last {len(text)} log lines of broker {self.bootstrap} ({self.log_path}) ---\n" + "\n".join(text)

    # -- admin listener -------------------------------------------------------------------

    def http_get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout_s) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


class BrokerPool:
    """Every broker a test starts; `close_all` kills the ones still running."""

    def __init__(self, binary: Path, base_dir: Path):
        self.binary = binary
        self.base_dir = base_dir
        self.brokers: list[Broker] = []

    def new(self, settings: Optional[dict] = None, name: Optional[str] = None, **kwargs) -> Broker:
        name = name or f"broker{len(self.brokers)}"
        broker = Broker(
            binary=self.binary,
            data_dir=self.base_dir / name / "data",
            log_dir=self.base_dir / name,
            settings=dict(settings or {}),
            **kwargs,
        )
        self.brokers.append(broker)
        return broker

    def start(self, settings: Optional[dict] = None, **kwargs) -> Broker:
        return self.new(settings, **kwargs).start()

    def close_all(self) -> None:
        for broker in self.brokers:
            broker.stop()

    def log_tails(self) -> str:
        return "\n".join(broker.log_tail() for broker in self.brokers if broker.process is not None)


# ---------------------------------------------------------------------------------------------
# Client factories
# ---------------------------------------------------------------------------------------------


def confluent_producer(broker: Broker, **overrides):
    from confluent_kafka import Producer

    config = {
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    }
    config.update(overrides)
    return Producer(config)


def confluent_consumer(broker: Broker, **overrides):
    from confluent_kafka import Consumer

    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": CONSUMER_GROUP_ID_UNUSED,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    config.update(overrides)
    return Consumer(config)


def confluent_admin(broker: Broker, **overrides):
    from confluent_kafka.admin import AdminClient

    config = {"bootstrap.servers": broker.bootstrap}
    config.update(overrides)
    return AdminClient(config)


def create_topic(broker: Broker, name: str, partitions: int = 1, config: Optional[dict] = None,
                 timeout_s: float = 30.0) -> None:
    """CreateTopics through the confluent AdminClient; raises on any error."""
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(broker)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    futures[name].result(timeout=timeout_s)
    wait_until(lambda: topic_partition_count(broker, name) == partitions, timeout_s=timeout_s,
               what=f"topic {name} with {partitions} partitions in metadata")
    wait_until(lambda: partitions_answer(broker, name, partitions), timeout_s=timeout_s,
               what=f"every partition of {name} answered by its leader")


def partitions_answer(broker: Broker, topic: str, partitions: int) -> bool:
    """Whether each partition's leader answers ListOffsets: Metadata names a leader as soon
    as the controller decided it, the leader's replica takes the role a moment later (a raw
    request in between gets NOT_LEADER_OR_FOLLOWER, which real clients retry). Asked with
    the admin client: a consumer with a group.id would look up its coordinator and so
    create __consumer_offsets as a side effect."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin = confluent_admin(broker)
    wanted = {TopicPartition(topic, partition): OffsetSpec.latest() for partition in range(partitions)}
    try:
        for future in admin.list_offsets(wanted, request_timeout=5).values():
            future.result(timeout=10)
        return True
    except KafkaException:
        return False


def topic_partition_count(broker: Broker, topic: str) -> int:
    admin = confluent_admin(broker)
    metadata = admin.list_topics(topic=topic, timeout=10)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return 0
    return len(described.partitions)


def watermarks(broker: Broker, topic: str, partition: int, timeout_s: float = 10.0) -> tuple[int, int]:
    """(low, high) watermark of one partition, asked of the broker (ListOffsets through the
    admin client: a consumer with a group.id would also look up a group coordinator, which
    creates __consumer_offsets — a metadata write the disk-full tests must not cause)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin = confluent_admin(broker)
    answers = []
    for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):
        wanted = {TopicPartition(topic, partition): spec}
        [future] = admin.list_offsets(wanted, request_timeout=timeout_s).values()
        answers.append(future.result(timeout=timeout_s).offset)
    return answers[0], answers[1]


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple
    timestamp: int


def normalize_headers(headers) -> tuple:
    return tuple((name, value) for name, value in (headers or []))


def consume_partitions(broker: Broker, topic: str, end_offsets: dict[int, int],
                       start_offsets: Optional[dict[int, int]] = None, timeout_s: float = 120.0,
                       **consumer_overrides) -> dict[int, list[Record]]:
    """Read `topic` with `assign()` from `start_offsets` (default 0) until each partition has
    delivered the record at `end_offsets[p] - 1`; return the records per partition in the
    order the consumer delivered them. Any consumer error fails the read."""
    from confluent_kafka import KafkaError, TopicPartition

    start_offsets = start_offsets or {p: 0 for p in end_offsets}
    records: dict[int, list[Record]] = {p: [] for p in end_offsets}
    pending = {p for p in end_offsets if end_offsets[p] > start_offsets[p]}
    consumer = confluent_consumer(broker, **consumer_overrides)
    try:
        consumer.assign([TopicPartition(topic, p, start_offsets[p]) for p in end_offsets])
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, (
                f"consumer of {topic} timed out after {timeout_s}s; still waiting on partitions "
                f"{sorted(pending)}; got {({p: len(r) for p, r in records.items()})} records, "
                f"want up to {end_offsets}")
            for message in consumer.consume(num_messages=10000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {error}")
                partition = message.partition()
                assert partition in records, f"record from unassigned partition {partition}"
                records[partition].append(Record(
                    partition=partition,
                    offset=message.offset(),
                    key=message.key(),
                    value=message.value(),
                    headers=normalize_headers(message.headers()),
                    timestamp=message.timestamp()[1],
                ))
                if message.offset() >= end_offsets[partition] - 1:
                    pending.discard(partition)
    finally:
        consumer.close()
    return records


# ---------------------------------------------------------------------------------------------
# Raw wire kit
# ---------------------------------------------------------------------------------------------

API_PRODUCE = 0
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22

ERROR_NONE = 0
ERROR_CORRUPT_MESSAGE = 2
ERROR_INVALID_TOPIC_EXCEPTION = 17
ERROR_UNSUPPORTED_VERSION = 35
ERROR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERROR_INVALID_PRODUCER_EPOCH = 47
ERROR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def _crc32c_table() -> list[int]:
    polynomial = 0x82F63B78  # CRC-32C (Castagnoli), reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "CRC-32C check value"


def zigzag_varint(value: int) -> bytes:
    return unsigned_varint((value << 1) ^ (value >> 63))


def unsigned_varint(value: int) -> bytes:
    assert value >= 0
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(text: Optional[str]) -> bytes:
    if text is None:
        return unsigned_varint(0)
    data = text.encode()
    return unsigned_varint(len(data) + 1) + data


def compact_bytes(data: Optional[bytes]) -> bytes:
    if data is None:
        return unsigned_varint(0)
    return unsigned_varint(len(data) + 1) + data


def compact_array(items: list[bytes]) -> bytes:
    return unsigned_varint(len(items) + 1) + b"".join(items)


NO_TAGGED_FIELDS = unsigned_varint(0)


def request_header_v1(api_key: int, api_version: int, correlation_id: int, client_id: str = "karst-e2e") -> bytes:
    client = client_id.encode()
    return struct.pack(">hhih", api_key, api_version, correlation_id, len(client)) + client


def request_header_v2(api_key: int, api_version: int, correlation_id: int, client_id: str = "karst-e2e") -> bytes:
    return request_header_v1(api_key, api_version, correlation_id, client_id) + NO_TAGGED_FIELDS


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def encode_record(offset_delta: int, timestamp_delta: int, key: Optional[bytes], value: Optional[bytes],
                  headers: Iterable[tuple[str, Optional[bytes]]] = ()) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += zigzag_varint(timestamp_delta)
    body += zigzag_varint(offset_delta)
    for blob in (key, value):
        if blob is None:
            body += zigzag_varint(-1)
        else:
            body += zigzag_varint(len(blob)) + blob
    headers = list(headers)
    body += zigzag_varint(len(headers))
    for name, header_value in headers:
        name_bytes = name.encode()
        body += zigzag_varint(len(name_bytes)) + name_bytes
        if header_value is None:
            body += zigzag_varint(-1)
        else:
            body += zigzag_varint(len(header_value)) + header_value
    return zigzag_varint(len(body)) + bytes(body)


def record_batch(values: list[bytes], timestamp_ms: int, keys: Optional[list[Optional[bytes]]] = None,
                 corrupt_crc: bool = False, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1) -> bytes:
    """An uncompressed magic-2 record batch with base offset 0, by default without a producer
    id (pass `producer_id`, `producer_epoch`, `base_sequence` for an idempotent batch).

    Layout (Kafka protocol guide, "Record Batch"): baseOffset int64, batchLength int32,
    partitionLeaderEpoch int32, magic int8, crc uint32 (CRC-32C of everything after it),
    attributes int16, lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64,
    producerId int64, producerEpoch int16, baseSequence int32, records (int32 count + records).
    """
    assert values, "a batch holds at least one record"
    keys = keys or [None] * len(values)
    records = b"".join(encode_record(i, 0, keys[i], value) for i, value in enumerate(values))
    after_crc = struct.pack(
        ">hiqqqhii",
        0,                  # attributes: no compression, CreateTime, not transactional
        len(values) - 1,    # lastOffsetDelta
        timestamp_ms,       # baseTimestamp
        timestamp_ms,       # maxTimestamp
        producer_id,        # producerId
        producer_epoch,     # producerEpoch
        base_sequence,      # baseSequence
        len(values),
    ) + records
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0x5A5A5A5A
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


# Batch attribute bits (Kafka protocol guide, "Record Batch").
CODEC_MASK = 0x07
TIMESTAMP_TYPE_LOG_APPEND_TIME = 0x08


def build_batch(records: list[bytes], base_timestamp_ms: int, max_timestamp_ms: int, codec: int = 0,
                compress: Optional[Callable[[bytes], bytes]] = None, attributes: int = 0) -> bytes:
    """A magic-2 batch of already encoded `records` (see `encode_record`), base offset 0, no
    producer id; `compress` turns the records' bytes into the body of codec `codec`."""
    body = b"".join(records)
    if compress is not None:
        body = compress(body)
    after_crc = struct.pack(">hiqqqhii", attributes | codec, len(records) - 1, base_timestamp_ms,
                            max_timestamp_ms, -1, -1, -1, len(records)) + body
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


@dataclass
class StoredBatch:
    base_offset: int
    attributes: int
    records_count: int
    max_timestamp_ms: int
    crc_valid: bool
    data: bytes

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK


def stored_batches(broker: "Broker", topic: str, partition: int = 0) -> list[StoredBatch]:
    """Every batch in the partition's segment files as the broker wrote it, in offset order."""
    batches = []
    for segment in sorted(broker.partition_dir(topic, partition).glob("*.log")):
        data = segment.read_bytes()
        position = 0
        while position + 61 <= len(data):
            base_offset, length = struct.unpack_from(">qi", data, position)
            if length <= 0:
                break  # preallocated tail
            batch = data[position:position + 12 + length]
            (crc,) = struct.unpack_from(">I", batch, 17)
            attributes, = struct.unpack_from(">h", batch, 21)
            (max_timestamp,) = struct.unpack_from(">q", batch, 35)
            (count,) = struct.unpack_from(">i", batch, 57)
            batches.append(StoredBatch(base_offset, attributes, count, max_timestamp,
                                       crc32c(batch[21:]) == crc, batch))
            position += 12 + length
    return batches


def produce_request_v9(correlation_id: int, topic: str, partition: int, records: bytes,
                       acks: int = -1, timeout_ms: int = 10000) -> bytes:
    """A complete framed Produce v9 request (flexible version: compact types, tagged fields)."""
    partition_data = struct.pack(">i", partition) + compact_bytes(records) + NO_TAGGED_FIELDS
    topic_data = compact_string(topic) + compact_array([partition_data]) + NO_TAGGED_FIELDS
    body = (compact_string(None)  # transactional_id
            + struct.pack(">hi", acks, timeout_ms)
            + compact_array([topic_data])
            + NO_TAGGED_FIELDS)
    return frame(request_header_v2(API_PRODUCE, 9, correlation_id) + body)


class Reader:
    """Cursor over a response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        assert self.position + count <= len(self.data), (
            f"response too short: need {count} bytes at {self.position}, have {len(self.data)}")
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def unpack(self, layout: str):
        values = struct.unpack(layout, self.take(struct.calcsize(layout)))
        return values[0] if len(values) == 1 else values

    def unsigned_varint(self) -> int:
        shift = 0
        value = 0
        for _ in range(10):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise AssertionError("varint longer than 10 bytes")

    def string(self) -> Optional[str]:
        """A classic (int16-length) nullable string."""
        length = self.unpack(">h")
        return None if length < 0 else self.take(length).decode()

    def compact_string(self) -> Optional[str]:
        length = self.unsigned_varint()
        return None if length == 0 else self.take(length - 1).decode()

    def compact_array_length(self) -> int:
        length = self.unsigned_varint()
        return -1 if length == 0 else length - 1

    def skip_tagged_fields(self) -> None:
        for _ in range(self.unsigned_varint()):
            self.unsigned_varint()  # tag
            self.take(self.unsigned_varint())


@dataclass
class ProducePartitionResponse:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_start_offset: int
    error_message: Optional[str]
    log_append_time_ms: int = -1
    # (batch_index, message) per refused record (KIP-467, v8+).
    record_errors: list = field(default_factory=list)


def parse_produce_response_v9(body: bytes) -> list[ProducePartitionResponse]:
    """Body of a Produce v9 response after the v1 response header (correlation id, tags)."""
    reader = Reader(body)
    results = []
    for _ in range(reader.compact_array_length()):
        topic = reader.compact_string()
        for _ in range(reader.compact_array_length()):
            partition, error_code, base_offset, log_append_time, log_start_offset = reader.unpack(">ihqqq")
            record_errors = []
            for _ in range(reader.compact_array_length()):
                batch_index = reader.unpack(">i")
                record_errors.append((batch_index, reader.compact_string()))
                reader.skip_tagged_fields()
            error_message = reader.compact_string()
            reader.skip_tagged_fields()
            results.append(ProducePartitionResponse(topic, partition, error_code, base_offset,
                                                    log_start_offset, error_message, log_append_time,
                                                    record_errors))
        reader.skip_tagged_fields()
    reader.unpack(">i")  # throttle_time_ms
    reader.skip_tagged_fields()
    return results


class ConnectionClosed(Exception):
    pass


class RawConnection:
    """A plain TCP connection to the Kafka port, for hand-built frames."""

    def __init__(self, broker_or_port, timeout_s: float = 10.0):
        port = broker_or_port.port if isinstance(broker_or_port, Broker) else broker_or_port
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout_s)
        self.sock.settimeout(timeout_s)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            try:
                chunk = self.sock.recv(count - len(chunks))
            except (ConnectionResetError, BrokenPipeError) as error:
                raise ConnectionClosed(str(error)) from error
            if not chunk:
                raise ConnectionClosed(f"EOF after {len(chunks)} of {count} bytes")
            chunks += chunk
        return bytes(chunks)

    def recv_frame(self) -> bytes:
        (length,) = struct.unpack(">i", self.recv_exact(4))
        assert 0 <= length <= 64 * 1024 * 1024, f"implausible response frame length {length}"
        return self.recv_exact(length)

    def closed_by_peer_within(self, timeout_s: float) -> bool:
        """True if the broker closes (EOF or reset) within `timeout_s`, reading and discarding
        anything it sends first; False if the connection is still open then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False

    def request(self, payload: bytes) -> bytes:
        """Send one framed request and return the response frame (header included)."""
        self.send(payload)
        return self.recv_frame()


def api_versions_v0(connection: RawConnection, correlation_id: int = 1) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 over a raw connection: {api_key: (min_version, max_version)}."""
    response = Reader(connection.request(frame(request_header_v1(API_API_VERSIONS, 0, correlation_id))))
    assert response.unpack(">i") == correlation_id
    error_code = response.unpack(">h")
    assert error_code == ERROR_NONE, f"ApiVersions v0 error {error_code}"
    versions = {}
    for _ in range(response.unpack(">i")):
        api_key, low, high = response.unpack(">hhh")
        versions[api_key] = (low, high)
    return versions


def raw_produce_v9(connection: RawConnection, correlation_id: int, topic: str, partition: int,
                   batch: bytes) -> ProducePartitionResponse:
    response = Reader(connection.request(produce_request_v9(correlation_id, topic, partition, batch)))
    got_correlation_id = response.unpack(">i")
    assert got_correlation_id == correlation_id, f"correlation id {got_correlation_id} != {correlation_id}"
    response.skip_tagged_fields()  # response header v1
    results = parse_produce_response_v9(response.data[response.position:])
    assert len(results) == 1, f"expected one partition response, got {results}"
    return results[0]


def init_producer_id_v1(connection: RawConnection, correlation_id: int,
                        transactional_id: Optional[str] = None) -> tuple[int, int, int]:
    """InitProducerId v1 (not flexible): (error_code, producer_id, producer_epoch)."""
    if transactional_id is None:
        transactional = struct.pack(">h", -1)
    else:
        encoded = transactional_id.encode()
        transactional = struct.pack(">h", len(encoded)) + encoded
    body = transactional + struct.pack(">i", 60000)  # transaction_timeout_ms
    response = Reader(connection.request(
        frame(request_header_v1(API_INIT_PRODUCER_ID, 1, correlation_id) + body)))
    assert response.unpack(">i") == correlation_id
    _throttle_ms, error_code, producer_id, producer_epoch = response.unpack(">ihqh")
    return error_code, producer_id, producer_epoch


# ---------------------------------------------------------------------------------------------
# Clusters: several nodes on one metadata quorum
# ---------------------------------------------------------------------------------------------

# Time a cluster gets from its voters listening to one leader everyone agrees on.
QUORUM_LEADER_TIMEOUT_S = 30.0


def new_cluster_id() -> str:
    """A Kafka-style cluster id (22 characters of URL-safe base64 of a random UUID), as
    `karst storage random-uuid` prints; never starting with '-' (it would read as a flag)."""
    import base64
    import uuid

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class Cluster:
    """Voters (broker + controller) and broker-only nodes of one cluster on free loopback
    ports, each a `Broker` of `pool` (so the pool's finalizer kills them all).

    `nodes[id]` is the node with `node.id` id; `node.controller_port` its CONTROLLER
    listener. Every node gets the same `cluster.id` and `controller.quorum.voters`, plus
    `settings` (and per-node settings given to `add_node`)."""

    def __init__(self, pool: BrokerPool, voter_ids: Iterable[int] = (1, 2, 3),
                 settings: Optional[dict] = None, cluster_id: Optional[str] = None):
        self.pool = pool
        self.cluster_id = cluster_id or new_cluster_id()
        self.settings = dict(settings or {})
        self.voter_ids = list(voter_ids)
        self.controller_ports = {node_id: free_port() for node_id in self.voter_ids}
        self.nodes: dict[int, Broker] = {}
        for node_id in self.voter_ids:
            self.add_node(node_id)

    @property
    def voters_setting(self) -> str:
        return ",".join(f"{node_id}@{LOOPBACK}:{port}" for node_id, port in self.controller_ports.items())

    def add_node(self, node_id: int, broker_only: bool = False, name: Optional[str] = None,
                 settings: Optional[dict] = None) -> Broker:
        """A node (not started). A voter's controller port is fixed by the quorum; a
        broker-only node (an observer) gets its own."""
        controller_port = self.controller_ports[node_id] if not broker_only else free_port()
        node = self.pool.new(name=name or f"node{node_id}")
        node.node_id = node_id
        node.controller_port = controller_port
        node.settings = {
            "node.id": node_id,
            "cluster.id": self.cluster_id,
            "listeners": f"PLAINTEXT://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:{controller_port}",
            "controller.quorum.voters": self.voters_setting,
            **({"process.roles": "broker"} if broker_only else {}),
            **self.settings,
            **(settings or {}),
        }
        if name is None:
            self.nodes[node_id] = node
        return node

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, node_ids: Optional[Iterable[int]] = None) -> "Cluster":
        """Starts the nodes (all voters by default) together and waits until each serves
        Kafka (a node's Kafka port opens once it is registered, so this needs a quorum)."""
        started = [self.nodes[node_id].start(wait=False) for node_id in (node_ids or self.voter_ids)]
        for node in started:
            node.wait_ready()
        return self

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    @property
    def alive_nodes(self) -> list[Broker]:
        return [node for node in self.nodes.values() if node.alive]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.alive_nodes)

    # -- the quorum as each node sees it (admin listener, /v1/cluster) -----------------------

    @staticmethod
    def view(node: Broker, timeout_s: float = 5.0) -> Optional[dict]:
        """`GET /v1/cluster` of one node, or None if it does not answer."""
        import json

        try:
            status, body = node.http_get("/v1/cluster", timeout_s=timeout_s)
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def agreed_leader(self, nodes: Optional[Iterable[Broker]] = None) -> Optional[int]:
        """The quorum leader if every given (default: live) node names the same one."""
        views = [self.view(node) for node in (nodes or self.alive_nodes)]
        leaders = {view["quorum"]["leader_id"] if view else None for view in views}
        if len(leaders) == 1 and None not in leaders:
            return leaders.pop()
        return None

    def wait_for_leader(self, nodes: Optional[Iterable[Broker]] = None,
                        timeout_s: float = QUORUM_LEADER_TIMEOUT_S, exclude: Iterable[int] = ()) -> int:
        nodes = list(nodes or self.alive_nodes)
        excluded = set(exclude)
        return wait_until(
            lambda: (leader := self.agreed_leader(nodes)) is not None and leader not in excluded and leader,
            timeout_s=timeout_s, interval_s=0.02, what="one quorum leader all nodes agree on")

    def wait_caught_up(self, node: Broker, timeout_s: float = 20.0) -> dict:
        """Waits until `node` has applied everything the leader has committed (checked
        against the leader's view taken after the node's); returns the node's view."""
        def caught_up():
            leader_id = self.agreed_leader()
            if leader_id is None:
                return None
            leader_view = self.view(self.nodes[leader_id])
            view = self.view(node)
            if not leader_view or not view:
                return None
            target = leader_view["quorum"]["committed_index"]
            return view if view["quorum"]["applied_index"] >= target else None

        return wait_until(caught_up, timeout_s=timeout_s, interval_s=0.05,
                          what=f"node {node.node_id} applying up to the leader's commit index")

    # -- Metadata as each node answers it ---------------------------------------------------

    def metadata(self, node: Broker) -> "ClusterMetadata":
        with RawConnection(node) as connection:
            return metadata_v12(connection)

    def metadata_views(self, nodes: Optional[Iterable[Broker]] = None) -> dict[int, "ClusterMetadata"]:
        return {node.node_id: self.metadata(node) for node in (nodes or self.alive_nodes)}

    def wait_identical_metadata(self, nodes: Optional[Iterable[Broker]] = None, timeout_s: float = 10.0,
                                predicate=lambda metadata: True, interval_s: float = 0.05) -> "ClusterMetadata":
        """Waits until every given node answers the same Metadata (all topics) and that
        answer satisfies `predicate`; returns it."""
        nodes = list(nodes or self.alive_nodes)

        def identical():
            views = self.metadata_views(nodes)
            distinct = set(views.values())
            if len(distinct) == 1:
                (only,) = distinct
                if predicate(only):
                    return only
            return None

        try:
            return wait_until(identical, timeout_s=timeout_s, interval_s=interval_s,
                              what="identical Metadata from every node")
        except AssertionError as error:
            views = self.metadata_views(nodes)
            raise AssertionError(f"{error}\n" + "\n".join(
                f"node {node_id}: {view.summary()}" for node_id, view in views.items())) from None


# ---------------------------------------------------------------------------------------------
# Raw Metadata v12: exactly what one node answers (a client library would mix nodes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionMetadata:
    error_code: int
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]


@dataclass(frozen=True)
class TopicMetadata:
    error_code: int
    name: str
    topic_id: bytes
    is_internal: bool
    partitions: tuple[PartitionMetadata, ...]  # sorted by partition


@dataclass(frozen=True)
class ClusterMetadata:
    """One node's Metadata answer for all topics, minus what legitimately differs between
    nodes (KIP-590: each node names itself as the controller). Hashable, for comparison."""

    brokers: tuple[tuple[int, str, int, Optional[str]], ...]  # (id, host, port, rack), sorted
    cluster_id: Optional[str]
    topics: tuple[TopicMetadata, ...]  # sorted by name

    def topic(self, name: str) -> Optional[TopicMetadata]:
        return next((topic for topic in self.topics if topic.name == name), None)

    def summary(self) -> str:
        return (f"brokers={[b[0] for b in self.brokers]} topics="
                f"{[(t.name, len(t.partitions)) for t in self.topics][:20]}"
                f"{' ...' if len(self.topics) > 20 else ''}")


def metadata_request_v12(correlation_id: int, topics: Optional[list[str]] = None) -> bytes:
    """Metadata v12 (flexible): `topics` None asks for all topics."""
    if topics is None:
        topic_array = unsigned_varint(0)  # null: all topics
    else:
        # v10+: each entry is (topic_id uuid, name); a zero uuid means "by name".
        topic_array = compact_array([bytes(16) + compact_string(name) + NO_TAGGED_FIELDS for name in topics])
    body = topic_array + b"\x00" + b"\x00" + NO_TAGGED_FIELDS  # no auto-create, no authorized ops
    return frame(request_header_v2(API_METADATA, 12, correlation_id) + body)


def parse_metadata_response_v12(body: bytes) -> ClusterMetadata:
    reader = Reader(body)
    reader.unpack(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.compact_array_length()):
        node_id = reader.unpack(">i")
        host = reader.compact_string()
        port = reader.unpack(">i")
        rack = reader.compact_string()
        reader.skip_tagged_fields()
        brokers.append((node_id, host, port, rack))
    cluster_id = reader.compact_string()
    reader.unpack(">i")  # controller_id: each node reports itself (KIP-590)

    def int32_array() -> tuple[int, ...]:
        return tuple(reader.unpack(">i") for _ in range(reader.compact_array_length()))

    topics = []
    for _ in range(reader.compact_array_length()):
        error_code = reader.unpack(">h")
        name = reader.compact_string()
        topic_id = reader.take(16)
        is_internal = bool(reader.unpack(">b"))
        partitions = []
        for _ in range(reader.compact_array_length()):
            partition_error, index, leader, leader_epoch = reader.unpack(">hiii")
            replicas, isr, offline = int32_array(), int32_array(), int32_array()
            reader.skip_tagged_fields()
            partitions.append(PartitionMetadata(partition_error, index, leader, leader_epoch,
                                                replicas, isr, offline))
        reader.unpack(">i")  # topic_authorized_operations
        reader.skip_tagged_fields()
        topics.append(TopicMetadata(error_code, name, topic_id, is_internal,
                                    tuple(sorted(partitions, key=lambda p: p.partition))))
    reader.skip_tagged_fields()
    return ClusterMetadata(tuple(sorted(brokers)), cluster_id, tuple(sorted(topics, key=lambda t: t.name)))


def metadata_v12(connection: RawConnection, topics: Optional[list[str]] = None,
                 correlation_id: int = 1) -> ClusterMetadata:
    response = Reader(connection.request(metadata_request_v12(correlation_id, topics)))
    got_correlation_id = response.unpack(">i")
    assert got_correlation_id == correlation_id, f"correlation id {got_correlation_id} != {correlation_id}"
    response.skip_tagged_fields()  # response header v1
    return parse_metadata_response_v12(response.data[response.position:])
