"""Consumer-group benchmark (issue 9), run with `scripts/bench-groups`.

The same client load against Karst and against Apache Kafka 4.4 (scripts/kafka-peer), each a
single node on loopback with group.initial.rebalance.delay.ms=0, in one run:

* join rebalance: a stable group of 10 confluent-kafka members (eager `range`, heartbeats
  every 100 ms so members learn of a rebalance quickly — librdkafka's default is 3 s) on a
  20-partition topic; an 11th member subscribes; time until all 11 own disjoint, complete
  assignments. Then it leaves; repeated 10 times, median and max;
* offset commits per second: 100 consumers (one group each, generation -1 commits of one
  partition), each committing synchronously in a loop for 10 s;
* a rebalance of 100 members on 1,000 partitions: the time from a 101st member's subscribe
  to a complete assignment again;
* memory per group (Karst only: the JVM's heap makes a per-group RSS figure meaningless):
  broker RSS growth over 2,000 groups with 10 committed offsets each.

Prints a Markdown table for docs/BENCHMARKS.md. KARST_BENCH_ONLY=karst skips Kafka.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "python"))

from karst import BrokerPool, wait_until  # noqa: E402

SETTINGS = {"group.initial.rebalance.delay.ms": 0, "offsets.topic.replication.factor": 1,
            "log.dir.min.free.bytes": 0}
JOIN_ROUNDS = 10
COMMIT_SECONDS = 10


def consumer(bootstrap: str, group: str, **overrides):
    from confluent_kafka import Consumer
    config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 100,
              "partition.assignment.strategy": "range", "auto.offset.reset": "latest"}
    config.update(overrides)
    return Consumer(config)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=60)


class Member:
    def __init__(self, bootstrap: str, topic: str, group: str):
        self.assignment: set[int] = set()
        self.client = consumer(bootstrap, group)

        def assigned(_consumer, partitions):
            self.assignment = {p.partition for p in partitions}

        def revoked(_consumer, _partitions):
            self.assignment = set()

        self.client.subscribe([topic], on_assign=assigned, on_revoke=revoked)


def poll_until_complete(members: list[Member], partitions: int, timeout_s: float) -> float:
    started = time.monotonic()
    while True:
        for member in members:
            member.client.poll(0)
        owned = [p for m in members for p in m.assignment]
        if len(owned) == partitions and len(set(owned)) == partitions and all(m.assignment for m in members):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"no complete assignment after {timeout_s}s: {[sorted(m.assignment) for m in members]}")
        time.sleep(0.001)


def join_rebalance(bootstrap: str, topic: str, partitions: int, members_count: int, rounds: int) -> list[float]:
    members = [Member(bootstrap, topic, f"join-{topic}") for _ in range(members_count)]
    poll_until_complete(members, partitions, timeout_s=300)
    times = []
    for _ in range(rounds):
        joiner = Member(bootstrap, topic, f"join-{topic}")
        times.append(poll_until_complete(members + [joiner], partitions, timeout_s=300))
        joiner.client.close()
        poll_until_complete(members, partitions, timeout_s=300)
    close_together(members)
    return times


def close_together(members: list[Member]) -> None:
    """Closes every member at once: closed one by one, each LeaveGroup starts a rebalance the
    still-open (and no longer polled) members cannot finish until their rebalance timeout."""
    threads = [threading.Thread(target=member.client.close) for member in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def commits_per_second(bootstrap: str, topic: str, consumers: int) -> float:
    from confluent_kafka import TopicPartition
    clients = [consumer(bootstrap, f"commit-{index}") for index in range(consumers)]
    for client in clients:  # coordinators found before the clock starts
        client.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    counts = [0] * consumers
    deadline = time.monotonic() + COMMIT_SECONDS

    def run(index: int) -> None:
        offset = 2
        while time.monotonic() < deadline:
            clients[index].commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            counts[index] += 1
            offset += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(consumers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return sum(counts) / COMMIT_SECONDS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_per_group(bootstrap: str, pid: int, topic: str, groups: int) -> float:
    from confluent_kafka import TopicPartition
    client = consumer(bootstrap, "memory-probe")
    client.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    before = rss_bytes(pid)
    for index in range(groups):
        other = consumer(bootstrap, f"memory-{index}")
        other.commit(offsets=[TopicPartition(topic, p, 100) for p in range(10)], asynchronous=False)
        other.close()
    client.close()
    return (rss_bytes(pid) - before) / groups


def measure(name: str, bootstrap: str, pid: int | None) -> dict:
    print(f"--- {name}: {bootstrap}", file=sys.stderr, flush=True)
    create_topic(bootstrap, "join-20", 20)
    create_topic(bootstrap, "wide-1000", 1000)
    create_topic(bootstrap, "commits", 10)
    results = {}
    times = join_rebalance(bootstrap, "join-20", 20, 10, JOIN_ROUNDS)
    results["join_median_ms"] = statistics.median(times) * 1000
    results["join_max_ms"] = max(times) * 1000
    print(f"    join rebalance: {[round(t * 1000) for t in times]} ms", file=sys.stderr, flush=True)
    results["commits_per_s"] = commits_per_second(bootstrap, "commits", 100)
    print(f"    commits/s: {results['commits_per_s']:.0f}", file=sys.stderr, flush=True)
    wide = join_rebalance(bootstrap, "wide-1000", 1000, 100, 1)
    results["wide_ms"] = wide[0] * 1000
    print(f"    100 members / 1000 partitions, one join: {results['wide_ms']:.0f} ms", file=sys.stderr, flush=True)
    if pid is not None:
        results["bytes_per_group"] = memory_per_group(bootstrap, pid, "commits", 2000)
    return results


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="karst-bench-groups-") as base:
        pool = BrokerPool(Path(os.environ.get("KARST_BIN", REPO_ROOT / "target" / "release" / "karst")), Path(base))
        try:
            broker = pool.start(SETTINGS)
            rows["Karst"] = measure("karst", broker.bootstrap, broker.pid)
        finally:
            pool.close_all()
        if os.environ.get("KARST_BENCH_ONLY") != "karst":
            peer_dir = Path(base) / "kafka"
            sets = [arg for key, value in SETTINGS.items() if key != "log.dir.min.free.bytes"
                    for arg in ("--set", f"{key}={value}")]
            started = subprocess.run([str(REPO_ROOT / "scripts" / "kafka-peer"), "start", str(peer_dir), *sets],
                                     capture_output=True, text=True, check=True, timeout=300)
            bootstrap = started.stdout.strip().splitlines()[-1]
            try:
                rows["Apache Kafka 4.4"] = measure("kafka", bootstrap, None)
            finally:
                subprocess.run([str(REPO_ROOT / "scripts" / "kafka-peer"), "stop", str(peer_dir)], timeout=120)
    print("| broker | 11th member joins 10: median (max) | commits/s, 100 consumers | 101st member on 1,000 partitions | RSS per group (10 offsets) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        memory = f"{r['bytes_per_group']:.0f} B" if "bytes_per_group" in r else "n/a (JVM heap)"
        print(f"| {name} | {r['join_median_ms']:.0f} ms ({r['join_max_ms']:.0f} ms) | {r['commits_per_s']:.0f} "
              f"| {r['wide_ms']:.0f} ms | {memory} |")


if __name__ == "__main__":
    main()
