"""Fixtures that run real keel processes for the integration tests.

Every test gets brokers on free loopback ports with their own data
directories; `Broker.kill()` sends a real SIGKILL and `restart()` starts a
new process on the same directory, so recovery is exercised for real. A
cluster can also run on hosts of its own (`scripts/netns-hosts`), one
network namespace per broker, so that a test can cut one off.
"""

import itertools
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from group_support import Member

REPO = Path(__file__).resolve().parent.parent
KEEL = Path(os.environ.get("KEEL_BIN", REPO / "target" / "debug" / "keel"))
READY_LINE = "keel is ready"


def _ports_below_the_ephemeral_range():
    """Ports the kernel never hands out as the local port of an outgoing
    connection, so that a port chosen here is still free when keel binds
    it; each is handed out once per test run."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10000 + (os.getpid() % 50) * 100
    return itertools.cycle(range(first, max(low, first + 1000)))


_PORTS = _ports_below_the_ephemeral_range()


def free_port() -> int:
    for port in itertools.islice(_PORTS, 25000):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Broker:
    """One keel process and its data directory."""

    def __init__(self, data_dir: Path, extra_args=(), node_id=1, cluster_port=None,
                 host="127.0.0.1", namespace=None):
        self.data_dir = data_dir
        self.node_id = node_id
        self.host = host
        self.namespace = namespace
        self.port = free_port()
        self.cluster_port = cluster_port or free_port()
        self.metrics_port = free_port()
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.starts = 0
        # (soft, hard) limit on open files for the process, as `ulimit -n`
        # sets it; None keeps the test runner's.
        self.open_files = None
        STARTED.append(self)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    def command(self):
        # `ip netns exec` execs keel itself: signals reach keel.
        in_namespace = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        return [
            *in_namespace,
            str(KEEL),
            "--node-id", str(self.node_id),
            "--listen", self.bootstrap,
            "--cluster-listen", f"{self.host}:{self.cluster_port}",
            "--metrics-listen", f"{self.host}:{self.metrics_port}",
            "--data-dir", str(self.data_dir),
            "--log-level", "info",
            *self.extra_args,
        ]

    def start(self, timeout=30.0):
        self.start_async()
        return self.wait_ready(timeout)

    def start_async(self):
        assert KEEL.exists(), f"{KEEL} is missing: run `cargo build` first"
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                        preexec_fn=self._limit_open_files)

    def _limit_open_files(self):
        if self.open_files:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def wait_ready(self, timeout=30.0):
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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> dict:
        """The node's Prometheus gauges and counters by name."""
        import urllib.request

        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


class Cluster:
    """N keel processes sharing one Raft quorum (the first `voters` nodes),
    with node ids from `first_id` on. `hosts` maps a node to the (address,
    network namespace) it runs in; without it every node runs on loopback."""

    def __init__(self, root: Path, size: int, voters=3, extra_args=(), node_args=None,
                 hosts=None, first_id=1):
        ids = list(range(first_id, first_id + size))
        ports = {i: free_port() for i in ids}
        hosts = hosts or {i: ("127.0.0.1", None) for i in ids}
        voter_list = ",".join(f"{i}@{hosts[i][0]}:{ports[i]}" for i in ids[:voters])
        node_args = node_args or {}
        self.brokers = {
            i: Broker(root / f"node-{i}",
                      ["--voters", voter_list, *extra_args, *node_args.get(i, ())],
                      node_id=i, cluster_port=ports[i], host=hosts[i][0], namespace=hosts[i][1])
            for i in ids
        }

    def start(self):
        for broker in self.brokers.values():
            broker.start_async()
        for broker in self.brokers.values():
            broker.wait_ready()
        return self

    @property
    def bootstrap(self) -> str:
        return next(b.bootstrap for b in self.brokers.values() if b.running)

    def controller(self, timeout=15.0):
        """The node whose metrics say it is the active controller."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for broker in self.brokers.values():
                if broker.running:
                    try:
                        if broker.metrics().get("keel_controller_is_active") == 1:
                            return broker
                    except OSError:
                        pass
            time.sleep(0.05)
        raise TimeoutError("no controller")

    def close(self):
        for broker in self.brokers.values():
            broker.close()


# The brokers of the test running now, whose logs a failure report shows.
STARTED = []


@pytest.fixture(autouse=True)
def _brokers_of_this_test():
    STARTED.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the tail of every keel log it
    started and of every client process's stderr: on CI that is all there
    is to go by."""
    report = (yield).get_result()
    if report.when != "call" or not report.failed:
        return
    for broker in STARTED:
        report.sections.append((f"keel {broker.log_path.name}", broker.log()[-8000:]))
    tmp_path = item.funcargs.get("tmp_path")
    if tmp_path is not None:
        for stderr in sorted(Path(tmp_path).glob("*.stderr")):
            report.sections.append((stderr.name, stderr.read_text(errors="replace")[-4000:]))


@pytest.fixture
def broker_factory(tmp_path):
    brokers = []

    def make(extra_args=(), name="broker", node_id=1):
        broker = Broker(tmp_path / name, extra_args, node_id=node_id)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(broker_factory):
    return broker_factory(["--num-partitions", "4"])


@pytest.fixture
def cluster_factory(tmp_path):
    clusters = []

    def make(size=3, extra_args=(), voters=3, node_args=None, hosts=None, first_id=1):
        cluster = Cluster(tmp_path, size, voters=voters, extra_args=extra_args,
                          node_args=node_args, hosts=hosts, first_id=first_id)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def members(tmp_path):
    """Starts consumer group member processes; kills what is left at the end."""
    started = []

    def start(client, bootstrap, group, topic, **options):
        member = Member(tmp_path, client, bootstrap, group, topic, **options)
        started.append(member)
        return member

    yield start
    for member in started:
        member.close()
