"""Helpers for the compatibility tests (issue 11): Kafka's own tools, the client scenarios
of `tests/compat/` (Java kafka-clients, franz-go and Sarama, kafkajs, confluent-kafka) and the
applications users write (Kafka Streams, Spring Kafka), run against `karst`.

Each toolchain gets its pinned dependencies from the files in `tests/compat/` into the user's
caches (~/.m2, the Go module cache, `tests/compat/js/node_modules`); `scripts/test` fetches
them before the suite, so the tests here only find them. Every program runs bounded in time,
and a failure carries the program's whole output.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPAT_DIR = REPO_ROOT / "tests" / "compat"
KAFKA_PEER = REPO_ROOT / "scripts" / "kafka-peer"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "karst"

# Dependency resolution and builds (Maven, go build, npm ci) from warm caches take seconds;
# from cold ones, a minute or two on two cores.
PREPARE_TIMEOUT_S = 600
# One scenario program against a running broker.
SCENARIO_TIMEOUT_S = 240
# One of Kafka's command-line tools (a JVM start plus a request or two).
TOOL_TIMEOUT_S = 90


class ProgramFailed(AssertionError):
    pass


def run_program(command: list, timeout_s: float, what: str, input_text: Optional[str] = None,
                cwd: Optional[Path] = None, env: Optional[dict] = None) -> str:
    """Runs `command` to completion within `timeout_s`; returns its stdout. A non-zero exit
    or a timeout fails with the command line and everything it printed."""
    started = time.monotonic()
    try:
        result = subprocess.run([str(part) for part in command], input=input_text, capture_output=True,
                                text=True, timeout=timeout_s, cwd=cwd, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as expired:
        raise ProgramFailed(f"{what} did not finish within {timeout_s}s\n$ {' '.join(map(str, command))}\n"
                            f"--- stdout ---\n{_text(expired.stdout)}\n--- stderr ---\n{_text(expired.stderr)}") from None
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise ProgramFailed(f"{what} exited {result.returncode} after {elapsed:.1f}s\n$ {' '.join(map(str, command))}\n"
                            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-20000:]}")
    return result.stdout


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ProgramFailed(f"{name} is not installed: the compatibility tests need Java 17+ with Maven, "
                            f"Go and Node.js (the polyglot machine has them)")
    return path


# -- Kafka's tools ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def kafka_classpath() -> str:
    """Resolves Apache Kafka's broker and tools jars (tests/compat/kafka/pom.xml)."""
    require_tool("java")
    require_tool("mvn")
    return run_program([KAFKA_PEER, "classpath"], PREPARE_TIMEOUT_S, "scripts/kafka-peer classpath").strip()


def kafka_tool(main_class: str, *args, input_text: Optional[str] = None, timeout_s: float = TOOL_TIMEOUT_S) -> str:
    """Runs one of Kafka's command-line tools by main class (what its kafka-*.sh runs)."""
    kafka_classpath()
    short_name = main_class.rsplit(".", 1)[-1]
    return run_program([KAFKA_PEER, "tool", main_class, *args], timeout_s, f"Kafka tool {short_name}",
                       input_text=input_text)


# -- the client scenarios ---------------------------------------------------------------------


def _maven_classpath(pom: Path, name: str) -> str:
    """`mvn dependency:build-classpath` of `pom`, cached in a file named by the pom's hash and
    redone when a jar is gone from ~/.m2."""
    require_tool("mvn")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cache_file = CACHE_DIR / f"{name}-{digest}.classpath"
    if cache_file.is_file():
        classpath = cache_file.read_text().strip()
        if classpath and all(Path(jar).is_file() for jar in classpath.split(":")):
            return classpath
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    resolved = cache_file.with_suffix(".partial")
    run_program(["mvn", "-q", "-B", "-f", pom, "dependency:build-classpath", f"-Dmdep.outputFile={resolved}"],
                PREPARE_TIMEOUT_S, f"Maven classpath of {pom.relative_to(REPO_ROOT)}")
    resolved.replace(cache_file)
    return cache_file.read_text().strip()


@functools.lru_cache(maxsize=None)
def java_scenario_command() -> list:
    """The Java kafka-clients scenario, run by the JDK's source launcher (no Maven build)."""
    java = require_tool("java")
    classpath = _maven_classpath(COMPAT_DIR / "java" / "pom.xml", "java-scenario")
    source = COMPAT_DIR / "java" / "src" / "main" / "java" / "dev" / "karst" / "compat" / "Scenario.java"
    return [java, "-Xmx512m", "-cp", classpath, source]


@functools.lru_cache(maxsize=None)
def go_scenario_command() -> list:
    """The franz-go + Sarama scenario binary, built from tests/compat/go (go.sum pinned)."""
    go = require_tool("go")
    binary = CACHE_DIR / "compat-go" / "compat"
    binary.parent.mkdir(parents=True, exist_ok=True)
    # -mod=readonly: go.mod and go.sum are the pins; a build never rewrites them.
    run_program([go, "build", "-mod=readonly", "-o", binary, "."], PREPARE_TIMEOUT_S, "go build tests/compat/go",
                cwd=COMPAT_DIR / "go")
    return [binary]


