"""Crash loop: SIGKILL the broker 20 times in the middle of acks=all produce traffic, once per
storage I/O backend (`log.io.backend` = io_uring, portable).

Each round starts the broker on the same data directory, checks the whole log against what was
acknowledged so far, produces for a random 0.3-1.0 s from two connections, then SIGKILLs it.

The producers are hand-built Produce v9 requests, one record batch per request, so the test
knows exactly which records form a batch: batch `b` of `n` records holds the values
`b:0:n` ... `b:(n-1):n`. After every restart:

* every acknowledged batch is in the log at the offsets the acknowledgement named;
* every batch in the log is whole, contiguous, in order and present once; a batch that was
  in flight when the broker died may be absent or present, but never partly present;
* each partition's offsets run from 0 to the high watermark without a hole;
* nothing in the log was never sent.

Every start's "Karst is ready" log line must name the backend asked for. Both backends must run:
a broker that refuses `io_uring` (a kernel or seccomp policy forbidding it) fails the test with
its own message instead of skipping it. On this kernel `auto` must pick io_uring.
"""

import random
import re
import threading
import time
from dataclasses import dataclass

import pytest

from karst import (
    BrokerStartError,
    ConnectionClosed,
    RawConnection,
    consume_partitions,
    create_topic,
    raw_produce_v9,
    record_batch,
    wait_until,
    watermarks,
)

ROUNDS = 20
PARTITION_COUNT = 2
PRODUCER_CONNECTIONS = 2
RECORDS_PER_BATCH_MAX = 10
# Bounds per round, whatever the broker does: batches per connection and seconds of traffic.
BATCHES_PER_CONNECTION_MAX = 5_000
SOCKET_TIMEOUT_S = 10.0
PACING_S = 0.001
TOPIC = "crash-loop"
BACKENDS = ["io_uring", "portable"]
# Seconds of traffic before each kill: long enough for hundreds of batches, so the kill lands
# mid-stream; short enough that 20 rounds, each re-reading the whole log, take ~30 s per backend.
TRAFFIC_S_MIN = 0.3
TRAFFIC_S_MAX = 1.0
# Per backend: 20 rounds of traffic plus restarts and full-log checks (with CI slack). Runs of
# 2026-11-30 took 51-60 s (io_uring 60.2 s once, failing the old 60 s bound): more than the
# ~30 s above, a growth not explained yet (restarts of the broker are the suspect), so the bound
# only keeps the suite's time bounded.
ELAPSED_PER_BACKEND_MAX_S = 90
READY_LINE_TIMEOUT_S = 5
READY_LINE = re.compile(r'Karst is ready .*\bio_backend="?([A-Za-z_]+)"?')


@dataclass(frozen=True)
class Batch:
    batch_id: int
    partition: int
    size: int

    def values(self):
        return [f"{self.batch_id}:{i}:{self.size}".encode() for i in range(self.size)]


class ProduceLedger:
    """Everything sent and everything acknowledged, across rounds; shared by producer threads."""

    def __init__(self, seed):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.next_batch_id = 0
        self.sent: dict[int, Batch] = {}
        self.acknowledged: dict[int, int] = {}  # batch id -> base offset
        self.errors: list[str] = []

    def new_batch(self) -> Batch:
        with self.lock:
            batch = Batch(self.next_batch_id, self.next_batch_id % PARTITION_COUNT,
                          self.rng.randint(1, RECORDS_PER_BATCH_MAX))
            self.next_batch_id += 1
            self.sent[batch.batch_id] = batch
            return batch

    def acknowledge(self, batch: Batch, base_offset: int):
        with self.lock:
            self.acknowledged[batch.batch_id] = base_offset


def produce_until_stopped(broker, ledger: ProduceLedger, stop: threading.Event, acked_this_round: list):
    try:
        connection = RawConnection(broker, timeout_s=SOCKET_TIMEOUT_S)
    except OSError:
        return
    with connection:
        for correlation_id in range(BATCHES_PER_CONNECTION_MAX):
            if stop.is_set():
                return
            batch = ledger.new_batch()
            try:
                response = raw_produce_v9(connection, correlation_id, TOPIC, batch.partition,
                                          record_batch(batch.values(), int(time.time() * 1000)))
            except (ConnectionClosed, OSError):
                return  # the broker died under us: this batch is in doubt, which the checks allow
            if response.error_code != 0:
                with ledger.lock:
                    ledger.errors.append(f"batch {batch.batch_id}: error {response.error_code} "
                                         f"{response.error_message}")
                continue
            ledger.acknowledge(batch, response.base_offset)
            acked_this_round.append(batch.batch_id)
            # Pace each connection (about 500 batches/s): the log, re-read whole after every
            # crash, stays small enough that 20 rounds fit the time budget.
            time.sleep(PACING_S)


