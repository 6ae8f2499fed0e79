"""Differential conformance: the same Kafka requests to Apache Kafka 4.4.0 and to Karst, the
answers compared field by field (issue 11).

Both brokers run fresh, single node, with `auto.create.topics.enable=false`: Kafka from the
Maven Central jars (`scripts/kafka-peer`), Karst from the build. Each case sends the same
sequence of requests to both (topic names are the same, so the answers can be too). The
requests are encoded and the responses decoded by kafka-python's protocol classes, which are
generated from Kafka's own message schemas: a codec independent of Karst's.

Before comparing, what legitimately differs is removed: node ids, hosts and ports, cluster
and topic ids, leader epochs, throttle times, and free-text error messages (error codes are
compared). Record batches are compared by their base offset, length, magic, CRC and count:
the CRC covers every byte a producer wrote.

Every difference found is either fixed in Karst or listed in KNOWN_DIFFERENCES with its
reason (and in docs/COMPATIBILITY.md); the test fails on any other.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from compat import KAFKA_PEER, PREPARE_TIMEOUT_S, kafka_classpath
from karst import crc32c, encode_record, frame, request_header_v1, wait_until

# Every request/response exchange is bounded by this.
EXCHANGE_TIMEOUT_S = 15.0
BATCH_TIMESTAMP_MS = 1_700_000_000_000

# Fields whose values legitimately differ between two brokers.
IGNORED_FIELDS = {
    "throttle_time_ms", "cluster_id", "controller_id", "topic_id", "node_id", "host", "port", "rack",
    "leader_id", "leader_epoch", "replica_nodes", "isr_nodes", "offline_replicas", "error_message",
    "authorized_operations", "topic_authorized_operations", "cluster_authorized_operations",
    "brokers", "node_endpoints", "current_leader", "preferred_read_replica", "session_id",
    "batch_index_error_message", "documentation",
}

# Differences known and explained: (case, path regex) -> reason. Mirrored in
# docs/COMPATIBILITY.md, "Differences from Apache Kafka".
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {
    # Sorted by name, the third of the chosen keys is min.insync.replicas.
    ("configs_partitions_delete", r"describe chosen keys\.results\[0\]\.configs\[2\]\.config_source"):
        "Kafka's storage format writes min.insync.replicas as a cluster-wide dynamic default "
        "(source 3, DYNAMIC_DEFAULT_BROKER_CONFIG); Karst has no such record: DEFAULT_CONFIG (5), "
        "same value",
    ("fetch_and_list_offsets", r"fetch missing (partition|topic)\..*\.aborted_transactions"):
        "a partition error: Kafka answers an empty aborted-transactions list, Karst null "
        "(nullable since v4; clients read both alike); to align",
    ("fetch_and_list_offsets", r"fetch past the end\..*\.(high_watermark|last_stable_offset|log_start_offset)"):
        "OFFSET_OUT_OF_RANGE: Kafka answers -1 for the offsets, Karst the partition's real ones "
        "(clients reset from ListOffsets either way)",
    ("delete_records", r"fetch below the new start\..*\.(high_watermark|last_stable_offset|log_start_offset)"):
        "the same OFFSET_OUT_OF_RANGE difference, below the log start offset",
    ("produce", r"record offset deltas not 0\.\.n-1 \(KIP-467\)"):
        "Karst checks the offset deltas of uncompressed records and refuses a batch whose deltas "
        "are not 0..n-1 (INVALID_RECORD); Kafka 4.4.0 stores it as it is",
    ("produce", r"after the errors\..*\.base_offset"):
        "follows from the batch Kafka stored and Karst refused just before",
}


# ---------------------------------------------------------------------------------------------
# Building requests, exchanging them, normalizing answers
# ---------------------------------------------------------------------------------------------


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def build(message_class, values: dict, schema: dict | None = None):
    """A kafka-python message (or nested struct) from plain dicts and lists, by schema."""
    schema = schema or message_class.json
    fields = {snake(field["name"]): field for field in schema.get("fields", [])}
    arguments = {}
    for key, value in values.items():
        field = fields[key]
        if "fields" in field and value is not None:
            nested = getattr(message_class, field["type"].lstrip("[]"))
            if field["type"].startswith("[]"):
                value = [build(nested, item, field) for item in value]
            else:
                value = build(nested, value, field)
        arguments[key] = value
    return message_class(**arguments)


class Peer:
    def __init__(self, name: str, bootstrap: str):
        self.name = name
        host, port = bootstrap.rsplit(":", 1)
        self.address = (host, int(port))
        self.correlation_id = 0

    def call(self, request_class, response_class, version: int, values: dict) -> dict:
        """Sends one request on a new connection; returns the decoded response as a dict."""
        request = build(request_class, values)
        request.API_VERSION = version
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id="karst-conformance")
        with socket.create_connection(self.address, timeout=EXCHANGE_TIMEOUT_S) as connection:
            connection.sendall(request.encode(header=True, framed=True))
            size = struct.unpack(">i", read_exactly(connection, 4))[0]
            payload = read_exactly(connection, size)
        response = response_class.decode(payload, version=version, header=True)
        assert response.header.correlation_id == self.correlation_id, (self.name, response.header)
        return response.to_dict()


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def batch_summary(records: Any) -> Any:
    """Record batches as (base offset, length, magic, CRC, record count) per batch."""
    if records is None:
        return None
    data = records.encode("latin-1") if isinstance(records, str) else bytes(records)
    batches, position = [], 0
    while position + 61 <= len(data):
        base_offset, length, _leader_epoch, magic, crc = struct.unpack_from(">qiibI", data, position)
        if position + 12 + length > len(data):
            break  # a partial batch at the end of a fetch: clients discard it
        count = struct.unpack_from(">i", data, position + 57)[0]
        batches.append((base_offset, length, magic, crc, count))
        position += 12 + length
    return batches


def normalize(value: Any) -> Any:
    if isinstance(value, dict):
        normalized = {key: (batch_summary(item) if key == "records" else normalize(item))
                      for key, item in value.items() if key not in IGNORED_FIELDS}
        for key, item in normalized.items():
            # Topics in Metadata and configs in DescribeConfigs come in no particular order.
            if isinstance(item, list) and item and all(isinstance(entry, dict) and "name" in entry for entry in item):
                item.sort(key=lambda entry: entry["name"] or "")
        return normalized
    if isinstance(value, list):
        return [normalize(item) for item in value]
    return value


def differences(path: str, kafka: Any, karst: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(kafka, dict) and isinstance(karst, dict):
        found = []
        for key in sorted(set(kafka) | set(karst)):
            found += differences(f"{path}.{key}", kafka.get(key, "<absent>"), karst.get(key, "<absent>"))
        return found
    if isinstance(kafka, list) and isinstance(karst, list) and len(kafka) == len(karst):
        found = []
        for index, (left, right) in enumerate(zip(kafka, karst)):
            found += differences(f"{path}[{index}]", left, right)
        return found
    return [] if kafka == karst else [(path, kafka, karst)]


# ---------------------------------------------------------------------------------------------
# Record batches (magic 2), built by hand so that both brokers get the same bytes
# ---------------------------------------------------------------------------------------------


def batch(records: list[bytes], last_offset_delta: int, corrupt_crc: bool = False,
          base_timestamp_ms: int = BATCH_TIMESTAMP_MS) -> bytes:
    after_crc = struct.pack(">hiqqqhii", 0, last_offset_delta, base_timestamp_ms,
                            base_timestamp_ms + last_offset_delta, -1, -1, -1, len(records)) + b"".join(records)
    crc = crc32c(after_crc) ^ (0x5A5A5A5A if corrupt_crc else 0)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def good_batch(count: int = 3) -> bytes:
    return batch([encode_record(i, i, f"key-{i}".encode(), f"value-{i}".encode(), [("h", b"v")])
                  for i in range(count)], count - 1)


# ---------------------------------------------------------------------------------------------
# The requests (versions both brokers serve)
# ---------------------------------------------------------------------------------------------


def protocol():
    from kafka.protocol.admin import (CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
                                      CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
                                      DescribeConfigsRequest, DescribeConfigsResponse)
    from kafka.protocol.consumer import FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    from kafka.protocol.producer import ProduceRequest, ProduceResponse
    return locals()


def create_topics(peer: Peer, topics: list[dict]) -> dict:
    p = protocol()
    return peer.call(p["CreateTopicsRequest"], p["CreateTopicsResponse"], 7, {
        "topics": [{"name": topic["name"], "num_partitions": topic.get("partitions", 1),
                    "replication_factor": topic.get("replication_factor", 1), "assignments": [],
                    "configs": [{"name": name, "value": value} for name, value in topic.get("configs", {}).items()]}
                   for topic in topics],
        "timeout_ms": 10000, "validate_only": False})


def metadata(peer: Peer, topics: list[str]) -> dict:
    p = protocol()
    return peer.call(p["MetadataRequest"], p["MetadataResponse"], 12, {
        "topics": [{"name": name} for name in topics], "allow_auto_topic_creation": True,
        "include_topic_authorized_operations": False})


def produce(peer: Peer, topic: str, partition: int, records: bytes, acks: int = -1) -> dict:
    p = protocol()
    return peer.call(p["ProduceRequest"], p["ProduceResponse"], 9, {
        "transactional_id": None, "acks": acks, "timeout_ms": 10000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": records}]}]})


def fetch(peer: Peer, topic: str, partition: int, offset: int) -> dict:
    p = protocol()
    return peer.call(p["FetchRequest"], p["FetchResponse"], 12, {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": topic, "partitions": [{"partition": partition, "current_leader_epoch": -1,
                                                     "fetch_offset": offset, "last_fetched_epoch": -1,
                                                     "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
        "forgotten_topics_data": [], "rack_id": ""})


def list_offsets(peer: Peer, topic: str, partition: int, timestamp: int) -> dict:
    p = protocol()
    return peer.call(p["ListOffsetsRequest"], p["ListOffsetsResponse"], 7, {
        "replica_id": -1, "isolation_level": 0,
        "topics": [{"name": topic, "partitions": [{"partition_index": partition, "current_leader_epoch": -1,
                                                    "timestamp": timestamp}]}]})


def describe_configs(peer: Peer, topic: str, keys: list[str] | None) -> dict:
    p = protocol()
    return peer.call(p["DescribeConfigsRequest"], p["DescribeConfigsResponse"], 4, {
        "resources": [{"resource_type": 2, "resource_name": topic, "configuration_keys": keys}],
        "include_synonyms": False, "include_documentation": False})


def create_partitions(peer: Peer, topic: str, count: int) -> dict:
    p = protocol()
    return peer.call(p["CreatePartitionsRequest"], p["CreatePartitionsResponse"], 3, {
        "topics": [{"name": topic, "count": count, "assignments": None}], "timeout_ms": 10000, "validate_only": False})


def delete_topics(peer: Peer, names: list[str]) -> dict:
    p = protocol()
    return peer.call(p["DeleteTopicsRequest"], p["DeleteTopicsResponse"], 6, {
        "topics": [{"name": name} for name in names], "timeout_ms": 10000})


def delete_records(peer: Peer, topic: str, partition: int, offset: int) -> dict:
    from kafka.protocol.admin import DeleteRecordsRequest, DeleteRecordsResponse

    return peer.call(DeleteRecordsRequest, DeleteRecordsResponse, 2, {
        "topics": [{"name": topic, "partitions": [{"partition_index": partition, "offset": offset}]}],
        "timeout_ms": 10000})


def incremental_alter_configs(peer: Peer, topic: str, operations: list[tuple[str, int, str | None]],
                              validate_only: bool = False) -> dict:
    """operations: (name, operation, value); operation 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT."""
    from kafka.protocol.admin import IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse

    return peer.call(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, 1, {
        "resources": [{"resource_type": 2, "resource_name": topic, "configs": [
            {"name": name, "config_operation": operation, "value": value} for name, operation, value in operations]}],
        "validate_only": validate_only})


def alter_configs(peer: Peer, topic: str, configs: dict[str, str]) -> dict:
    from kafka.protocol.admin import AlterConfigsRequest, AlterConfigsResponse

    return peer.call(AlterConfigsRequest, AlterConfigsResponse, 2, {
        "resources": [{"resource_type": 2, "resource_name": topic,
                       "configs": [{"name": name, "value": value} for name, value in configs.items()]}],
        "validate_only": False})


def wait_for_leaders(peer: Peer, topic: str, partitions: int = 1) -> None:
    """Until every partition answers ListOffsets without error: Metadata names a leader a
    moment before that leader serves the partition, on both brokers."""
    def served():
        return all(list_offsets(peer, topic, partition, -1)["topics"][0]["partitions"][0]["error_code"] == 0
                   for partition in range(partitions))

    wait_until(served, timeout_s=20, what=f"{topic} served on {peer.name}")


# ---------------------------------------------------------------------------------------------
# The cases: each returns {step name: response}, in order
# ---------------------------------------------------------------------------------------------


def case_create_topics(peer: Peer) -> dict:
    steps = {"create": create_topics(peer, [
        {"name": "ct-ok", "partitions": 2, "configs": {"retention.ms": "3600000"}},
        {"name": "bad/name"},
        {"name": "ct-bad-config", "configs": {"retention.ms": "not-a-number"}},
        {"name": "ct-unknown-config", "configs": {"no.such.config": "1"}},
        {"name": "ct-zero-partitions", "partitions": 0},
        {"name": "ct-rf-too-large", "replication_factor": 3},
    ])}
    for topic in steps["create"]["topics"]:
        topic["configs"] = None  # every config a broker has: Karst's set is its own (see COMPATIBILITY.md)
    steps["create again"] = create_topics(peer, [{"name": "ct-ok"}])
    steps["create again"]["topics"][0]["configs"] = None
    return steps


def case_metadata(peer: Peer) -> dict:
    create_topics(peer, [{"name": "md", "partitions": 3}])
    wait_for_leaders(peer, "md", 3)
    return {
        "existing and missing": metadata(peer, ["md", "md-missing"]),
        "invalid names": metadata(peer, ["bad/name", "a" * 250]),
    }


def case_produce(peer: Peer) -> dict:
    create_topics(peer, [{"name": "pr"}, {"name": "pr-compacted", "configs": {"cleanup.policy": "compact"}},
                         {"name": "pr-zstd", "configs": {"compression.type": "zstd", "compression.zstd.level": "9"}},
                         {"name": "pr-old", "configs": {"message.timestamp.before.max.ms": "3600000"}}])
    for topic in ("pr", "pr-compacted", "pr-zstd", "pr-old"):
        wait_for_leaders(peer, topic)
    unkeyed = batch([encode_record(0, 0, None, b"no key")], 0)
    some_unkeyed = batch([encode_record(i, 0, None if i in (1, 3) else b"k", b"v") for i in range(5)], 4)
    ahead_ms = int(time.time() * 1000) + 2 * 3_600_000
    ahead = batch([encode_record(0, 0, b"k", b"v")], 0, base_timestamp_ms=ahead_ms)
    wrong_deltas = batch([encode_record(0, 0, b"k", b"v0"), encode_record(5, 0, b"k", b"v1")], 1)
    return {
        "valid batch": produce(peer, "pr", 0, good_batch()),
        "second batch": produce(peer, "pr", 0, good_batch(2)),
        "missing topic": produce(peer, "pr-missing", 0, good_batch()),
        "missing partition": produce(peer, "pr", 7, good_batch()),
        "corrupt crc": produce(peer, "pr", 0, batch([encode_record(0, 0, b"k", b"v")], 0, corrupt_crc=True)),
        "acks 2": produce(peer, "pr", 0, good_batch(), acks=2),
        "record offset deltas not 0..n-1 (KIP-467)": produce(peer, "pr", 0, wrong_deltas),
        "null key to a compacted topic (KIP-467)": produce(peer, "pr-compacted", 0, unkeyed),
        "null keys 1 and 3 of 5 to a compacted topic (KIP-467)": produce(peer, "pr-compacted", 0, some_unkeyed),
        "timestamps older than before.max.ms (KIP-467)": produce(peer, "pr-old", 0, good_batch()),
        "a timestamp two hours ahead (after.max.ms default)": produce(peer, "pr", 0, ahead),
        "to a zstd topic (recompressed)": produce(peer, "pr-zstd", 0, good_batch()),
        "after the errors": produce(peer, "pr", 0, good_batch(1)),
    }


def case_fetch_and_list_offsets(peer: Peer) -> dict:
    create_topics(peer, [{"name": "fe"}])
    wait_for_leaders(peer, "fe")
    produce(peer, "fe", 0, good_batch(3))
    produce(peer, "fe", 0, good_batch(2))
    return {
        "fetch from 0": fetch(peer, "fe", 0, 0),
        "fetch from 3": fetch(peer, "fe", 0, 3),
        "fetch at the end": fetch(peer, "fe", 0, 5),
        "fetch past the end": fetch(peer, "fe", 0, 100),
        "fetch missing partition": fetch(peer, "fe", 3, 0),
        "fetch missing topic": fetch(peer, "fe-missing", 0, 0),
        "earliest": list_offsets(peer, "fe", 0, -2),
        "latest": list_offsets(peer, "fe", 0, -1),
        "max timestamp": list_offsets(peer, "fe", 0, -3),
        "by timestamp": list_offsets(peer, "fe", 0, BATCH_TIMESTAMP_MS + 1),
        "after the newest timestamp": list_offsets(peer, "fe", 0, BATCH_TIMESTAMP_MS + 10_000),
        "missing topic": list_offsets(peer, "fe-missing", 0, -1),
    }


def case_delete_records(peer: Peer) -> dict:
    create_topics(peer, [{"name": "dr"}])
    wait_for_leaders(peer, "dr")
    produce(peer, "dr", 0, good_batch(3))
    produce(peer, "dr", 0, good_batch(3))
    return {
        "inside the first batch": delete_records(peer, "dr", 0, 2),
        "earliest after it": list_offsets(peer, "dr", 0, -2),
        "fetch below the new start": fetch(peer, "dr", 0, 0),
        "fetch from the new start": fetch(peer, "dr", 0, 2),
        "below the start": delete_records(peer, "dr", 0, 1),
        "past the end": delete_records(peer, "dr", 0, 100),
        "to the high watermark (-1)": delete_records(peer, "dr", 0, -1),
        "earliest at the end": list_offsets(peer, "dr", 0, -2),
        "missing partition": delete_records(peer, "dr", 5, 0),
        "missing topic": delete_records(peer, "dr-missing", 0, 0),
    }


def describe_configs_settled(peer: Peer, topic: str, keys: list[str], settled, timeout_s: float = 10.0) -> dict:
    """DescribeConfigs until the first key's value satisfies `settled` (bounded): what both
    brokers answer once the change has reached the broker asked."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = describe_configs(peer, topic, keys)
        value = answer["results"][0]["configs"][0]["value"]
        if settled(value or "") or time.monotonic() >= deadline:
            return answer
        time.sleep(0.05)


