"""The three-node cluster of docker-compose.yml, in containers built from
this checkout's binary (scripts/docker-image), driven from the host: a
leader's container killed and started again, then a leader's container cut
off from the network and connected again, under an idempotent acks=all
producer. Every acknowledged record is read back, once, at the offset it
was acknowledged with. Needs a Docker engine with docker-compose; without
one there is nothing to run these against."""

import os
import shutil
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import KEEL, REPO
from test_cluster import wait_for
from test_replication import Writer, read_back, verify_acknowledged


def docker_available():
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not docker_available(), reason="needs a Docker engine")

PROJECT = "keeltest"
NET = "172.28.0"
NODES = (1, 2, 3)
TOPIC = "compose"


def address(node, port):
    return f"{NET}.{10 + node}:{port}"


def compose(*args):
    return subprocess.run(["docker-compose", "-p", PROJECT, *args], cwd=REPO, check=True,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "KEEL_IMAGE": "keel:local", "KEEL_NET": NET})


def container(node):
    return f"{PROJECT}_keel{node}_1"


def metrics(node):
    with urllib.request.urlopen(f"http://{address(node, 9644)}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines() if line and not line.startswith("#")}


def registered(node):
    try:
        return metrics(node)["keel_registered_brokers"] == 3
    except OSError:
        return False


@pytest.fixture
def cluster():
    subprocess.run([str(REPO / "scripts" / "docker-image")], check=True, timeout=300,
                   env={**os.environ, "KEEL_BIN": str(KEEL), "KEEL_IMAGE": "keel:local"})
    compose("down", "-v")
    compose("up", "-d", "--no-build")
    try:
        wait_for("three brokers registered", lambda: all(registered(n) for n in NODES), timeout=60)
        yield
    finally:
        logs = compose("logs", "--no-color").stdout
        compose("down", "-v")
        print(logs[-5000:])


def bootstrap():
    return ",".join(address(n, 9092) for n in NODES)


def leaders(via):
    admin = AdminClient({"bootstrap.servers": address(via, 9092)})
    topic = admin.list_topics(topic=TOPIC, timeout=10).topics[TOPIC]
    return {p: m.leader for p, m in topic.partitions.items()}, {
        p: m.isrs for p, m in topic.partitions.items()}


def in_sync(node):
    via = next(n for n in NODES if n != node)
    return lambda: all(node in isr for isr in leaders(via)[1].values())


def moved_off(node):
    via = next(n for n in NODES if n != node)
    return lambda: all(leader not in (node, -1) for leader in leaders(via)[0].values())


def test_a_killed_and_a_disconnected_leader_container_lose_nothing(cluster):
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    admin.create_topics([NewTopic(TOPIC, 3, 3)])[TOPIC].result(timeout=30)
    wait_for("every replica in sync", lambda: all(
        len(isr) == 3 for isr in leaders(1)[1].values()), timeout=30)
    writer = Writer(bootstrap(), TOPIC).start()
    writer.wait_acked(1000)

    victim = leaders(1)[0][0]
    compose("kill", f"keel{victim}")
    wait_for(f"the partitions of killed broker {victim} fail over", moved_off(victim), timeout=30)
    writer.wait_acked(len(writer.acked) + 500)
    compose("start", f"keel{victim}")
    wait_for(f"broker {victim} is back in every ISR", in_sync(victim), timeout=90)

    victim = leaders(next(n for n in NODES if n != victim))[0][1]
    network = f"{PROJECT}_keel"
    subprocess.run(["docker", "network", "disconnect", network, container(victim)], check=True)
    wait_for(f"the partitions of cut-off broker {victim} fail over", moved_off(victim), timeout=30)
    writer.wait_acked(len(writer.acked) + 500)
    time.sleep(1)
    subprocess.run(["docker", "network", "connect", "--ip", f"{NET}.{10 + victim}", network,
                    container(victim)], check=True)
    wait_for(f"broker {victim} is back in every ISR", in_sync(victim), timeout=90)
    writer.wait_acked(len(writer.acked) + 500)
    writer.stop()

    verify_acknowledged(writer, read_back(bootstrap(), TOPIC, partitions=3))
    assert metrics(victim)["keel_lease_expiries_total"] >= 1
