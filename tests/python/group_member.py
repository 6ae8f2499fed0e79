"""One consumer-group member as its own process, so a test can SIGKILL it like a crashed
application. Prints one JSON line per event on stdout:

* {"event": "assigned", "partitions": [...], "t": ...} after every rebalance callback, with the
  member's whole assignment then (incremental callbacks of cooperative-sticky included);
* {"event": "ready"} once subscribed.

Usage: group_member.py BOOTSTRAP TOPIC GROUP STRATEGY [INSTANCE_ID]
"""
from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Consumer

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500


def main() -> None:
    bootstrap, topic, group, strategy = sys.argv[1:5]
    instance = sys.argv[5] if len(sys.argv) > 5 else None
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if instance:
        config["group.instance.id"] = instance
    consumer = Consumer(config)

    def report(kind):
        # The member's whole assignment *after* this callback: eager callbacks hand over or
        # take away everything, cooperative ones only the increment (the client applies the
        # change after the callback returns).
        def callback(member, changed):
            current = {p.partition for p in member.assignment()}
            changed = {p.partition for p in changed}
            cooperative = strategy == "cooperative-sticky"
            if kind == "assigned":
                after = current | changed if cooperative else changed
            else:
                after = current - changed if cooperative else set()
            print(json.dumps({"event": kind, "partitions": sorted(after), "t": time.time()}), flush=True)
        return callback

    consumer.subscribe([topic], on_assign=report("assigned"), on_revoke=report("revoked"))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        consumer.poll(0.1)


if __name__ == "__main__":
    main()
