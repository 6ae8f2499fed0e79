"""The README's run command: `karst server` with no arguments is a usable development broker."""

import subprocess
import time

import pytest

from karst import die_with_parent, port_accepts, port_is_free, wait_until

DEFAULT_KAFKA_PORT = 9092
DEFAULT_ADMIN_PORT = 9644


def test_karst_server_without_arguments_serves_kcat_on_port_9092(karst_bin, tmp_path):
    for port in (DEFAULT_KAFKA_PORT, DEFAULT_ADMIN_PORT):
        if not port_is_free(port):
            pytest.skip(f"127.0.0.1:{port} is already in use on this machine; "
                        f"cannot check the default listener")
    log_path = tmp_path / "karst.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(die_with_parent([str(karst_bin), "server"]), cwd=tmp_path,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not port_accepts(DEFAULT_KAFKA_PORT):
            assert process.poll() is None, f"karst server exited {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no listener on 9092 after 20s:\n{log_path.read_text()}"
            time.sleep(0.05)

        listing = subprocess.run(["kcat", "-b", f"127.0.0.1:{DEFAULT_KAFKA_PORT}", "-L"],
                                 capture_output=True, text=True, timeout=60)

        assert listing.returncode == 0, listing.stderr
        assert "1 brokers:" in listing.stdout, listing.stdout
        assert f"127.0.0.1:{DEFAULT_KAFKA_PORT}" in listing.stdout, listing.stdout
        assert (tmp_path / "karst-data").is_dir(), "the default data dir is ./karst-data"
    finally:
        process.kill()
        process.wait(timeout=10)
    wait_until(lambda: not port_accepts(DEFAULT_KAFKA_PORT), timeout_s=10, what="port 9092 released")
