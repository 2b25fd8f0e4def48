"""Fixtures that run real keel processes for the integration tests.

Every test gets brokers on free loopback ports with their own data
directories; `Broker.kill()` sends a real SIGKILL and `restart()` starts a
new process on the same directory, so recovery is exercised for real.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KEEL = Path(os.environ.get("KEEL_BIN", REPO / "target" / "debug" / "keel"))
READY_LINE = "keel is ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One keel process and its data directory."""

    def __init__(self, data_dir: Path, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.cluster_port = free_port()
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self):
        return [
            str(KEEL),
            "--node-id", "1",
            "--listen", self.bootstrap,
            "--cluster-listen", f"127.0.0.1:{self.cluster_port}",
            "--data-dir", str(self.data_dir),
            "--log-level", "info",
            *self.extra_args,
        ]

    def start(self, timeout=30.0):
        assert KEEL.exists(), f"{KEEL} is missing: run `cargo build` first"
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keel exited with {self.process.returncode}:\n{self.log()}")
            if self.log().split(f"--- start {self.starts}\n")[-1].count(READY_LINE):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"keel did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def kill(self, sig=signal.SIGKILL):
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def stop(self, timeout=15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def restart(self):
        if self.process and self.process.poll() is None:
            self.kill()
        return self.start()

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def broker_factory(tmp_path):
    brokers = []

    def make(extra_args=(), name="broker"):
        broker = Broker(tmp_path / name, extra_args)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(broker_factory):
    return broker_factory(["--num-partitions", "4"])