@functools.lru_cache(maxsize=None)
def js_scenario_command() -> list:
    """The kafkajs scenario; `npm ci` from package-lock.json when node_modules is missing or
    older than the lock file."""
    node = require_tool("node")
    js_dir = COMPAT_DIR / "js"
    installed = js_dir / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < (js_dir / "package-lock.json").stat().st_mtime:
        require_tool("npm")
        run_program(["npm", "ci", "--no-audit", "--no-fund"], PREPARE_TIMEOUT_S, "npm ci in tests/compat/js", cwd=js_dir)
    return [node, js_dir / "scenario.js"]


def python_scenario_command() -> list:
    """The confluent-kafka scenario, run by this suite's own interpreter (the .venv that
    tests/python/requirements.txt pins)."""
    import sys

    return [sys.executable, COMPAT_DIR / "python" / "scenario.py"]


# -- the applications users write (Kafka Streams, Spring Kafka) ------------------------------


def _java_module_command(module: str, main_class: str) -> list:
    """Compiles a Maven module of tests/compat/ with javac (no Maven build: Maven only resolves
    its pinned classpath) into the cache, keyed by the hash of its pom and sources, and returns
    the `java` command line that runs `main_class`."""
    java = require_tool("java")
    javac = require_tool("javac")
    module_dir = COMPAT_DIR / module
    classpath = _maven_classpath(module_dir / "pom.xml", module)
    sources = sorted((module_dir / "src" / "main" / "java").rglob("*.java"))
    resources = sorted(path for path in (module_dir / "src" / "main" / "resources").rglob("*") if path.is_file())
    digest = hashlib.sha256()
    for path in [module_dir / "pom.xml", *sources, *resources]:
        digest.update(str(path.relative_to(module_dir)).encode() + b"\0" + path.read_bytes())
    classes = CACHE_DIR / f"{module}-{digest.hexdigest()[:16]}" / "classes"
    if not (classes.parent / "compiled").is_file():
        shutil.rmtree(classes.parent, ignore_errors=True)
        classes.mkdir(parents=True)
        run_program([javac, "--release", "17", "-encoding", "UTF-8", "-d", classes, "-cp", classpath, *sources],
                    PREPARE_TIMEOUT_S, f"javac tests/compat/{module}")
        for resource in resources:
            target = classes / resource.relative_to(module_dir / "src" / "main" / "resources")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resource, target)
        (classes.parent / "compiled").touch()
    return [java, "-Xmx512m", "-cp", f"{classes}:{classpath}", main_class]


@functools.lru_cache(maxsize=None)
def streams_app_command() -> list:
    """The Kafka Streams word-count application (tests/compat/streams)."""
    return _java_module_command("streams", "dev.karst.compat.streams.WordCount")


@functools.lru_cache(maxsize=None)
def spring_app_command() -> list:
    """The Spring Boot @KafkaListener application (tests/compat/spring)."""
    return _java_module_command("spring", "dev.karst.compat.spring.ListenerApplication")


def scenario_args(bootstrap: str, brokers: int, replication_factor: int, topic_prefix: str) -> list:
    return ["--bootstrap", bootstrap, "--brokers", str(brokers), "--replication-factor", str(replication_factor),
            "--topic-prefix", topic_prefix]


# -- prefetch (scripts/test) ------------------------------------------------------------------


def prefetch() -> None:
    """Fetches every pinned dependency into the user's caches and builds what the tests run,
    printing the time each part takes: `python3 tests/python/compat.py prefetch`."""
    parts = [
        ("Maven: Apache Kafka broker + tools (tests/compat/kafka/pom.xml)", kafka_classpath),
        ("Maven: Java scenario (tests/compat/java/pom.xml)", java_scenario_command),
        ("Go: go mod download (tests/compat/go/go.sum)",
         lambda: run_program([require_tool("go"), "mod", "download"], PREPARE_TIMEOUT_S, "go mod download",
                             cwd=COMPAT_DIR / "go")),
        ("Go: build the franz-go + Sarama scenario", go_scenario_command),
        ("npm ci (tests/compat/js/package-lock.json)", js_scenario_command),
        ("Maven + javac: Kafka Streams app (tests/compat/streams/pom.xml)", streams_app_command),
        ("Maven + javac: Spring Kafka app (tests/compat/spring/pom.xml)", spring_app_command),
    ]
    for name, part in parts:
        started = time.monotonic()
        part()
        print(f"  {name:<66} {time.monotonic() - started:6.1f}s", flush=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["prefetch"]:
        sys.exit("usage: compat.py prefetch")
    prefetch()
