"""What clients are told about a leader that has just died, before the
controller has decided anything: a broker following it saw its connection
break, and names no leader for its partitions (LEADER_NOT_AVAILABLE)
rather than the dead broker, so librdkafka keeps asking instead of waiting
for its next periodic scan. Partitions of live leaders are unaffected, and
once the controller decides, the new leader is named."""

import signal

from test_cluster import registered, wait_for
from test_replication import REPLICATION_ARGS, create, describe

from test_leader_failover import leaders, leaders_from, wait_failed_over

TOPIC = "seen-die"


def test_a_follower_names_no_leader_for_a_leader_it_saw_die(cluster_factory):
    # A long session, so that the presumption outlasts the test's look.
    cluster = cluster_factory(3, extra_args=[*REPLICATION_ARGS, "--broker-session-timeout-ms", "5000"])
    registered(cluster, 3)
    create(cluster, TOPIC, partitions=3)
    wait_for("every replica in every ISR", lambda: all(
        sorted(p.isrs) == [1, 2, 3] for p in describe(cluster, TOPIC).values()), timeout=30)
    led = leaders(cluster, TOPIC)
    controller = cluster.controller().node_id
    victim = next(b for b in (1, 2, 3) if b != controller)
    witness = next(b for b in (1, 2, 3) if b not in (controller, victim))

    # With the controller stopped nothing can be decided: the witness's
    # image goes on naming the victim leader of its partitions.
    cluster.brokers[controller].process.send_signal(signal.SIGSTOP)
    try:
        cluster.brokers[victim].kill()
        expected = {p: (-1 if b == victim else b) for p, b in led.items()}
        wait_for("the witness to name no leader for the dead broker's partitions",
                 lambda: leaders_from(cluster.brokers[witness], TOPIC) == expected, timeout=3)
    finally:
        cluster.brokers[controller].process.send_signal(signal.SIGCONT)

    wait_failed_over(cluster, TOPIC, victim, cluster.brokers[witness])
    moved = leaders_from(cluster.brokers[witness], TOPIC)
    assert all(moved[p] in (controller, witness) for p, b in led.items() if b == victim), moved
