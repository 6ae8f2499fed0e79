"""Disk full: the broker refuses appends with KAFKA_STORAGE_ERROR, stays up, serves what it
acknowledged, and accepts appends again once space returns. Nothing half-written is ever
served, before or after a SIGKILL restart.

The broker's data directory is a 16 MiB tmpfs, mounted for the test (root only: the test is
skipped, saying why, where `mount` is not permitted) and unmounted after the broker is killed.
A filler file takes most of it; a confluent-kafka producer (acks=all, no retries, so each
refusal reaches the test) then writes numbered records until deliveries fail with
KAFKA_STORAGE_ERROR. Run once per storage backend with the free-space reserve off (each
reports ENOSPC its own way), and once with it on, where appends stop before the disk is full.
"""

import errno
import os
import subprocess
import time

import pytest
from confluent_kafka import KafkaError

from karst import confluent_consumer, confluent_producer, consume_partitions, create_topic, wait_until, watermarks

TOPIC = "disk-full"
TMPFS_BYTES = 16 * 1024 * 1024
# Space left free after the filler: room for a few segments' worth of records.
HEADROOM_BYTES = 3 * 1024 * 1024
# Segment sizes to fill the disk with: large ones fill it mid-segment (the data write fails);
# tiny ones roll every ~20 records, so the disk also fills while a roll writes the sealed
# segment's index files or the new segment's first batch.
SEGMENT_BYTES = [256 * 1024, 20_000]
RECORD_VALUE_BYTES = 1000
# Records produced per flush while filling, and the bounds on filling the disk.
CHUNK_RECORDS = 100
FILL_RECORDS_MAX = 3 * TMPFS_BYTES // RECORD_VALUE_BYTES
FILL_DEADLINE_S = 60
# Chunks produced after the first refusal: the broker must keep refusing cleanly, not die.
CHUNKS_AFTER_FULL = 3
RECORDS_AFTER_SPACE_RETURNS = 500
BACKENDS = ["io_uring", "portable"]
# log.dir.min.free.bytes of the reserve test, and how far below it the volume may go (the
# index files of a roll and metadata writes are not counted against it).
RESERVE_BYTES = 1024 * 1024
RESERVE_SLACK_BYTES = 128 * 1024
# How long a node whose metadata quorum stopped may take to exit.
QUORUM_STOP_EXIT_S = 30


def mount_tmpfs(directory):
    directory.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the data directory (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip() or mounted.returncode}")


@pytest.fixture
def small_disk(request, brokers, tmp_path):
    """A 16 MiB tmpfs; every broker is killed before it is unmounted."""
    mount_point = tmp_path / "small-disk"
    mount_tmpfs(mount_point)

    def unmount():
        brokers.close_all()
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)

    request.addfinalizer(unmount)
    return mount_point


def free_bytes(directory) -> int:
    volume = os.statvfs(directory)
    return volume.f_bavail * volume.f_frsize


def fill(path, leave_bytes):
    """Writes a file that leaves about `leave_bytes` free on its filesystem."""
    size = max(0, free_bytes(path.parent) - leave_bytes)
    block = b"\0" * (1024 * 1024)
    with open(path, "wb") as filler:
        while size > 0:
            size -= filler.write(block[:min(size, len(block))])
        filler.flush()
        os.fsync(filler.fileno())


def value_of(index: int) -> bytes:
    return f"{index:08d}".encode().ljust(RECORD_VALUE_BYTES, b".")


class Producer:
    """acks=all, no retries: every delivery report is final. Keeps value -> offset for what
    was acknowledged and the error codes of what was refused."""

    def __init__(self, broker):
        self.producer = confluent_producer(broker, **{
            "retries": 0, "linger.ms": 2, "batch.size": 16384, "message.timeout.ms": 20000})
        self.next_index = 0
        self.acknowledged: dict[bytes, int] = {}
        self.refused: list[int] = []

    def _report(self, error, message):
        if error is None:
            self.acknowledged[message.value()] = message.offset()
        else:
            self.refused.append(error.code())

    def produce(self, count):
        """Produces `count` records and waits for every delivery report; returns how many
        were refused."""
        refused_before = len(self.refused)
        for _ in range(count):
            self.producer.produce(TOPIC, value=value_of(self.next_index), partition=0, on_delivery=self._report)
            self.next_index += 1
            self.producer.poll(0)
        assert self.producer.flush(30) == 0, "delivery reports still outstanding after 30s"
        return len(self.refused) - refused_before


