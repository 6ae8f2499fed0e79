#!/usr/bin/env python3
"""Prints the Markdown table of docs/COMPATIBILITY.md that sets the Kafka APIs and versions
Karst serves beside those of Apache Kafka: both inputs are the output of Kafka's
kafka-broker-api-versions tool (`scripts/kafka-peer tool
org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server ...`), one run against
Apache Kafka and one against Karst.

    tests/compat/api_versions_table.py KAFKA_OUTPUT KARST_OUTPUT
"""

import re
import sys

LINE = re.compile(r"^\s*(\w+)\((\d+)\): (.*?)(?: \[usable: \d+\])?,?$")


def parse(path: str) -> dict:
    apis = {}
    with open(path) as lines:
        for line in lines:
            match = LINE.match(line.rstrip())
            if match:
                name, key, versions = match.groups()
                apis[int(key)] = (name, "—" if versions == "UNSUPPORTED" else versions.replace(" to ", "–"))
    return apis


def main() -> None:
    kafka, karst = parse(sys.argv[1]), parse(sys.argv[2])
    print("| key | API | Apache Kafka 4.4.0 | Karst |")
    print("| ---: | --- | --- | --- |")
    for key in sorted(set(kafka) | set(karst)):
        name = (kafka.get(key) or karst.get(key))[0]
        print(f"| {key} | {name} | {kafka.get(key, (name, '—'))[1]} | {karst.get(key, (name, '—'))[1]} |")


if __name__ == "__main__":
    main()
