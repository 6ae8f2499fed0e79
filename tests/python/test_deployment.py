"""Deployment: the systemd unit, the shipped configs, `karst storage` and the data directory's
identity, checked with the real binary.

* `config/systemd/karst@.service` passes `systemd-analyze verify`.
* `karst storage random-uuid` prints Kafka-style cluster ids; `karst storage format` writes
  Kafka's meta.properties and refuses a directory of another cluster or node.
* A node started on a directory formatted for another cluster, or another node id, is
  refused with a message naming both.
* `karst server` tells systemd it is ready (sd_notify READY=1) once it serves.
* `config/single.toml` and `config/node{1,2,3}.toml` start as they are (with the data
  directory moved into the test's temporary directory), and the three node configs form one
  cluster with one leader and two followers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from karst import (LOOPBACK, confluent_consumer, confluent_producer, consume_partitions, die_with_parent, free_port, port_is_free,
                   wait_until)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "config"
UNIT_FILE = CONFIG_DIR / "systemd" / "karst@.service"
UNIT_EXEC_PATH = "/usr/local/bin/karst"

CLUSTER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
CLUSTER_A = "MkU3OEVBNTcwNTJENDM2Qk"
CLUSTER_B = "4L6g3nShT-eMCtK--X86sw"

# Time a refused start gets to exit (it must not get as far as serving).
REFUSED_START_TIMEOUT_S = 30
# Time the three node configs get to elect a controller once all three listen.
QUORUM_FORM_TIMEOUT_S = 30

# The local cluster of config/node{1,2,3}.toml: (node id, Kafka port, admin port).
LOCAL_NODES = [(1, 9092, 9644), (2, 9192, 9645), (3, 9292, 9646)]
LOCAL_CONTROLLER_PORTS = [9093, 9193, 9293]


def run_karst(karst_bin: Path, *args: str, timeout_s: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(die_with_parent([str(karst_bin), *args]), capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL, **kwargs)


def write_config(path: Path, data_dir: Path, node_id: int = 1, kafka_port: Optional[int] = None,
                 admin_port: Optional[int] = None, **extra) -> Path:
    """A minimal single-node config with its data in `data_dir`, on free ports unless given."""
    settings = {
        "node.id": node_id,
        "log.dirs": str(data_dir),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{kafka_port or free_port()}",
        "admin.listener": f"{LOOPBACK}:{admin_port or free_port()}",
        **extra,
    }
    lines = [f'"{key}" = {json.dumps(value)}' for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def meta_properties(data_dir: Path) -> dict[str, str]:
    entries = {}
    for line in (data_dir / "meta.properties").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries[key] = value
    return entries


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.geteuid() != 0:
            pytest.skip("systemd-analyze is missing and this is not root: install the `systemd` "
                        "package (scripts/test does, as root)")
        pytest.fail("systemd-analyze is missing although scripts/test installs `systemd`")
    return found


def test_the_systemd_unit_passes_systemd_analyze_verify(karst_bin, tmp_path):
    # `verify` insists that ExecStart's program exists, and /usr/local/bin/karst is where an
    # operator installs it, not where the test binary lives: check the shipped unit with only
    # that path pointed at the binary under test.
    text = UNIT_FILE.read_text()
    exec_start = f"\nExecStart={UNIT_EXEC_PATH} "
    assert text.count(exec_start) == 1, f"expected one ExecStart={UNIT_EXEC_PATH}"
    unit = tmp_path / "karst@.service"
    unit.write_text(text.replace(exec_start, f"\nExecStart={karst_bin} "))

    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)

    assert result.returncode == 0, f"systemd-analyze verify failed:\n{result.stdout}{result.stderr}"
    # verify also reports problems it tolerates ("Unknown key ..., ignoring") with status 0.
    complaints = [line for line in result.stderr.splitlines() if "karst@" in line]
    assert not complaints, "systemd-analyze verify complained:\n" + "\n".join(complaints)


def test_the_systemd_unit_is_a_hardened_notify_service():
    directives = {}
    for line in UNIT_FILE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            directives[key.strip()] = value.strip()
    expected = {
        "Type": "notify",
        "ExecStart": f"{UNIT_EXEC_PATH} server --config /etc/karst/%i.toml",
        "Restart": "on-failure",
        "LimitNOFILE": "1048576",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/var/lib/karst",
        "StateDirectory": "karst",
        "User": "karst",
    }
    for key, value in expected.items():
        assert directives.get(key) == value, f"{key}={directives.get(key)!r}, want {value!r}"
    for key in ("RestartSec", "TimeoutStopSec"):
        assert key in directives, f"{key} is missing"


def test_the_server_notifies_systemd_when_ready_and_when_stopping(karst_bin, tmp_path):
    # systemd's side of Type=notify: a datagram socket named in $NOTIFY_SOCKET.
    socket_path = tmp_path / "notify.sock"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(socket_path))
    systemd.settimeout(20)
    kafka_port = free_port()
    log_path = tmp_path / "karst.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            die_with_parent([str(karst_bin), "server",
                             "--set", f"listeners=PLAINTEXT://{LOOPBACK}:{kafka_port}",
                             "--set", f"admin.listener={LOOPBACK}:{free_port()}",
                             "--set", f"log.dirs={tmp_path / 'data'}"]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, "NOTIFY_SOCKET": str(socket_path)})
    try:
        try:
            ready = systemd.recv(4096).decode()
        except socket.timeout:
            pytest.fail(f"no sd_notify message within 20 s:\n{log_path.read_text()}")
        assert "READY=1" in ready.splitlines(), ready
        # Ready means serving: the Kafka listener accepts connections.
        with socket.create_connection((LOOPBACK, kafka_port), timeout=5):
            pass

        process.terminate()
        stopping = systemd.recv(4096).decode()
        assert "STOPPING=1" in stopping.splitlines(), stopping
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        systemd.close()


# ---------------------------------------------------------------------------------------------
# karst storage and the data directory's identity
# ---------------------------------------------------------------------------------------------


def test_storage_random_uuid_prints_a_new_kafka_style_cluster_id_each_time(karst_bin):
    ids = []
    for _ in range(3):
        result = run_karst(karst_bin, "storage", "random-uuid")
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    for cluster_id in ids:
        assert CLUSTER_ID_PATTERN.match(cluster_id), cluster_id
        assert not cluster_id.startswith("-"), cluster_id
    assert len(set(ids)) == 3, ids


def test_storage_format_writes_kafka_meta_properties_once(karst_bin, tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "node.toml", data, node_id=5)

    formatted = run_karst(karst_bin, "storage", "format", "--cluster-id", CLUSTER_A, "--config", str(config))

    assert formatted.returncode == 0, formatted.stderr
    identity = meta_properties(data)
    assert identity["version"] == "1"
    assert identity["cluster.id"] == CLUSTER_A
    assert identity["node.id"] == "5"
    assert CLUSTER_ID_PATTERN.match(identity["directory.id"]), identity

    # Formatting again is refused, as by kafka-storage, unless --ignore-formatted.
    again = run_karst(karst_bin, "storage", "format", "--cluster-id", CLUSTER_A, "--config", str(config))
    assert again.returncode != 0
    assert "already formatted" in again.stderr and "--ignore-formatted" in again.stderr, again.stderr
    ignored = run_karst(karst_bin, "storage", "format", "--cluster-id", CLUSTER_A, "--config", str(config),
                        "--ignore-formatted")
    assert ignored.returncode == 0, ignored.stderr
    assert meta_properties(data) == identity, "an ignored format leaves the directory as it was"


def test_storage_format_refuses_a_directory_of_another_cluster_or_node(karst_bin, tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "node.toml", data, node_id=1)
    assert run_karst(karst_bin, "storage", "format", "-t", CLUSTER_A, "-c", str(config)).returncode == 0

    other_cluster = run_karst(karst_bin, "storage", "format", "-t", CLUSTER_B, "-c", str(config),
                              "--ignore-formatted")
    assert other_cluster.returncode != 0
    assert CLUSTER_A in other_cluster.stderr and CLUSTER_B in other_cluster.stderr, other_cluster.stderr

    other_node = run_karst(karst_bin, "storage", "format", "-t", CLUSTER_A, "-c", str(config),
                           "--set", "node.id=2", "--ignore-formatted")
    assert other_node.returncode != 0
    assert "node.id 1" in other_node.stderr and "node.id 2" in other_node.stderr, other_node.stderr
    assert meta_properties(data)["cluster.id"] == CLUSTER_A


def test_storage_format_refuses_a_malformed_cluster_id(karst_bin, tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "node.toml", data)
    result = run_karst(karst_bin, "storage", "format", "--cluster-id", "my-cluster", "--config", str(config))
    assert result.returncode != 0
    assert "random-uuid" in result.stderr, result.stderr
    assert not (data / "meta.properties").exists()


def start_refused(karst_bin: Path, config: Path, *sets: str) -> str:
    """Starts `karst server` expecting it to exit non-zero before serving; returns its output."""
    args = ["server", "--config", str(config)]
    for setting in sets:
        args += ["--set", setting]
    try:
        result = run_karst(karst_bin, *args, timeout_s=REFUSED_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"karst server {' '.join(args)} kept running instead of refusing to start")
    assert result.returncode != 0, f"started although it should not:\n{result.stderr}"
    return result.stdout + result.stderr


def test_a_node_started_with_another_cluster_id_is_refused(karst_bin, tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "node.toml", data)
    assert run_karst(karst_bin, "storage", "format", "-t", CLUSTER_A, "-c", str(config)).returncode == 0

    output = start_refused(karst_bin, config, f"cluster.id={CLUSTER_B}")

    assert "belongs to cluster" in output, output
    assert CLUSTER_A in output and CLUSTER_B in output, output


def test_a_node_started_with_another_node_id_is_refused(karst_bin, tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "node.toml", data, node_id=1)
    assert run_karst(karst_bin, "storage", "format", "-t", CLUSTER_A, "-c", str(config)).returncode == 0

    output = start_refused(karst_bin, config, "node.id=2")

    assert "node.id 1" in output and "node.id 2" in output, output


def test_a_formatted_node_starts_with_its_cluster_id(brokers, karst_bin, tmp_path):
    data = tmp_path / "data"
    config = tmp_path / "node.toml"
    broker = brokers.new(name="formatted", config_file=config)
    write_config(config, data, kafka_port=broker.port, admin_port=broker.admin_port,
                 **{"cluster.id": CLUSTER_A})
    assert run_karst(karst_bin, "storage", "format", "--config", str(config)).returncode == 0

    broker.start()

    listing = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-m", "10"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert meta_properties(data)["cluster.id"] == CLUSTER_A


# ---------------------------------------------------------------------------------------------
# The shipped configs
# ---------------------------------------------------------------------------------------------


def test_single_toml_starts_a_single_node(brokers, tmp_path):
    broker = brokers.new(name="single", config_file=CONFIG_DIR / "single.toml")
    broker.settings = {
        "log.dirs": str(tmp_path / "single-data"),
        "listeners": f"PLAINTEXT://{LOOPBACK}:{broker.port}",
        "admin.listener": f"{LOOPBACK}:{broker.admin_port}",
    }
    broker.start()
    status, body = broker.http_get("/health")
    assert status == 200, body

    # A quorum of one: this node leads it.
    result = run_karst(broker.binary, "cluster", "quorum", "--format", "json",
                       "--bootstrap-server", broker.bootstrap)
    assert result.returncode == 0, result.stderr
    quorum = json.loads(result.stdout)
    assert quorum["leader_id"] == 1
    assert [(v["node_id"], v["status"], v["lag"]) for v in quorum["voters"]] == [(1, "leader", 0)]


def exported_metric_names(broker) -> set[str]:
    status, text = broker.http_get("/metrics")
    assert status == 200, text
    return {re.split(r"[{ ]", line, 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_grafana_dashboard_charts_is_exported(brokers):
    """A dashboard panel over a metric the broker does not export stays empty without a word:
    each series the dashboard queries must exist on a node that has served traffic."""
    dashboard = json.loads((CONFIG_DIR / "grafana" / "karst.json").read_text())
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"([a-z_]+)\{instance", target["expr"])}
    assert len(charted) >= 8, charted
    broker = brokers.start()
    producer = confluent_producer(broker)
    for index in range(10):
        producer.produce("charted", f"value-{index}".encode(), partition=0)
    assert producer.flush(30) == 0
    assert len(consume_partitions(broker, "charted", {0: 10})[0]) == 10
    # A group member too: the group panels chart rebalances and commits.
    member = confluent_consumer(broker, **{"group.id": "charted-group"})
    member.subscribe(["charted"])
    received = wait_until(lambda: (lambda m: m if m is not None and not m.error() else None)(member.poll(0.2)),
                          timeout_s=30, what="a record through a consumer group")
    member.commit(message=received, asynchronous=False)
    member.close()
    try:
        wait_until(lambda: charted <= exported_metric_names(broker), timeout_s=15, what="every charted metric")
    except AssertionError:
        raise AssertionError(f"charted but not exported: {sorted(charted - exported_metric_names(broker))}")


def require_local_cluster_ports() -> None:
    ports = [port for _, kafka, admin in LOCAL_NODES for port in (kafka, admin)] + LOCAL_CONTROLLER_PORTS
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        pytest.skip(f"ports {busy} of config/node*.toml are in use on this machine")


@pytest.mark.slow
def test_the_three_node_configs_form_one_cluster(brokers, karst_bin, tmp_path):
    require_local_cluster_ports()
    nodes = []
    for node_id, kafka_port, admin_port in LOCAL_NODES:
        config = CONFIG_DIR / f"node{node_id}.toml"
        data = tmp_path / f"node{node_id}"
        # Format each node as an operator would (the configs carry the cluster id).
        formatted = run_karst(karst_bin, "storage", "format", "--config", str(config),
                              "--set", f"log.dirs={data}")
        assert formatted.returncode == 0, formatted.stderr
        node = brokers.new(name=f"node{node_id}", config_file=config, port=kafka_port,
                           admin_port=admin_port, settings={"log.dirs": str(data)})
        nodes.append(node.start(wait=False))
    for node in nodes:
        node.wait_ready()

    def quorum():
        result = run_karst(karst_bin, "cluster", "quorum", "--format", "json",
                           "--bootstrap-server", nodes[0].bootstrap)
        return json.loads(result.stdout) if result.returncode == 0 else None

    described = wait_until(lambda: (q := quorum()) and q["leader_id"] in (1, 2, 3) and q,
                           timeout_s=QUORUM_FORM_TIMEOUT_S, what="a controller in DescribeQuorum")
    statuses = sorted(voter["status"] for voter in described["voters"])
    assert statuses == ["follower", "follower", "leader"], described
    assert sorted(voter["node_id"] for voter in described["voters"]) == [1, 2, 3]
    assert described["observers"] == []

    brokers_result = run_karst(karst_bin, "cluster", "brokers", "--format", "json",
                               "--bootstrap-server", nodes[1].bootstrap)
    assert brokers_result.returncode == 0, brokers_result.stderr
    cluster = json.loads(brokers_result.stdout)
    assert cluster["cluster_id"] == "frqy0WqGSI2Uz_nDyvB_BA"
    # KIP-590: a broker reports itself (a live broker) as the controller; it forwards.
    assert cluster["controller"] in (1, 2, 3)
    assert sorted(broker["id"] for broker in cluster["brokers"]) == [1, 2, 3]

    # The admin listener's view adds incarnation ids and broker epochs.
    admin_result = run_karst(karst_bin, "cluster", "brokers", "--format", "json",
                             "--admin-server", f"{LOOPBACK}:{nodes[2].admin_port}")
    assert admin_result.returncode == 0, admin_result.stderr
    registered = json.loads(admin_result.stdout)
    assert registered["controller"] == described["leader_id"]
    assert registered["quorum"]["voters"] == [
        {"id": 1, "address": "127.0.0.1:9093"},
        {"id": 2, "address": "127.0.0.1:9193"},
        {"id": 3, "address": "127.0.0.1:9293"},
    ]
    assert sorted(broker["id"] for broker in registered["brokers"]) == [1, 2, 3]
    for broker in registered["brokers"]:
        assert re.fullmatch(r"[0-9a-f-]{36}", broker["incarnation"]), broker
        assert broker["epoch"] >= 0, broker
        assert {"name": "PLAINTEXT", "host": LOOPBACK, "port": LOCAL_NODES[broker["id"] - 1][1],
                "security_protocol": 0} in broker["listeners"], broker

    # Every node lists the partitions it hosts: a 6-partition topic spreads over all three.
    created = run_karst(karst_bin, "topics", "create", "--topic", "spread", "--partitions", "6",
                        "--replication-factor", "1", "--bootstrap-server", nodes[0].bootstrap)
    assert created.returncode == 0, created.stderr

    def hosted():
        views = {}
        for node in nodes:
            status, body = node.http_get("/v1/partitions")
            assert status == 200, body
            views[node.port] = [p for p in json.loads(body)["partitions"] if p["topic"] == "spread"]
        return views if sum(len(v) for v in views.values()) == 6 else None

    views = wait_until(hosted, timeout_s=10, what="the 6 partitions of `spread` hosted")
    assert all(views.values()), f"some node hosts no partition of `spread`: {views}"
    for partitions in views.values():
        for partition in partitions:
            assert partition["replicas"] == [partition["leader"]], partition
            assert partition["high_watermark"] == partition["log_end_offset"] == 0, partition