def check_log(broker, ledger: ProduceLedger, round_number: int):
    high_watermarks = {p: watermarks(broker, TOPIC, p)[1] for p in range(PARTITION_COUNT)}
    records = consume_partitions(broker, TOPIC, high_watermarks, timeout_s=60)
    where = f"after restart {round_number}"

    at = {}  # (partition, offset) -> value
    seen_batches: dict[int, list[tuple[int, int, int, int]]] = {}
    for partition, partition_records in records.items():
        offsets = [r.offset for r in partition_records]
        assert offsets == list(range(high_watermarks[partition])), (
            f"{where}: partition {partition} offsets are not 0..{high_watermarks[partition] - 1} without holes")
        for record in partition_records:
            at[(partition, record.offset)] = record.value
            batch_id, index, size = (int(part) for part in record.value.decode().split(":"))
            seen_batches.setdefault(batch_id, []).append((partition, record.offset, index, size))

    for batch_id, base_offset in ledger.acknowledged.items():
        batch = ledger.sent[batch_id]
        for index, value in enumerate(batch.values()):
            got = at.get((batch.partition, base_offset + index))
            assert got == value, (f"{where}: acknowledged batch {batch_id} record {index} at "
                                  f"{batch.partition}/{base_offset + index}: found {got!r}, want {value!r}")

    for batch_id, parts in seen_batches.items():
        assert batch_id in ledger.sent, f"{where}: log holds batch {batch_id}, which was never sent"
        batch = ledger.sent[batch_id]
        partitions = {p for p, _, _, _ in parts}
        assert partitions == {batch.partition}, f"{where}: batch {batch_id} found in partitions {partitions}"
        indexes = [index for _, _, index, _ in parts]
        assert indexes == list(range(batch.size)), (
            f"{where}: batch {batch_id} of {batch.size} records is partial or duplicated: indexes {indexes}")
        offsets = [offset for _, offset, _, _ in parts]
        assert offsets == list(range(offsets[0], offsets[0] + batch.size)), (
            f"{where}: batch {batch_id} is not contiguous: offsets {offsets}")
    return sum(high_watermarks.values())


def ready_backends(broker) -> list[str]:
    """The io_backend of every "Karst is ready" line in the broker's log, one per start."""
    return READY_LINE.findall(broker.log_text())


def assert_every_start_used(broker, backend):
    # The line is logged just after the listener binds, so it may trail the first connection.
    wait_until(lambda: len(ready_backends(broker)) == broker.starts, timeout_s=READY_LINE_TIMEOUT_S,
               what=f"a 'Karst is ready' line for each of {broker.starts} starts")
    assert ready_backends(broker) == [backend] * broker.starts, (
        f"asked for log.io.backend={backend}, the ready lines say {ready_backends(broker)}")


def start_with_backend(brokers, backend):
    broker = brokers.new({"log.io.backend": backend})
    try:
        broker.start()
    except BrokerStartError as error:
        pytest.fail(f"the broker refused log.io.backend={backend}; both backends must run here:\n{error}",
                    pytrace=False)
    assert_every_start_used(broker, backend)
    return broker


def test_auto_backend_picks_io_uring_on_this_kernel(brokers):
    broker = brokers.start({"log.io.backend": "auto"})
    assert_every_start_used(broker, "io_uring")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_acks_all_produce_loses_no_acknowledged_batch_and_tears_none(brokers, backend):
    seed = random.randrange(1 << 30)
    print(f"crash loop seed {seed}, backend {backend}")
    rng = random.Random(seed)
    ledger = ProduceLedger(seed)
    broker = start_with_backend(brokers, backend)
    create_topic(broker, TOPIC, partitions=PARTITION_COUNT)
    started = time.monotonic()

    for round_number in range(ROUNDS):
        if round_number > 0:
            broker.restart()
            check_log(broker, ledger, round_number)
        stop = threading.Event()
        acked_this_round: list = []
        producers = [threading.Thread(target=produce_until_stopped, args=(broker, ledger, stop, acked_this_round),
                                      daemon=True) for _ in range(PRODUCER_CONNECTIONS)]
        for thread in producers:
            thread.start()
        time.sleep(rng.uniform(TRAFFIC_S_MIN, TRAFFIC_S_MAX))
        broker.kill()
        stop.set()
        for thread in producers:
            thread.join(timeout=SOCKET_TIMEOUT_S + 5)
            assert not thread.is_alive(), "producer thread did not notice the broker died"
        assert acked_this_round, f"round {round_number}: no batch was acknowledged before the kill"
        assert ledger.errors == [], f"round {round_number}: produce errors: {ledger.errors[:5]}"

    broker.restart()
    total_records = check_log(broker, ledger, ROUNDS)
    assert_every_start_used(broker, backend)
    elapsed = time.monotonic() - started
    print(f"{backend}: {ROUNDS} crashes, {len(ledger.sent)} batches sent, {len(ledger.acknowledged)} "
          f"acknowledged, {total_records} records in the log, {elapsed:.1f}s")
    assert elapsed < ELAPSED_PER_BACKEND_MAX_S, (
        f"{backend} crash loop took {elapsed:.0f}s; it must stay under {ELAPSED_PER_BACKEND_MAX_S}s")
