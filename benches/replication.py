"""Replication benchmark (issue 7), run with `scripts/bench-replication`.

A real three-node cluster (every node a voter and a broker, on loopback, data on this
machine's disk) driven by confluent-kafka (librdkafka), in one run:

* produce throughput of 1 KiB records with acks=all as fast as the client goes, to a
  6-partition topic with replication factor 3 (min.insync.replicas=2, fsync on every
  replica before it reports) and, as the baseline, to one with replication factor 1;
* latency percentiles (send to delivery report) at 10 and 50 MB/s offered, both topics;
* failover: SIGKILL of partition 0's leader to the first acks=all record acknowledged
  after it, ten times (median), with broker.session.timeout.ms=2000 and heartbeats every
  200 ms (Kafka's 9 s session would dominate the figure otherwise);
* broker CPU seconds per phase (all three nodes, from /proc).

Prints Markdown tables for docs/BENCHMARKS.md. KARST_BENCH_RECORDS sets the throughput
phase's record count (default 300,000). KARST_BENCH_IDEMPOTENCE=1 runs only issue 8's rows
instead: 200-byte records to the RF=3 topic with idempotence off and on, alternately.
KARST_BENCH_FAILOVER_ONLY=1 runs only the failover rounds (with KARST_BENCH_SESSION_MS).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))

from karst import BrokerPool, Cluster, confluent_admin, wait_until  # noqa: E402

RECORD_BYTES = 1024
PARTITIONS = 6
RECORDS = int(os.environ.get("KARST_BENCH_RECORDS", "300000"))
PACED_SECONDS = 10
FAILOVERS = 10
# KARST_BENCH_SESSION_MS lowers or raises the broker session (heartbeats at a tenth of it).
SESSION_MS = int(os.environ.get("KARST_BENCH_SESSION_MS", "2000"))
SETTINGS = {
    "broker.heartbeat.interval.ms": max(SESSION_MS // 10, 50),
    "broker.session.timeout.ms": SESSION_MS,
    "replica.lag.time.max.ms": 10000,
    "log.dir.min.free.bytes": 0,
}


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def producer(cluster: Cluster, **overrides):
    from confluent_kafka import Producer

    config = {
        "bootstrap.servers": ",".join(node.bootstrap for node in cluster.alive_nodes),
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 60000,
    }
    config.update(overrides)
    return Producer(config)


def create(cluster: Cluster, name: str, replication_factor: int) -> None:
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(cluster.nodes[1])
    config = {"min.insync.replicas": "2"} if replication_factor == 3 else {}
    topic = NewTopic(name, num_partitions=PARTITIONS, replication_factor=replication_factor, config=config)
    admin.create_topics([topic], operation_timeout=30)[name].result(timeout=30)
    wait_until(lambda: len(admin.list_topics(topic=name, timeout=10).topics[name].partitions) == PARTITIONS,
               timeout_s=30, what=f"{name} visible")


def throughput(cluster: Cluster, topic: str, record_bytes: int = RECORD_BYTES, records: int = RECORDS,
               **overrides) -> dict:
    client = producer(cluster, **overrides)
    payload = os.urandom(record_bytes)
    errors = []
    pids = [node.pid for node in cluster.alive_nodes]
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                client.produce(topic, payload, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                client.poll(0.01)
    client.flush(300)
    elapsed = time.perf_counter() - started
    assert not errors, errors[:3]
    return {
        "records_per_second": records / elapsed,
        "mb_per_second": records * record_bytes / elapsed / 1e6,
        "broker_cpu_seconds_per_gb": (cpu_seconds(pids) - cpu_before) / (records * record_bytes / 1e9),
    }


def paced_latency(cluster: Cluster, topic: str, megabytes_per_second: float) -> dict:
    client = producer(cluster, **{"linger.ms": 1})
    payload = os.urandom(RECORD_BYTES)
    rate = megabytes_per_second * 1e6 / RECORD_BYTES
    latencies: list[float] = []
    errors = []

    def delivered(sent_at):
        def report(error, message):
            if error is not None:
                errors.append(error)
            else:
                latencies.append(time.perf_counter() - sent_at)
        return report

    started = time.perf_counter()
    count = int(rate * PACED_SECONDS)
    for index in range(count):
        due = started + index / rate
        while (now := time.perf_counter()) < due:
            client.poll(0)
            if due - now > 0.001:
                time.sleep(min(due - now, 0.002))
        client.produce(topic, payload, on_delivery=delivered(time.perf_counter()))
        if index % 64 == 0:
            client.poll(0)
    client.flush(60)
    assert not errors, errors[:3]
    latencies.sort()

    def percentile(fraction):
        return latencies[min(len(latencies) - 1, int(len(latencies) * fraction))] * 1000

    return {"p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "p999_ms": percentile(0.999),
            "achieved_mb_per_second": len(latencies) * RECORD_BYTES / (time.perf_counter() - started) / 1e6}


def partition_leader(cluster: Cluster, topic: str) -> int:
    metadata = cluster.metadata(cluster.alive_nodes[0]).topic(topic)
    return metadata.partitions[0].leader


def failover_seconds(cluster: Cluster, topic: str) -> float:
    """SIGKILL of partition 0's leader until the first record sent after the kill is
    acknowledged (acks=all), with a record offered every 5 ms."""
    client = producer(cluster, **{"linger.ms": 0, "message.timeout.ms": 30000, "retry.backoff.ms": 20,
                                  "topic.metadata.refresh.interval.ms": 250})
    acknowledged = threading.Event()
    client.produce(topic, b"warm-up", partition=0)
    client.flush(30)
    leader = partition_leader(cluster, topic)
    node = cluster.nodes[leader]
    node.kill()
    killed_at = time.perf_counter()
    first_ack = []

    def delivered(error, message):
        if error is None and not first_ack:
            first_ack.append(time.perf_counter())
            acknowledged.set()

    while not acknowledged.is_set() and time.perf_counter() - killed_at < 30:
        client.produce(topic, b"after-kill", partition=0, on_delivery=delivered)
        client.poll(0.005)
    client.flush(30)
    assert first_ack, "no record acknowledged within 30 s of the kill"
    node.restart()
    wait_until(lambda: sorted(cluster.metadata(cluster.alive_nodes[0]).topic(topic).partitions[0].isr) == [1, 2, 3],
               timeout_s=60, what="ISR whole again")
    return first_ack[0] - killed_at


def idempotence_rows(cluster: Cluster) -> None:
    """Issue 8's benchmark on the cluster: 200-byte records, acks=all, RF=3, idempotence off
    and on alternately (twice each), the same client and settings otherwise."""
    print("\n| idempotence | round | records/s | broker CPU s per GB (3 nodes) |")
    print("|---|---|---|---|")
    for round_number in (1, 2):
        for enabled in (False, True):
            figures = throughput(cluster, "rf3", record_bytes=200, records=RECORDS,
                                 **{"enable.idempotence": enabled})
            print(f"| {'on' if enabled else 'off'} | {round_number} | {figures['records_per_second']:,.0f} | "
                  f"{figures['broker_cpu_seconds_per_gb']:.2f} |", flush=True)


def main() -> None:
    binary = Path(os.environ.get("KARST_BIN", Path(__file__).resolve().parent.parent / "target/release/karst"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("KARST_BENCH_DIR")) as base:
        pool = BrokerPool(binary, Path(base))
        try:
            cluster = Cluster(pool, settings=SETTINGS)
            cluster.start()
            cluster.wait_for_leader()
            create(cluster, "rf3", 3)
            create(cluster, "rf1", 1)
            if os.environ.get("KARST_BENCH_IDEMPOTENCE"):
                idempotence_rows(cluster)
                return
            if os.environ.get("KARST_BENCH_FAILOVER_ONLY"):
                failovers = [failover_seconds(cluster, "rf3") for _ in range(FAILOVERS)]
                print(f"\nFailover, broker.session.timeout.ms={SESSION_MS}, {FAILOVERS} runs: median "
                      f"{statistics.median(failovers):.2f} s, min {min(failovers):.2f} s, max {max(failovers):.2f} s")
                return
            print(f"\n{RECORDS} records of {RECORD_BYTES} B, acks=all, {PARTITIONS} partitions, 3 nodes, fsync before ack\n")
            print("| topic | records/s | MB/s | broker CPU s per GB (3 nodes) |")
            print("|---|---|---|---|")
            results = {}
            for topic in ("rf1", "rf3"):
                figures = throughput(cluster, topic)
                results[topic] = figures
                print(f"| {topic} | {figures['records_per_second']:,.0f} | {figures['mb_per_second']:.1f} | "
                      f"{figures['broker_cpu_seconds_per_gb']:.2f} |", flush=True)
            print(f"\nRF=3 / RF=1 throughput: {results['rf3']['records_per_second'] / results['rf1']['records_per_second']:.0%}")
            print("\n| topic | offered MB/s | achieved MB/s | p50 ms | p99 ms | p99.9 ms |")
            print("|---|---|---|---|---|---|")
            for rate in (10, 50):
                for topic in ("rf1", "rf3"):
                    figures = paced_latency(cluster, topic, rate)
                    print(f"| {topic} | {rate} | {figures['achieved_mb_per_second']:.1f} | {figures['p50_ms']:.2f} | "
                          f"{figures['p99_ms']:.2f} | {figures['p999_ms']:.2f} |", flush=True)
            failovers = [failover_seconds(cluster, "rf3") for _ in range(FAILOVERS)]
            print(f"\nFailover (SIGKILL of the leader to the first acks=all ack), {FAILOVERS} runs: "
                  f"median {statistics.median(failovers):.2f} s, min {min(failovers):.2f} s, max {max(failovers):.2f} s")
        finally:
            pool.close_all()


if __name__ == "__main__":
    main()
