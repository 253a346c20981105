"""Starts `lucia all` for the real-client tests.

The binary comes from $LUCIA_BIN (scripts/test.sh builds it); each test
module gets its own process, port and data directory.
"""
import os
import socket
import subprocess
import tempfile
import time

import pytest
import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lucia:
    def __init__(self, binary, data_dir, port, config=None):
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None
        self.config = config

    def start(self):
        args = [self.binary, "all", "--http.listen-address", f"127.0.0.1:{self.port}",
                "--data.dir", self.data_dir, "--log.level", "warn"]
        if self.config is not None:
            path = os.path.join(self.data_dir, "lucia.yaml")
            with open(path, "w") as f:
                f.write(self.config)
            args += ["--config.file", path]
        self.proc = subprocess.Popen(args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lucia exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("lucia did not become ready within 60s")

    def stop(self):
        """SIGTERM, and wait for a clean exit (the ingester flushes first)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=120) == 0

    def metric(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in requests.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


@pytest.fixture(scope="module")
def lucia():
    binary = os.environ.get("LUCIA_BIN")
    assert binary, "set LUCIA_BIN to the lucia binary (scripts/test.sh does)"
    with tempfile.TemporaryDirectory() as data_dir:
        server = Lucia(binary, data_dir, free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()
