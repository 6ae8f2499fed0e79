"""Fixtures shared by the end-to-end suite.

* `karst_bin`: the broker binary, `$KARST_BIN` or `target/release/karst` (scripts/test builds it).
* `brokers`: a `BrokerPool` for one test; every broker started through it is SIGKILLed when
  the test ends, pass or fail; a failing test's report ends with the brokers' log tails.
* `module_brokers`: the same for a whole module (tests that share one long-lived broker).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from karst import BrokerPool  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def karst_bin() -> Path:
    binary = Path(os.environ.get("KARST_BIN", REPO_ROOT / "target" / "release" / "karst"))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"karst binary not found at {binary}: run `cargo build --release` "
                    f"or set KARST_BIN (scripts/test does both)", pytrace=False)
    return binary


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failing test's report ends with the log tails of the brokers it used.
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for name in ("brokers", "module_brokers"):
            pool = getattr(item, "funcargs", {}).get(name)
            if isinstance(pool, BrokerPool) and pool.brokers:
                report.sections.append((f"karst broker logs ({name})", pool.log_tails()))


@pytest.fixture
def brokers(request, karst_bin, tmp_path):
    pool = BrokerPool(karst_bin, tmp_path)
    request.addfinalizer(pool.close_all)
    return pool


@pytest.fixture(scope="module")
def module_brokers(request, karst_bin, tmp_path_factory):
    pool = BrokerPool(karst_bin, tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    request.addfinalizer(pool.close_all)
    return pool
