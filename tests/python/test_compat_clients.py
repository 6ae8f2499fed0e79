"""Every client scenario of tests/compat/ against Karst: a single node and a three-node cluster
(issue 11).

The same scenario in each client: admin (create with configs, describe, alter configs, add
partitions, an existing topic, a bad config), keyed records with headers in every codec,
read back by partition and checked record by record; a consumer group (a member subscribes,
reads every record, commits the middle of each partition and closes; the admin lists and
describes the group and its offsets; a new member resumes exactly at the commit, commits the
end; the group is deleted); ListOffsets, the errors for a missing topic, delete. Clients:
Java kafka-clients 4.4.0 (one JVM for the whole scenario), franz-go (kgo + kadm) and Sarama
in one Go binary, kafkajs, confluent-kafka (librdkafka). The same programs pass against
Apache Kafka 4.4.0 (`scripts/kafka-peer`), which is how they were checked.

The producers run with their defaults (idempotence on for Java and franz-go); on the cluster
the scenario's topic has replication factor 3.

Each broker runs with auto.create.topics.enable=false, so a missing topic stays missing, and
with group.initial.rebalance.delay.ms=0 (as Kafka's development setups have it), so each of
the scenario's group joins does not wait the default three seconds for more members.
"""

from __future__ import annotations

import pytest

from compat import (
    SCENARIO_TIMEOUT_S,
    go_scenario_command,
    java_scenario_command,
    js_scenario_command,
    python_scenario_command,
    run_program,
    scenario_args,
)
from karst import Cluster

COMPAT_SETTINGS = {"auto.create.topics.enable": "false", "group.initial.rebalance.delay.ms": 0}

# The cluster's scenarios use replication factor 3: partition data is replicated (issue 7).
CLUSTER_REPLICATION_FACTOR = 3

SCENARIOS = {
    "java-kafka-clients": java_scenario_command,
    "go-franz-sarama": go_scenario_command,
    "kafkajs": js_scenario_command,
    "python-confluent-kafka": python_scenario_command,
}


@pytest.fixture(scope="module")
def single_node(module_brokers):
    broker = module_brokers.start(settings=COMPAT_SETTINGS, name="single")
    return broker.bootstrap, 1, 1


@pytest.fixture(scope="module")
def three_nodes(module_brokers):
    cluster = Cluster(module_brokers, settings=COMPAT_SETTINGS).start()
    cluster.wait_for_leader()
    return cluster.bootstrap, 3, CLUSTER_REPLICATION_FACTOR


@pytest.mark.slow
@pytest.mark.parametrize("client", sorted(SCENARIOS))
@pytest.mark.parametrize("topology", ["single_node", "three_nodes"])
def test_client_scenario_passes(client, topology, request):
    """The client's scenario program exits 0; any failure shows its whole output."""
    bootstrap, brokers, replication_factor = request.getfixturevalue(topology)
    command = SCENARIOS[client]()
    output = run_program(
        [*command, *scenario_args(bootstrap, brokers, replication_factor, f"{client}-{topology}".replace("_", "-"))],
        SCENARIO_TIMEOUT_S, f"{client} scenario against {topology}")
    print(output)
    assert "FAILED" not in output, output
    assert "checks held" in output, output


def test_java_producer_with_default_settings(single_node):
    """The issue's goal: the Java scenario with the producer's defaults (idempotence on, so
    InitProducerId first), explicitly, whatever Scenario.IDEMPOTENCE_SERVED says."""
    bootstrap, brokers, replication_factor = single_node
    java, *rest = java_scenario_command()
    output = run_program([java, "-Dcompat.producerDefaults=true", *rest,
                          *scenario_args(bootstrap, brokers, replication_factor, "java-producer-defaults")],
                         SCENARIO_TIMEOUT_S, "Java scenario with the producer's default settings")
    assert "checks held" in output, output