def case_alter_configs(peer: Peer) -> dict:
    create_topics(peer, [{"name": "ac", "configs": {"retention.ms": "3600000"}}])
    wait_for_leaders(peer, "ac")
    keys = ["retention.ms", "retention.bytes", "cleanup.policy", "segment.bytes"]
    return {
        "set two": incremental_alter_configs(peer, "ac", [("retention.bytes", 0, "1048576"),
                                                          ("cleanup.policy", 0, "compact")]),
        "after set": describe_configs(peer, "ac", keys),
        "append to a list": incremental_alter_configs(peer, "ac", [("cleanup.policy", 2, "delete")]),
        # A broker answers DescribeConfigs from its copy of the metadata, which follows the
        # controller's: Kafka itself sometimes still answers the value before the append.
        "after append": describe_configs_settled(peer, "ac", ["cleanup.policy"], lambda v: "delete" in v),
        "delete one": incremental_alter_configs(peer, "ac", [("retention.ms", 1, None)]),
        "after delete": describe_configs(peer, "ac", keys),
        "value of the wrong type": incremental_alter_configs(peer, "ac", [("retention.ms", 0, "soon")]),
        "unknown name": incremental_alter_configs(peer, "ac", [("no.such.config", 0, "1")]),
        "append to a number": incremental_alter_configs(peer, "ac", [("retention.ms", 2, "5")]),
        "validate only": incremental_alter_configs(peer, "ac", [("segment.bytes", 0, "2097152")], validate_only=True),
        "after validate only": describe_configs(peer, "ac", ["segment.bytes"]),
        "missing topic": incremental_alter_configs(peer, "ac-missing", [("retention.ms", 0, "1")]),
        "AlterConfigs replaces the set": alter_configs(peer, "ac", {"segment.bytes": "2097152"}),
        "after AlterConfigs": describe_configs(peer, "ac", keys),
    }


