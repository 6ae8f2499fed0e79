"""Disk full: the broker refuses appends with KAFKA_STORAGE_ERROR, stays up, serves what it
acknowledged, and accepts appends again once space returns. Nothing half-written is ever
served, before or after a SIGKILL restart.

The broker's data directory is a 16 MiB tmpfs, mounted for the test (root only: the test is
skipped, saying why, where `mount` is not permitted) and unmounted after the broker is killed.
A filler file takes most of it; a confluent-kafka producer (acks=all, no retries, so each
refusal reaches the test) then writes numbered records until deliveries fail with
KAFKA_STORAGE_ERROR. Run once per storage backend: each reports ENOSPC its own way.
"""

import os
import subprocess
import time

import pytest
from confluent_kafka import KafkaError

from karst import confluent_producer, consume_partitions, create_topic, wait_until, watermarks

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


def fill(path, leave_bytes):
    """Writes a file that leaves about `leave_bytes` free on its filesystem."""
    volume = os.statvfs(path.parent)
    size = max(0, volume.f_bavail * volume.f_frsize - leave_bytes)
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


@pytest.mark.parametrize("segment_bytes", SEGMENT_BYTES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disk_refuses_appends_stays_up_and_recovers_when_space_returns(brokers, small_disk, backend,
                                                                            segment_bytes):
    broker = brokers.new({"log.io.backend": backend})
    broker.data_dir = small_disk / "data"
    broker.start()
    create_topic(broker, TOPIC, partitions=1, config={"segment.bytes": str(segment_bytes)})
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


def test_sigkill_while_the_disk_is_full_restarts_and_serves_what_was_acknowledged(brokers, small_disk):
    broker = brokers.new()
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

    # Recovery must cope with a volume that has (almost) no free bytes.
    broker.kill()
    broker.restart()
    wait_until(lambda: broker.http_get("/health")[0] == 200, timeout_s=10, what="/health after restart")
    assert_log_is_exactly(broker, producer.acknowledged, "after a SIGKILL restart on a full disk")
    filler.unlink()
    assert producer.produce(100) == 0, "appends refused after space returned"
    assert_log_is_exactly(broker, producer.acknowledged, "after space returned")
