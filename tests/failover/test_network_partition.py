"""A leader cut off from the other brokers by a real network partition,
while producers still reach it: three keel processes on hosts of their own
(network namespaces, `scripts/netns-hosts`), and every packet between the
leader and the other two dropped, its connections to them left hanging.

The cut-off leader cannot reach the controller to renew its lease. Once
the lease lapses it refuses every write, acks=1 included, and only after
that can the controller, a session later, fence it and elect a successor.
So the acks=1 writes it acknowledged while cut off are lost when it heals
and truncates to its successor's log (as Kafka allows for acks=1), but
none of them was acknowledged after the successor's first write; and no
acks=all write is lost at all."""

import json
import os
import subprocess
import time
import urllib.request

import pytest

from conftest import REPO
from test_cluster import registered, wait_for
from test_leader_failover import check_history, leaders_from, unavailability
from test_replication import (
    REPLICATION_ARGS, Writer, create, describe, epoch_start_offset, lost_writes, read_back,
    verify_acknowledged, when_successor_took_writes)

NETNS_HOSTS = REPO / "scripts" / "netns-hosts"
TOPIC = "partitioned"


def failover_epoch(broker, victim):
    """The leader epoch of the leader elected when `victim` was cut off, as
    the leadership history recorded it."""
    with urllib.request.urlopen(f"{broker.metrics_url}/v1/leadership-history?topic={TOPIC}",
                                timeout=10) as response:
        changes = json.load(response)["changes"]
    return next(c["leader_epoch"] for c in changes
                if c["reason"] == "broker_failure" and c["previous_leader"] == victim)


@pytest.fixture
def hosts():
    """Three hosts of their own; `hosts(command, *args)` runs
    scripts/netns-hosts on them. Where namespaces cannot be made (not
    root), the test is skipped, unless KEEL_REQUIRE_NETNS is set, as CI
    sets it."""
    env = {**os.environ, "KEEL_NETNS_NET": str(100 + os.getpid() % 100)}

    def run(*args):
        return subprocess.run([str(NETNS_HOSTS), *map(str, args)], env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    if subprocess.run([str(NETNS_HOSTS), "check"], env=env).returncode != 0:
        if os.environ.get("KEEL_REQUIRE_NETNS"):
            pytest.fail("scripts/netns-hosts cannot make network namespaces here")
        pytest.skip("network namespaces need root, iproute2 and iptables")
    run("up", 3)
    yield run
    run("down")


def test_a_leader_cut_off_from_its_peers_acknowledges_nothing_after_its_successor_starts(
        cluster_factory, hosts):
    cluster = cluster_factory(3, extra_args=REPLICATION_ARGS, hosts={
        node: (hosts("address", node), hosts("namespace", node)) for node in (1, 2, 3)})
    registered(cluster, 3)
    # A leader that is not the controller: the controller's own partition
    # would take the quorum's leadership with it.
    controller = cluster.controller().node_id
    victim = next(node for node in (3, 2, 1) if node != controller)
    survivor = cluster.brokers[controller]
    create(cluster, TOPIC, replicas=(victim, *(n for n in (1, 2, 3) if n != victim)))
    assert describe(cluster, TOPIC)[0].leader == victim
    old_leader = cluster.brokers[victim]

    everyone = ",".join(b.bootstrap for b in cluster.brokers.values())
    durable = Writer(everyone, TOPIC).start()
    # Without idempotence or retries, every acknowledgement is one append
    # by whoever answered; this one knows only the leader to start with.
    quick = Writer(old_leader.bootstrap, TOPIC, acks="1", linger_ms=0, first_key=10_000_000,
                   request_timeout_ms=15000).start()
    durable.wait_acked(500)
    quick.wait_acked(500)

    cut_at = time.monotonic()
    hosts("cut", victim)
    wait_for(f"broker {victim}'s partition has a new leader", lambda: (
        leaders_from(survivor, TOPIC)[0] not in (victim, -1)), timeout=30)
    elected_at = time.monotonic()
    successor = leaders_from(survivor, TOPIC)[0]
    durable.wait_acked(len(durable.acked) + 500)
    time.sleep(1)
    hosts("heal", victim)

    wait_for(f"broker {victim} is back in the ISR", lambda: (
        victim in describe(cluster, TOPIC)[0].isrs), timeout=60)
    durable.wait_acked(len(durable.acked) + 500)
    quick.wait_acked(len(quick.acked) + 500)
    durable.stop()
    quick.stop()

    seen = read_back(survivor.bootstrap, TOPIC)
    verify_acknowledged(durable, seen)
    # Records read back from the successor's first offset on were written
    # by the successor: the first of them acknowledged marks when it took
    # writes (the old leader's answers after the cut may still have been
    # for records it had made durable before).
    first_offset = epoch_start_offset(survivor.bootstrap, TOPIC, failover_epoch(survivor, victim))
    successor_first_ack = when_successor_took_writes((durable, quick), seen, first_offset)
    lost, split_brain = lost_writes(quick, seen, successor_first_ack)
    acked_while_cut = [k for k in lost if cut_at < quick.acked_at[k] < successor_first_ack]
    last_lost_ack = max((quick.acked_at[k] for k in lost), default=cut_at)
    print(f"\ncut off leader {victim}: new leader {successor} after {elected_at - cut_at:.2f} s; "
          f"acks=all writes unavailable for {unavailability(durable, [0], cut_at):.2f} s; "
          f"its first write acknowledged {successor_first_ack - cut_at:.2f} s after the cut; "
          f"acks=1: {len(lost)} lost, {len(acked_while_cut)} of them acknowledged by the cut-off "
          f"leader after the cut, the last {last_lost_ack - cut_at:.3f} s after it; lease expiries "
          f"{old_leader.metrics()['keel_lease_expiries_total']:.0f}")
    assert acked_while_cut, "the cut-off leader acknowledged nothing after the cut: no window tested"
    assert not split_brain, (
        f"{len(split_brain)} acks=1 writes acknowledged by the cut-off leader after its "
        f"successor's first and lost: (key, seconds after) {split_brain[:10]}")
    # What the old leader acknowledged well before the cut had reached its
    # followers.
    assert all(k in seen for k in quick.acked if quick.acked_at[k] < cut_at - 1.0)
    # An acks=all write the cut-off leader held is answered a session after
    # its lease lapsed, not at the request's timeout (5 s), and the client
    # is sent to another broker for metadata rather than told again that
    # the old leader leads.
    assert unavailability(durable, [0], cut_at) < 4.0
    assert old_leader.metrics()["keel_lease_expiries_total"] >= 1
    assert old_leader.metrics()["keel_deposed_hang_ups_total"] >= 1
    check_history(survivor, TOPIC, victim, victim_heartbeated_elsewhere=True)
