"""kcat (librdkafka's command-line client) against a Karst broker."""

import subprocess

from karst import create_topic

KCAT_TIMEOUT_S = 60


def kcat(broker, *args, input_text=None):
    return subprocess.run(
        ["kcat", "-b", broker.bootstrap, *args],
        input=input_text, capture_output=True, text=True, timeout=KCAT_TIMEOUT_S,
    )


def test_kcat_lists_the_broker_in_metadata(brokers):
    broker = brokers.start()

    result = kcat(broker, "-L")

    assert result.returncode == 0, result.stderr
    assert "1 brokers:" in result.stdout, result.stdout
    assert f"at {broker.bootstrap}" in result.stdout, result.stdout


def test_kcat_round_trips_ten_thousand_lines_in_order(brokers):
    broker = brokers.start()
    topic = "kcat-lines"
    create_topic(broker, topic, partitions=1)
    lines = [f"line {i:05d} " + "x" * (i % 97) for i in range(10_000)]

    produced = kcat(broker, "-P", "-t", topic, "-p", "0", input_text="\n".join(lines) + "\n")
    assert produced.returncode == 0, produced.stderr

    consumed = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q")
    assert consumed.returncode == 0, consumed.stderr
    got = consumed.stdout.splitlines()
    assert len(got) == len(lines)
    assert got == lines