def case_configs_partitions_delete(peer: Peer) -> dict:
    create_topics(peer, [{"name": "cf", "configs": {"retention.ms": "3600000", "cleanup.policy": "compact"}}])
    wait_for_leaders(peer, "cf")
    return {
        "describe chosen keys": describe_configs(peer, "cf", ["retention.ms", "cleanup.policy", "max.message.bytes",
                                                              "segment.bytes", "min.insync.replicas"]),
        "describe missing topic": describe_configs(peer, "cf-missing", ["retention.ms"]),
        "grow to 3 partitions": create_partitions(peer, "cf", 3),
        "shrink to 1 partition": create_partitions(peer, "cf", 1),
        "grow missing topic": create_partitions(peer, "cf-missing", 2),
        "delete missing topic": delete_topics(peer, ["cf-missing"]),
        "delete": delete_topics(peer, ["cf"]),
    }


def case_api_versions(peer: Peer) -> dict:
    """ApiVersions: the versions served differ by design (docs/COMPATIBILITY.md lists them),
    so only the answers' shape is compared: error code, and that the ranges are sane."""
    from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse

    served = peer.call(ApiVersionsRequest, ApiVersionsResponse, 3, {
        "client_software_name": "karst-conformance", "client_software_version": "1"})
    # KIP-511: a version the broker does not know gets a v0 answer, UNSUPPORTED_VERSION, and
    # the ranges it does serve (the request body is not even read).
    with socket.create_connection(peer.address, timeout=EXCHANGE_TIMEOUT_S) as connection:
        connection.sendall(frame(request_header_v1(18, 99, 4242, "karst-conformance") + b"\x00" * 8))
        size = struct.unpack(">i", read_exactly(connection, 4))[0]
        payload = read_exactly(connection, size)
    unknown = ApiVersionsResponse.decode(payload, version=0, header=True).to_dict()

    def shape(answer: dict) -> dict:
        keys = answer["api_keys"]
        return {"error_code": answer["error_code"],
                "serves ApiVersions": any(key["api_key"] == 18 for key in keys),
                "every range min <= max": all(key["min_version"] <= key["max_version"] for key in keys)}

    return {"v3": shape(served), "unknown version 99": shape(unknown)}


