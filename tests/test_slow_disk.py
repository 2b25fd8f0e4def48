"""A slow disk on one partition holds up nothing else: while every append
(or every fsync) of one partition of the active controller stalls for a
second (the test-only `--test-faults` setting), produce requests to its
other partitions stay fast, a metadata change commits at once, and the Raft
quorum keeps its leader (its ticks and heartbeats run on their own)."""

import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import registered, wait_for

STALL_MS = 1000
# More stalled producers than the broker has async workers, so that the
# appends would occupy every one if they ran on them.
STALLED_PRODUCERS = 16


def led_by(admin, topic, node_id):
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    return [p for p, meta in partitions.items() if meta.leader == node_id]


# Appends to a partition stall one after another (they hold its lock), so
# one message per producer keeps it stalled for 16 s; fsyncs (with
# flush.messages=1, each produce request waits for one) stall side by side,
# so each producer sends several in a row.
@pytest.mark.parametrize("fault, configs, messages", [
    ("stall-append", {}, 1),
    ("stall-fsync", {"flush.messages": "1"}, 8),
])
def test_a_stalled_partition_holds_up_nothing_else(cluster_factory, fault, configs, messages):
    faults = ",".join(f"{fault}:slow:{p}:{STALL_MS}" for p in range(3))
    # One async worker: an append that waited on it would hold up every
    # connection of the broker, and the Raft transport with them.
    cluster = cluster_factory(3, extra_args=["--test-faults", faults, "--worker-threads", "1"])
    registered(cluster, 3)
    controller = cluster.controller()
    node_id = controller.node_id
    admin = AdminClient({"bootstrap.servers": controller.bootstrap})
    for topic in ("slow", "fast"):
        new = NewTopic(topic, num_partitions=3, replication_factor=1,
                       config=configs if topic == "slow" else {})
        admin.create_topics([new])[topic].result(timeout=30)
    # Placement starts at a random broker, so the controller leads exactly
    # one partition of each three-partition topic.
    wait_for("the controller leads a partition of each topic",
             lambda: led_by(admin, "slow", node_id) and led_by(admin, "fast", node_id))
    slow = led_by(admin, "slow", node_id)[0]
    fast = led_by(admin, "fast", node_id)[0]
    term = controller.metrics()["keel_raft_term"]
    changes = controller.metrics()["keel_controller_changes_total"]

    def stall(i):
        producer = Producer({"bootstrap.servers": controller.bootstrap, "acks": 1,
                             "linger.ms": 0, "client.id": f"stalled-{i}"})
        for _ in range(messages):
            producer.produce("slow", value=b"x" * 100, partition=slow)
            producer.flush(120)

    stalled = [threading.Thread(target=stall, args=(i,)) for i in range(STALLED_PRODUCERS)]
    for thread in stalled:
        thread.start()
    time.sleep(1.5)  # every stalled producer has its request in

    fast_producer = Producer({"bootstrap.servers": controller.bootstrap, "acks": 1,
                              "linger.ms": 0})
    latencies = []
    for i in range(20):
        started = time.monotonic()
        fast_producer.produce("fast", value=b"y" * 100, partition=fast)
        assert fast_producer.flush(30) == 0
        latencies.append(time.monotonic() - started)
    started = time.monotonic()
    admin.create_topics([NewTopic("made-during-the-stall", num_partitions=1,
                                  replication_factor=1)])["made-during-the-stall"].result(timeout=30)
    metadata_change = time.monotonic() - started
    still_stalled = sum(thread.is_alive() for thread in stalled)

    for thread in stalled:
        thread.join(timeout=120)
    # A second's stall per append would show up in full; a slow machine's
    # scheduling noise would not come near.
    assert max(latencies) < 0.5, f"produce to another partition took up to {max(latencies):.3f} s"
    assert metadata_change < 1.0, f"a metadata change took {metadata_change:.3f} s"
    # The stall was real and lasted through the measurements.
    assert still_stalled > 0, "the stalled producers finished before the measurements"
    metrics = controller.metrics()
    assert metrics["keel_raft_term"] == term, "the quorum held an election during the stall"
    assert metrics["keel_controller_changes_total"] == changes
    assert metrics["keel_controller_is_active"] == 1