def assert_log_is_exactly(broker, acknowledged: dict[bytes, int], where: str):
    """The partition holds every acknowledged record once, at its acknowledged offset, and
    nothing else: offsets 0..HW-1 without holes, each one an acknowledged value."""
    low, high = watermarks(broker, TOPIC, 0)
    assert (low, high) == (0, len(acknowledged)), (
        f"{where}: watermarks {(low, high)}, but {len(acknowledged)} records were acknowledged")
    records = consume_partitions(broker, TOPIC, {0: high}, timeout_s=60)[0]
    offsets = [record.offset for record in records]
    assert offsets == list(range(high)), f"{where}: offsets are not 0..{high - 1} once each"
    by_offset = {offset: value for value, offset in acknowledged.items()}
    for record in records:
        assert record.value == by_offset[record.offset], (
            f"{where}: offset {record.offset} holds {record.value[:12]!r}..., acknowledged "
            f"{by_offset[record.offset][:12]!r}...")


def assert_alive(broker, where):
    assert broker.alive, f"{where}: the broker exited\n{broker.log_tail()}"
    assert broker.http_get("/health")[0] == 200, f"{where}: /health is not 200"


def ensure_offsets_topic(broker) -> None:
    from confluent_kafka import TopicPartition
    consumer = confluent_consumer(broker)
    try:
        consumer.committed([TopicPartition(TOPIC, 0)], timeout=30)
    finally:
        consumer.close()


