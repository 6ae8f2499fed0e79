"""Start-up configuration (`--set`, `--config FILE.toml`) and the admin HTTP listener."""

import subprocess

from karst import LOOPBACK, confluent_producer, free_port, topic_partition_count, wait_until

STARTUP_REFUSAL_TIMEOUT_S = 20


def run_until_exit(command, timeout_s=STARTUP_REFUSAL_TIMEOUT_S):
    """Run a broker that is expected to refuse to start; kill it if it does not exit."""
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"broker did not exit within {timeout_s}s; stderr so far:\n{expired.stderr}")


def write_config(path, entries):
    lines = []
    for key, value in entries.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f'"{key}" = {rendered}')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_admin_listener_serves_health_and_prometheus_metrics(brokers):
    broker = brokers.start()

    status, _ = broker.http_get("/health")
    assert status == 200

    status, metrics = broker.http_get("/metrics")
    assert status == 200
    assert "# TYPE" in metrics, metrics[:2000]


def metric_value(text, name_with_labels):
    """The value of one exposition line `name{labels} value`, or None."""
    for line in text.splitlines():
        if line.startswith(name_with_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_messages_bytes_and_log_size_per_topic(brokers):
    broker = brokers.start()
    producer = confluent_producer(broker)
    for index in range(100):
        producer.produce("metered", f"value-{index}".encode())
    assert producer.flush(30) == 0

    _, metrics = broker.http_get("/metrics")
    assert metric_value(metrics, 'kafka_server_brokertopicmetrics_messagesin_total{topic="metered"}') == 100
    assert metric_value(metrics, 'kafka_server_brokertopicmetrics_bytesin_total{topic="metered"}') > 100 * 7
    assert metric_value(metrics, 'kafka_network_requestmetrics_requests_total{request="Produce"}') >= 1
    assert 'kafka_network_requestmetrics_totaltime_seconds_bucket{request="Produce",le="0.005"}' in metrics
    # log.io.backend=auto picks io_uring on kernels that allow it, portable elsewhere.
    backends = [b for b in ("io_uring", "portable")
                if metric_value(metrics, f'karst_storage_io_backend{{backend="{b}"}}') == 1]
    assert len(backends) == 1, metrics[:3000]
    # The data volume's free space, next to the reserve appends may not eat into.
    assert (metric_value(metrics, "karst_log_dir_free_bytes") or 0) > 0, metrics[:3000]
    assert metric_value(metrics, "karst_log_dir_min_free_bytes") == 256 * 1024 * 1024

    # Log sizes are sampled every few seconds.
    def log_size():
        _, text = broker.http_get("/metrics")
        return metric_value(text, 'kafka_log_log_size_bytes{topic="metered",partition="0"}') or 0
    wait_until(lambda: log_size() > 100 * 7, timeout_s=15, what="log size gauge of metered-0")


def test_config_file_with_kafka_key_names_configures_the_broker(brokers, tmp_path):
    broker = brokers.new()
    broker.config_file = write_config(tmp_path / "karst.toml", {
        "node.id": 1,
        "listeners": f"PLAINTEXT://{LOOPBACK}:{broker.port}",
        "log.dirs": str(broker.data_dir),
        "admin.listener": f"{LOOPBACK}:{broker.admin_port}",
        "num.partitions": 3,
        "auto.create.topics.enable": True,
        "log.segment.bytes": 1048576,
    })
    broker.start()

    # Auto-creation on first produce uses num.partitions from the file.
    producer = confluent_producer(broker)
    producer.produce("auto-created", b"hello")
    assert producer.flush(30) == 0
    wait_until(lambda: topic_partition_count(broker, "auto-created") == 3, timeout_s=10,
               what="auto-created topic with num.partitions=3")


def test_config_file_with_misspelled_key_refuses_to_start_and_names_the_key(karst_bin, tmp_path):
    port = free_port()
    config = write_config(tmp_path / "karst.toml", {
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "log.dirs": str(tmp_path / "data"),
        "admin.listener": f"{LOOPBACK}:{free_port()}",
        "log.retention.hourz": 5,
    })

    result = run_until_exit([str(karst_bin), "server", "--config", str(config)])

    assert result.returncode != 0, "an unknown config key must stop the broker"
    assert "log.retention.hourz" in result.stderr, result.stderr


def test_set_with_invalid_value_refuses_to_start_and_names_the_key(karst_bin, tmp_path):
    result = run_until_exit([
        str(karst_bin), "server",
        "--set", f"listeners=PLAINTEXT://{LOOPBACK}:{free_port()}",
        "--set", f"log.dirs={tmp_path / 'data'}",
        "--set", f"admin.listener={LOOPBACK}:{free_port()}",
        "--set", "num.partitions=many",
    ])

    assert result.returncode != 0, "an invalid value must stop the broker"
    assert "num.partitions" in result.stderr, result.stderr


def test_set_with_unknown_key_refuses_to_start_and_names_the_key(karst_bin, tmp_path):
    result = run_until_exit([
        str(karst_bin), "server",
        "--set", f"listeners=PLAINTEXT://{LOOPBACK}:{free_port()}",
        "--set", f"log.dirs={tmp_path / 'data'}",
        "--set", f"admin.listener={LOOPBACK}:{free_port()}",
        "--set", "log.segment.bytez=1024",
    ])

    assert result.returncode != 0
    assert "log.segment.bytez" in result.stderr, result.stderr