CASES = {name[len("case_"):]: case for name, case in globals().items() if name.startswith("case_")}


# ---------------------------------------------------------------------------------------------
# The brokers and the test
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apache_kafka():
    kafka_classpath()
    directory = Path(tempfile.mkdtemp(prefix="kafka-peer-")) / "peer"
    result = subprocess.run([str(KAFKA_PEER), "start", str(directory), "--set", "auto.create.topics.enable=false"],
                            capture_output=True, text=True, timeout=PREPARE_TIMEOUT_S)
    assert result.returncode == 0, f"Apache Kafka did not start:\n{result.stdout}\n{result.stderr}"
    try:
        yield Peer("kafka", result.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([str(KAFKA_PEER), "stop", str(directory)], capture_output=True, timeout=60)
        directory.parent.rmdir()


@pytest.fixture(scope="module")
def karst_peer(module_brokers):
    broker = module_brokers.start(settings={"auto.create.topics.enable": "false"}, name="conformance")
    return Peer("karst", broker.bootstrap)


@pytest.mark.parametrize("case", sorted(CASES))
def test_karst_answers_as_apache_kafka_does(case, apache_kafka, karst_peer):
    kafka_steps = {step: normalize(answer) for step, answer in CASES[case](apache_kafka).items()}
    karst_steps = {step: normalize(answer) for step, answer in CASES[case](karst_peer).items()}
    found = differences(case, kafka_steps, karst_steps)
    unexplained = [(path, kafka, karst) for path, kafka, karst in found
                   if not any(known_case == case and re.search(pattern, path)
                              for known_case, pattern in KNOWN_DIFFERENCES)]
    for path, kafka, karst in found:
        print(f"{path}: kafka={kafka!r} karst={karst!r}")
    assert not unexplained, "answers that differ from Apache Kafka 4.4.0's:\n" + "\n".join(
        f"  {path}: kafka={kafka!r} karst={karst!r}" for path, kafka, karst in unexplained)