@pytest.mark.parametrize("segment_bytes", SEGMENT_BYTES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disk_refuses_appends_stays_up_and_recovers_when_space_returns(brokers, small_disk, backend,
                                                                            segment_bytes):
    # The reserve is off: the disk really fills, and each backend meets ENOSPC in a write.
    broker = brokers.new({"log.io.backend": backend, "log.dir.min.free.bytes": "0",
                          "offsets.topic.num.partitions": 1})
    broker.data_dir = small_disk / "data"
    broker.start()
    create_topic(broker, TOPIC, partitions=1, config={"segment.bytes": str(segment_bytes)})
    # The consumers below have a group.id, so librdkafka looks up their group coordinator,
    # which creates __consumer_offsets: a metadata write that, with the reserve off, would
    # meet the full disk and stop the node (the last test here shows that case). It is
    # created now, before the disk fills.
    ensure_offsets_topic(broker)
    filler = small_disk / "filler"
    fill(filler, HEADROOM_BYTES)

    # 1. Produce until the broker refuses for lack of space (bounded in time and records).
    producer = Producer(broker)
    deadline = time.monotonic() + FILL_DEADLINE_S
    while not producer.refused:
        assert producer.next_index < FILL_RECORDS_MAX and time.monotonic() < deadline, (
            f"no refusal after {producer.next_index} records ({len(producer.acknowledged)} acknowledged) "
            f"on a {TMPFS_BYTES >> 20} MiB disk")
        producer.produce(CHUNK_RECORDS)
    for _ in range(CHUNKS_AFTER_FULL):
        producer.produce(CHUNK_RECORDS)
    assert set(producer.refused) == {KafkaError.KAFKA_STORAGE_ERROR}, (
        f"refusals should all be KAFKA_STORAGE_ERROR, got codes {sorted(set(producer.refused))}")
    print(f"{backend}, {segment_bytes}-byte segments: disk full after {len(producer.acknowledged)} acknowledged records; "
          f"{len(producer.refused)} refused")

    # 2. Still up, and serving exactly what it acknowledged.
    assert_alive(broker, "disk full")
    assert_log_is_exactly(broker, producer.acknowledged, "while the disk is full")

    # 3. Space returns: appends succeed again, continuing the offsets.
    filler.unlink()
    acknowledged_before = len(producer.acknowledged)
    refused = producer.produce(RECORDS_AFTER_SPACE_RETURNS)
    assert refused == 0, (
        f"{refused} of {RECORDS_AFTER_SPACE_RETURNS} appends refused after space returned "
        f"(codes {sorted(set(producer.refused[-refused:]))}): the partition did not come back")
    assert len(producer.acknowledged) == acknowledged_before + RECORDS_AFTER_SPACE_RETURNS
    assert_alive(broker, "after space returned")
    assert_log_is_exactly(broker, producer.acknowledged, "after space returned")

    # 4. A crash changes nothing: the same records, each once, at the same offsets.
    broker.kill()
    broker.restart()
    assert_log_is_exactly(broker, producer.acknowledged, "after a SIGKILL restart")
    assert producer.produce(10) == 0, "appends refused after the restart"
    assert_log_is_exactly(broker, producer.acknowledged, "after appending past the restart")


def test_the_free_space_reserve_keeps_metadata_and_restarts_working_when_data_fills_the_disk(
        brokers, small_disk):
    """Appends stop at log.dir.min.free.bytes, so the metadata quorum can still write: a topic
    is created while produce is refused, and a SIGKILLed broker restarts (its registration is a
    metadata write) and serves exactly what it acknowledged."""
    broker = brokers.new({"log.dir.min.free.bytes": str(RESERVE_BYTES)})
    broker.data_dir = small_disk / "data"
    broker.start()
    create_topic(broker, TOPIC, partitions=1, config={"segment.bytes": str(SEGMENT_BYTES[0])})
    filler = small_disk / "filler"
    fill(filler, HEADROOM_BYTES)
    producer = Producer(broker)
    deadline = time.monotonic() + FILL_DEADLINE_S
    while not producer.refused:
        assert producer.next_index < FILL_RECORDS_MAX and time.monotonic() < deadline
        producer.produce(CHUNK_RECORDS)
    assert producer.acknowledged, "the reserve refused appends that had room"
    assert set(producer.refused) == {KafkaError.KAFKA_STORAGE_ERROR}, sorted(set(producer.refused))
    create_topic(broker, "created-while-full", partitions=2)
    # Appends keep being refused (small ones that still fit above the reserve may pass).
    assert producer.produce(CHUNK_RECORDS) > 0, "a chunk was admitted whole at the reserve"
    assert set(producer.refused) == {KafkaError.KAFKA_STORAGE_ERROR}, sorted(set(producer.refused))
    free = free_bytes(small_disk)
    assert free >= RESERVE_BYTES - RESERVE_SLACK_BYTES, (
        f"{free} bytes free after appends were refused: they ate into the {RESERVE_BYTES}-byte reserve")
    broker.kill()
    broker.restart()
    wait_until(lambda: broker.http_get("/health")[0] == 200, timeout_s=10, what="/health after restart")
    assert_log_is_exactly(broker, producer.acknowledged, "after a SIGKILL restart with the reserve reached")
    filler.unlink()
    assert producer.produce(100) == 0, "appends refused after space returned"
    assert_log_is_exactly(broker, producer.acknowledged, "after space returned")


def fill_completely(path):
    """Writes `path` until the volume refuses another byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    block = b"\0" * (1024 * 1024)
    try:
        while True:
            os.write(fd, block)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(fd)


def wait_for_exit(broker, what) -> int:
    try:
        return broker.process.wait(timeout=QUORUM_STOP_EXIT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what}: the broker did not exit within {QUORUM_STOP_EXIT_S}s\n{broker.log_tail()}")


def test_a_metadata_write_on_a_full_disk_stops_the_node_with_a_clear_error_and_loses_nothing(
        brokers, small_disk):
    """With the reserve off, the metadata log can meet a full disk. Raft cannot go on with a
    write it could not persist, so the node exits non-zero naming the cause (as a Kafka node
    exits when its metadata log directory fails), also when restarted on the still-full disk,
    and starts again with every acknowledged record once space returns."""
    broker = brokers.new({"log.dir.min.free.bytes": "0"})
    broker.data_dir = small_disk / "data"
    broker.start()
    create_topic(broker, TOPIC, partitions=1)
    producer = Producer(broker)
    assert producer.produce(CHUNK_RECORDS) == 0
    filler = small_disk / "filler"
    fill_completely(filler)

    try:
        create_topic(broker, "needs-a-metadata-write", partitions=1, timeout_s=10)
    except Exception as error:  # the request fails or the connection drops: either is fine
        print(f"CreateTopics on a full disk: {error}")
    for what in ("a metadata write on a full disk", "a restart on the still-full disk"):
        code = wait_for_exit(broker, what)
        log = broker.log_text().rsplit("===== start #", 1)[-1]
        assert code != 0, f"{what}: exit code {code}\n{log}"
        last_line = log.strip().splitlines()[-1]
        assert last_line.startswith("karst: ") and "metadata quorum" in last_line \
            and "No space left on device" in last_line, f"{what}: the exit does not say why\n{log}"
        if what.startswith("a metadata write"):
            broker.start(wait=False)

    filler.unlink()
    broker.start()
    wait_until(lambda: broker.http_get("/health")[0] == 200, timeout_s=10, what="/health once space returned")
    assert_log_is_exactly(broker, producer.acknowledged, "after space returned")
    assert producer.produce(10) == 0, "appends refused after space returned"
