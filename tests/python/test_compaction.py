"""Log compaction (cleanup.policy=compact) seen by real clients: after the cleaner runs, a
consumer reading from the beginning gets exactly the latest value of every live key at the
offset it was written at, and tombstones stay for delete.retention.ms, then go."""

import random
import time

from karst import confluent_producer, consume_partitions, create_topic, wait_until, watermarks

KEY_COUNT = 1000
UPDATE_COUNT = 100_000
# The first keys are deleted (tombstones) after the updates.
TOMBSTONE_KEY_COUNT = 100
SEGMENT_BYTES = 16384
DELETE_RETENTION_MS = 10_000
# Records of one extra key written after the tombstones, so that the tombstones and the
# latest values end up in sealed (cleanable) segments rather than the active one.
FILLER_COUNT = 400
FILLER_KEY = b"filler"
CLEANER_BACKOFF_MS = 200
# How long the cleaner gets to catch up once producing stops.
CLEANING_DEADLINE_S = 60


def key_of(index):
    return f"key-{index:04d}".encode()


def produce_all(broker, topic, records, **producer_settings):
    """Produces (key, value) pairs in order; returns their offsets in the same order."""
    producer = confluent_producer(broker, **producer_settings)
    offsets = [None] * len(records)
    errors = []

    def delivered(index):
        def report(error, message):
            if error is not None:
                errors.append(error)
            else:
                offsets[index] = message.offset()
        return report

    for index, (key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == [], errors[:5]
    return offsets


def read_from_beginning(broker, topic):
    _, high = watermarks(broker, topic, 0)
    return consume_partitions(broker, topic, {0: high}, timeout_s=60)[0]


def test_compaction_keeps_the_latest_value_per_key_and_drops_tombstones_after_delete_retention(brokers):
    broker = brokers.start({"log.cleaner.backoff.ms": CLEANER_BACKOFF_MS})
    topic = "compacted"
    create_topic(broker, topic, partitions=1, config={
        "cleanup.policy": "compact",
        "segment.bytes": str(SEGMENT_BYTES),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
    })

    # 100,000 updates over 1,000 keys in random order, LZ4-compressed batches.
    rng = random.Random(20240611)
    updates = []
    for update in range(UPDATE_COUNT):
        key = key_of(rng.randrange(KEY_COUNT))
        updates.append((key, f"{key.decode()}={update}".encode()))
    update_offsets = produce_all(broker, topic, updates, **{"compression.type": "lz4", "linger.ms": 20})
    # Then tombstones for the first keys, then the filler.
    tombstones = [(key_of(index), None) for index in range(TOMBSTONE_KEY_COUNT)]
    tombstone_offsets = produce_all(broker, topic, tombstones)
    tombstones_written_at = time.monotonic()
    filler = [(FILLER_KEY, b"f" * 100) for _ in range(FILLER_COUNT)]
    produce_all(broker, topic, filler)
    _, high = watermarks(broker, topic, 0)
    assert high == UPDATE_COUNT + TOMBSTONE_KEY_COUNT + FILLER_COUNT

    latest = {}  # key -> (offset, value)
    for (key, value), offset in zip(updates, update_offsets):
        latest[key] = (offset, value)
    for (key, _), offset in zip(tombstones, tombstone_offsets):
        latest[key] = (offset, None)
    deleted_keys = {key for key, _ in tombstones}

    live_keys = set(latest) - deleted_keys

    def compacted():
        records = read_from_beginning(broker, topic)
        keys = [r.key for r in records if r.key != FILLER_KEY]
        return records if len(keys) == len(set(keys)) and live_keys <= set(keys) else None

    records = wait_until(compacted, timeout_s=CLEANING_DEADLINE_S, interval_s=1,
                         what="one record per key")
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    seen = {}
    for record in records:
        if record.key != FILLER_KEY:
            assert record.key not in seen, f"{record.key} appears twice"
            seen[record.key] = (record.offset, record.value)
    # Exactly the latest value of every key, at the offset it was written at; deleted keys
    # show their tombstone (unless delete.retention.ms has already passed).
    for key, (offset, value) in latest.items():
        if key in deleted_keys:
            continue
        assert seen[key] == (offset, value), f"{key}: got {seen[key]}, want {(offset, value)}"
    tombstones_seen = {key for key, (_, value) in seen.items() if value is None}
    if time.monotonic() < tombstones_written_at + DELETE_RETENTION_MS / 1000 - 1:
        assert tombstones_seen == deleted_keys, "tombstones stay until delete.retention.ms has passed"

    # The tombstones go once delete.retention.ms has passed since the cleaning that kept them.
    def tombstones_gone():
        records = read_from_beginning(broker, topic)
        keys = {r.key for r in records}
        return records if not keys & deleted_keys else None

    records = wait_until(tombstones_gone, timeout_s=DELETE_RETENTION_MS / 1000 + CLEANING_DEADLINE_S,
                         interval_s=1, what="tombstones removed")
    assert time.monotonic() >= tombstones_written_at + DELETE_RETENTION_MS / 1000, \
        "tombstones were removed before delete.retention.ms"
    live = {r.key: (r.offset, r.value) for r in records if r.key != FILLER_KEY}
    assert len(live) == KEY_COUNT - TOMBSTONE_KEY_COUNT
    assert all(value is not None for _, value in live.values())
    assert live == {key: latest[key] for key in latest if key not in deleted_keys}
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets))
    assert watermarks(broker, topic, 0) == (0, high), "compaction moves neither watermark"

    # The compacted log reads the same after a restart.
    broker.terminate()
    broker.restart()
    assert [(r.offset, r.key, r.value) for r in read_from_beginning(broker, topic)] == \
        [(r.offset, r.key, r.value) for r in records]


def test_a_compacted_topic_refuses_records_without_a_key_and_keeps_the_keyed_ones(brokers):
    from confluent_kafka import KafkaError

    broker = brokers.start()
    topic = "compacted-keys"
    create_topic(broker, topic, partitions=1, config={"cleanup.policy": "compact"})
    outcomes = {}

    def report(name):
        def delivered(error, message):
            outcomes[name] = error if error is not None else message.offset()
        return delivered

    # Separate producers so each record travels in its own batch: a refused batch refuses
    # every record in it, as in Kafka.
    for name, key, compression in [("keyed", b"k1", "none"), ("keyless", None, "none"),
                                   ("keyless-zstd", None, "zstd"), ("keyed-after", b"k2", "zstd")]:
        producer = confluent_producer(broker, **{"compression.type": compression, "retries": 0})
        producer.produce(topic, key=key, value=b"v", partition=0, on_delivery=report(name))
        assert producer.flush(30) == 0

    for name in ("keyless", "keyless-zstd"):
        error = outcomes[name]
        assert isinstance(error, KafkaError), (name, error)
        assert error.code() == KafkaError.INVALID_RECORD, (name, error)
    assert outcomes["keyed"] == 0
    assert outcomes["keyed-after"] == 1
    # Nothing of the refused batches was written.
    assert watermarks(broker, topic, 0) == (0, 2)
    assert [r.key for r in read_from_beginning(broker, topic)] == [b"k1", b"k2"]
