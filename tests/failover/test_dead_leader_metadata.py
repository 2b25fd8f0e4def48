"""What clients are told about a leader that has just died, before the
controller has decided anything: a broker that saw its connections to it
break (its fetch connection to it, or the dead broker's Raft link to it)
names no leader for its partitions (LEADER_NOT_AVAILABLE) rather than the
dead broker, so librdkafka keeps asking instead of waiting for its next
periodic scan. Partitions of live leaders are unaffected, and once the
controller decides, the new leader is named.

Each test stops the controller first, so that nothing can be decided and
the witness's image goes on naming the dead broker leader."""

import signal

from test_cluster import registered, wait_for
from test_replication import REPLICATION_ARGS, create, describe

from test_leader_failover import leaders, leaders_from, wait_failed_over


def three_nodes(cluster_factory):
    # A long session, so that the presumption outlasts the test's look.
    cluster = cluster_factory(3, extra_args=[*REPLICATION_ARGS, "--broker-session-timeout-ms", "5000"])
    registered(cluster, 3)
    # A broker the controller never granted a lease holds new connections
    # unanswered (as a Kafka broker does until it is unfenced), so a
    # witness whose first lease was still to come when the controller is
    # stopped would answer nobody.
    wait_for("every broker to hold its lease", lambda: all(
        b.metrics().get("keel_lease_held") == 1 for b in cluster.brokers.values()))
    controller = cluster.controller().node_id
    victim = next(b for b in (1, 2, 3) if b != controller)
    witness = next(b for b in (1, 2, 3) if b not in (controller, victim))
    return cluster, controller, victim, witness


def named_by(broker, topic):
    """The leaders `broker` names for `topic`, asked by a fresh client."""
    return leaders_from(broker, topic, timeout=2)


def kill_while_nothing_is_decided(cluster, controller, victim, look):
    """SIGKILLs `victim` while the controller is stopped, runs `look`, and
    lets the controller go on."""
    cluster.brokers[controller].process.send_signal(signal.SIGSTOP)
    try:
        cluster.brokers[victim].kill()
        look()
    finally:
        cluster.brokers[controller].process.send_signal(signal.SIGCONT)


def test_a_follower_names_no_leader_for_a_leader_it_saw_die(cluster_factory):
    cluster, controller, victim, witness = three_nodes(cluster_factory)
    create(cluster, "seen-die", partitions=3)
    wait_for("every replica in every ISR", lambda: all(
        sorted(p.isrs) == [1, 2, 3] for p in describe(cluster, "seen-die").values()), timeout=30)
    led = leaders(cluster, "seen-die")
    expected = {p: (-1 if b == victim else b) for p, b in led.items()}

    kill_while_nothing_is_decided(cluster, controller, victim, lambda: wait_for(
        "the witness to name no leader for the dead broker's partitions",
        lambda: named_by(cluster.brokers[witness], "seen-die") == expected, timeout=3))

    wait_failed_over(cluster, "seen-die", victim, cluster.brokers[witness])
    moved = leaders_from(cluster.brokers[witness], "seen-die")
    assert all(moved[p] in (controller, witness) for p, b in led.items() if b == victim), moved


def test_a_broker_that_follows_nothing_of_a_dead_leader_learns_of_it_from_its_raft_link(
        cluster_factory):
    """The witness is no replica of the victim's partition, so no fetch
    connection of its own breaks: the victim's Raft link to it does."""
    cluster, controller, victim, witness = three_nodes(cluster_factory)
    create(cluster, "unfollowed", replicas=(victim, controller))
    assert leaders(cluster, "unfollowed") == {0: victim}

    kill_while_nothing_is_decided(cluster, controller, victim, lambda: wait_for(
        "the witness to name no leader for the dead broker's partition",
        lambda: named_by(cluster.brokers[witness], "unfollowed") == {0: -1}, timeout=3))
