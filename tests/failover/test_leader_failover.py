"""Automatic failover on three real keel processes, RF=3, min ISR 2: a
leader killed, a leader paused past its session and resumed, the
controller killed while it leads. An idempotent acks=all producer writes
unique values throughout; each test ends with a Jepsen-style check (every
acknowledged value read back once, at the offset it was acknowledged with,
in order per partition) and prints the unavailability the client saw: from
the last acknowledgement before the fault to the first after it, on the
partitions the failed broker led."""

import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import ConsumerGroupState, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import KEEL
from test_cluster import registered, wait_for
from test_replication import (
    REPLICATION_ARGS, Writer, create, describe, read_back, start, verify_acknowledged)

TOPIC_PARTITIONS = 3


def leaders(cluster, topic):
    return {p: m.leader for p, m in describe(cluster, topic).items()}


def unavailability(writer, partitions, fault_at):
    """The longest time without an acknowledgement on `partitions` from
    just before `fault_at` on: from the last acknowledgement before the
    fault to the first one after the partition failed over."""
    gaps = []
    for partition in partitions:
        times = sorted(writer.acked_at[k] for k, (p, _) in writer.acked.items()
                       if p == partition and writer.acked_at[k] > fault_at - 1.0)
        gaps.extend(b - a for a, b in zip(times, times[1:]))
    return max(gaps) if gaps else None


def wait_failed_over(cluster, topic, victim, survivor):
    def moved():
        view = leaders_from(survivor, topic)
        return all(leader not in (victim, -1) for leader in view.values())
    wait_for(f"every partition broker {victim} led has a new leader", moved, timeout=30)


def leaders_from(broker, topic, timeout=10):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    return {p: m.leader for p, m in admin.list_topics(topic=topic, timeout=timeout).topics[topic].partitions.items()}


def setup(cluster_factory, topic):
    cluster = start(cluster_factory)
    create(cluster, topic, partitions=TOPIC_PARTITIONS)
    led = leaders(cluster, topic)
    assert sorted(led.values()) == [1, 2, 3], led
    return cluster, led


def finish(cluster, topic, writers, label, partitions, fault_at):
    """Stops the writers, checks every acknowledged value and prints the
    unavailability the first writer saw on `partitions`."""
    for writer in writers:
        writer.stop()
    gap = unavailability(writers[0], partitions, fault_at)
    seen = read_back(cluster.bootstrap, topic, partitions=TOPIC_PARTITIONS)
    for writer in writers:
        verify_acknowledged(writer, seen)
    print(f"\n{label}: client-observed unavailability {gap:.2f} s, "
          f"{sum(len(w.acked) for w in writers)} acknowledged records all read back")


def check_history(broker, topic, victim, victim_heartbeated_elsewhere):
    """`keel history` and the metrics show the failover: a broker_failure
    change away from the victim for each partition it led, with how long it
    took to commit and, if the victim heartbeated to another controller,
    the log end offset and high watermark it last reported (it had
    acknowledged writes on each)."""
    server = ["--server", f"{broker.host}:{broker.metrics_port}", "--topic", topic]
    listed = subprocess.run([str(KEEL), "history", *server, "--json"],
                            capture_output=True, text=True, timeout=30, check=True)
    changes = json.loads(listed.stdout)["changes"]
    failovers = [c for c in changes
                 if c["reason"] == "broker_failure" and c["previous_leader"] == victim]
    assert failovers, changes
    assert all(c["new_leader"] not in (victim, -1) for c in failovers), failovers
    assert all(c["commit_latency_ms"] is not None and 0 <= c["commit_latency_ms"] < 5000
               for c in failovers), failovers
    if victim_heartbeated_elsewhere:
        assert all(c["log_end_offset"] >= c["high_watermark"] > 0 for c in failovers), failovers
    table = subprocess.run([str(KEEL), "history", *server, "--since", "10m"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"{victim}->" in table and "broker_failure" in table, table
    assert broker.metrics()['keel_leader_transitions_total{reason="broker_failure"}'] >= 1


def fences(cluster):
    """Brokers fenced by the running controllers, by cause."""
    counts = {"process_gone": 0, "session_timeout": 0}
    for broker in cluster.brokers.values():
        if broker.running:
            metrics = broker.metrics()
            for cause in counts:
                counts[cause] += metrics[f'keel_controller_fenced_brokers_total{{cause="{cause}"}}']
    return counts


def pick(cluster, role):
    """The broker to fail, by role: the active controller (which leads a
    partition too), or a leader that is not the controller; and a broker
    that survives."""
    controller = cluster.controller().node_id
    if role == "controller":
        victim = controller
        survivor = next(b for b in (1, 2, 3) if b != controller)
    else:
        victim = next(b for b in (1, 2, 3) if b != controller)
        survivor = controller
    return victim, cluster.brokers[survivor]


@pytest.mark.proves(
    "confluent-kafka: leader failover without loss",
)
@pytest.mark.parametrize("role", ["leader", "controller"])
def test_sigkill_of_a_leader_fails_over_and_loses_nothing(cluster_factory, role):
    cluster, led = setup(cluster_factory, "kill-leader")
    victim, survivor = pick(cluster, role)
    writer = Writer(cluster.bootstrap, "kill-leader").start()
    writer.wait_acked(1000)

    term_before = survivor.metrics()["keel_raft_term"]
    fault_at = time.monotonic()
    cluster.brokers[victim].kill()
    wait_failed_over(cluster, "kill-leader", victim, survivor)
    writer.wait_acked(len(writer.acked) + 1000)
    assert cluster.controller().node_id != victim
    causes = fences(cluster)
    assert sum(causes.values()) == 1, causes
    if role == "controller":
        # A new controller knows nothing of the heartbeats its predecessor
        # saw: its probe of every broker finds the dead one at once,
        # rather than after a session. (The probe the controller makes
        # when a heartbeat connection closes is best effort: a process
        # being torn down may still take connections for a while.)
        assert causes["process_gone"] == 1, causes
    check_history(survivor, "kill-leader", victim, victim_heartbeated_elsewhere=role == "leader")
    # Leases lapse for a moment while the controller fails over; that
    # sends no client away (only a lapse of a whole session does). Unless
    # the election took more than one round: two candidates that started
    # within a millisecond of each other split the vote, the next round
    # comes an election timeout later, and the lapse outlasts a session.
    elections = survivor.metrics()["keel_raft_term"] - term_before
    hang_ups = {n: b.metrics()["keel_deposed_hang_ups_total"]
                for n, b in cluster.brokers.items() if b.running}
    if elections <= 1:
        assert not any(hang_ups.values()), hang_ups
    else:
        print(f"the controller election took {elections:.0f} rounds; hang-ups {hang_ups}")

    cluster.brokers[victim].restart()
    wait_for("the restarted broker is back in every ISR", lambda: all(
        victim in p.isrs for p in describe(cluster, "kill-leader").values()), timeout=60)
    writer.wait_acked(len(writer.acked) + 500)
    finish(cluster, "kill-leader", [writer], f"{role} SIGKILL",
           [p for p, b in led.items() if b == victim], fault_at)


def test_a_killed_leader_is_replaced_at_once_and_its_lease_waited_out(cluster_factory):
    """With a 5 s session (lease 4.8 s): a leader SIGKILLed is replaced
    long before its session would lapse (the controller sees its heartbeat
    connection close and its listener refuse), but its successor takes no
    write before the lease the dead leader last got has run out, so even a
    broker wrongly taken for dead could not acknowledge a write beside it."""
    cluster = cluster_factory(3, extra_args=[*REPLICATION_ARGS, "--broker-session-timeout-ms", "5000"])
    registered(cluster, 3)
    create(cluster, "gone", partitions=TOPIC_PARTITIONS)
    led = leaders(cluster, "gone")
    victim, survivor = pick(cluster, "leader")
    writer = Writer(cluster.bootstrap, "gone", request_timeout_ms=10000).start()
    writer.wait_acked(500)

    killed_at = time.monotonic()
    cluster.brokers[victim].kill()
    wait_failed_over(cluster, "gone", victim, survivor)
    elected_after = time.monotonic() - killed_at
    writer.wait_acked(len(writer.acked) + 500)
    writer.stop()
    victim_partitions = [p for p, b in led.items() if b == victim]
    resumed = min(at for k, at in writer.acked_at.items()
                  if writer.acked[k][0] in victim_partitions and at > killed_at + 0.2)
    print(f"\nnew leader elected {elected_after:.2f} s after the kill; "
          f"writes resumed after {resumed - killed_at:.2f} s")
    assert elected_after < 2.5, "the election waited for the session to lapse"
    assert resumed - killed_at > 4.3, "the successor took writes within the old leader's lease"
    seen = read_back(cluster.bootstrap, "gone", partitions=TOPIC_PARTITIONS)
    verify_acknowledged(writer, seen)


@pytest.mark.parametrize("role", ["leader", "controller"])
def test_a_paused_leader_is_deposed_and_acknowledges_nothing_after_it_resumes(cluster_factory, role):
    """SIGSTOP a leader (one that is also the controller, or not) past its
    session: a successor is elected. On SIGCONT the old leader finds
    produce requests queued on its sockets; its lease lapsed while it was
    stopped, and a controller renews nobody's lease, its own included,
    before the quorum confirms it still leads: so it refuses them, even
    acks=1, rather than acknowledge records its successor's log does not
    have."""
    cluster, led = setup(cluster_factory, "pause-leader")
    victim, survivor = pick(cluster, role)
    durable = Writer(cluster.bootstrap, "pause-leader").start()
    # Without idempotence or retries: every acknowledgement is one append
    # by whoever answered.
    quick = Writer(cluster.bootstrap, "pause-leader", acks=1, linger_ms=0,
                   first_key=10_000_000, request_timeout_ms=15000).start()
    durable.wait_acked(1000)
    quick.wait_acked(1000)

    fault_at = time.monotonic()
    cluster.brokers[victim].process.send_signal(signal.SIGSTOP)
    wait_failed_over(cluster, "pause-leader", victim, survivor)
    time.sleep(1.0)
    resumed_at = time.monotonic()
    cluster.brokers[victim].process.send_signal(signal.SIGCONT)

    wait_for("the resumed broker is back in every ISR", lambda: all(
        victim in p.isrs for p in describe(cluster, "pause-leader").values()), timeout=60)
    durable.wait_acked(len(durable.acked) + 500)
    quick.wait_acked(len(quick.acked) + 500)
    quick.stop()
    # acks=1 records the old leader acknowledged before it stopped may be
    # lost with it, as Kafka allows; none acknowledged after it resumed.
    quick.acked = {k: at for k, at in quick.acked.items() if quick.acked_at[k] > resumed_at}
    finish(cluster, "pause-leader", [durable, quick], f"{role} SIGSTOP",
           [p for p, b in led.items() if b == victim], fault_at)
    assert cluster.brokers[victim].metrics()["keel_lease_expiries_total"] >= 1
    # A stopped process still takes connections: no probe took it for gone.
    assert fences(cluster)["process_gone"] == 0


def test_a_rolling_restart_moves_leaderships_first_and_loses_nothing(cluster_factory):
    """SIGTERM each node in turn: before it stops, its leaderships move to
    other in-sync replicas (reason controlled_shutdown), so producers are
    redirected at once; it restarts, catches up and rejoins every ISR. The
    rebalancer then gives every partition back to its preferred replica,
    but never to a broker while it stops: node 1 keeps serving for 2.5 s
    after its leaderships moved (clients slow to leave), through two
    rebalance checks that must leave it out."""
    cluster = cluster_factory(3, extra_args=[*REPLICATION_ARGS,
                                             "--leader-imbalance-check-interval-seconds", "1"],
                              node_args={1: ["--test-faults", "linger-on-stop:2500"]})
    registered(cluster, 3)
    create(cluster, "rolling", partitions=TOPIC_PARTITIONS)
    preferred = leaders(cluster, "rolling")
    assert sorted(preferred.values()) == [1, 2, 3], preferred
    writer = Writer(cluster.bootstrap, "rolling").start()
    writer.wait_acked(1000)
    for node in (1, 2, 3):
        broker = cluster.brokers[node]
        survivor = cluster.brokers[1 if node != 1 else 2]
        assert broker.stop() == 0
        assert "moved leaderships to other in-sync replicas before stopping" in broker.log(), \
            broker.log()[-3000:]
        assert all(leader != node for leader in leaders_from(survivor, "rolling").values())
        assert_no_leadership_while_stopping(survivor, node)
        writer.wait_acked(len(writer.acked) + 500)
        broker.start()
        wait_for(f"broker {node} is back in every ISR", lambda: all(
            node in p.isrs for p in describe(cluster, "rolling").values()), timeout=60)
    wait_for("every partition is led by its preferred replica again",
             lambda: leaders(cluster, "rolling") == preferred, timeout=30)
    writer.wait_acked(len(writer.acked) + 500)
    writer.stop()
    latencies = sorted(b - a for a, b in zip(sorted(writer.acked_at.values()),
                                             sorted(writer.acked_at.values())[1:]))
    seen = read_back(cluster.bootstrap, "rolling", partitions=TOPIC_PARTITIONS)
    verify_acknowledged(writer, seen)
    print(f"\nrolling restart: longest gap between acknowledgements {latencies[-1]:.2f} s, "
          f"{len(writer.acked)} acknowledged records all read back")


def assert_no_leadership_while_stopping(broker, stopped):
    """No leader change gave `stopped` a partition after it began moving
    its leaderships away (its last controlled_shutdown changes)."""
    listed = subprocess.run([str(KEEL), "history", "--server", f"{broker.host}:{broker.metrics_port}",
                             "--json"], capture_output=True, text=True, timeout=30, check=True)
    changes = json.loads(listed.stdout)["changes"]
    moved_off = [c["sequence"] for c in changes
                 if c["reason"] == "controlled_shutdown" and c["previous_leader"] == stopped]
    assert moved_off, changes
    given_back = [c for c in changes if c["sequence"] > moved_off[-1] and c["new_leader"] == stopped]
    assert not given_back, given_back


def test_a_leader_whose_appends_stall_hands_over_and_an_idle_one_stays(cluster_factory):
    """The produce heartbeat: a leader alive and heartbeating, but whose
    appends to one partition stall (a test fault: 4 s each), is moved off
    that partition once producers have waited past the stall timeout, with
    reason partition_stall; the acks=1 write stuck in its append finishes
    after the move and is not acknowledged. A partition it leads that
    nobody writes to stays with it, and the stall does not cost the broker
    its lease."""
    cluster = start(cluster_factory)
    controller = cluster.controller().node_id
    victim = next(b for b in (1, 2, 3) if b != controller)
    others = tuple(b for b in (1, 2, 3) if b != victim)
    broker = cluster.brokers[victim]
    assert broker.stop() == 0
    broker.extra_args += ["--test-faults", "stall-append:stalled:0:4000"]
    broker.start()
    wait_for("the restarted broker is unfenced", lambda: all(
        b.metrics()["keel_fenced_brokers"] == 0 for b in cluster.brokers.values()), timeout=30)
    for topic in ("stalled", "idle"):
        create(cluster, topic, replicas=(victim, *others))
    assert leaders(cluster, "stalled")[0] == victim

    durable = Writer(cluster.bootstrap, "stalled").start()
    quick = Writer(cluster.bootstrap, "stalled", acks=1, linger_ms=0, first_key=10_000_000,
                   request_timeout_ms=15000).start()
    wait_for("the stalled partition moves", lambda: leaders(cluster, "stalled")[0] in others,
             timeout=30)
    durable.wait_acked(500)
    quick.wait_acked(500)
    time.sleep(5)  # the stuck appends finish at the deposed leader
    quick.stop()
    durable.stop()
    seen = read_back(cluster.bootstrap, "stalled")
    verify_acknowledged(durable, seen)
    verify_acknowledged(quick, seen)

    changes = json.loads(subprocess.run(
        [str(KEEL), "history", "--server", f"{broker.host}:{broker.metrics_port}",
         "--topic", "stalled", "--json"],
        capture_output=True, text=True, timeout=30, check=True).stdout)["changes"]
    assert any(c["reason"] == "partition_stall" and c["previous_leader"] == victim
               for c in changes), changes
    assert leaders(cluster, "idle")[0] == victim, "an idle partition was failed over"
    # The deposed leader learnt the new leader epoch while its
    # reconciliation waited for the stalled log, so its heartbeats kept
    # confirming the leadership changes and its lease never lapsed.
    assert broker.metrics()["keel_lease_expiries_total"] == 0
    print(f"\npartition stall: {len(durable.acked) + len(quick.acked)} acknowledged records "
          "all read back")


def test_killing_a_group_s_coordinator_keeps_its_offsets_and_consumers_resume_there(cluster_factory):
    """Offsets committed to a group (acknowledged, so in every in-sync
    replica of its __consumer_offsets partition) survive a SIGKILL of the
    group's coordinator: the coordinator moves with that partition's
    leadership, and a consumer of the group resumes exactly where the
    commits left it."""
    cluster = start(cluster_factory)
    create(cluster, "grouped", partitions=TOPIC_PARTITIONS)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for i in range(3000):
        producer.produce("grouped", key=str(i).encode(), value=b"v")
    assert producer.flush(30) == 0

    def consumer():
        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "resumers",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe(["grouped"])
        return c

    first = consumer()
    read = 0
    while read < 1500:
        message = first.poll(1.0)
        if message is not None and not message.error():
            read += 1
    committed = {p: 0 for p in range(TOPIC_PARTITIONS)}
    committed.update({tp.partition: tp.offset for tp in first.commit(asynchronous=False)
                      if tp.offset >= 0})
    ends = {p: first.get_watermark_offsets(TopicPartition("grouped", p), timeout=10)[1]
            for p in range(TOPIC_PARTITIONS)}
    first.close()
    assert sum(ends.values()) == 3000

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    described = admin.describe_consumer_groups(["resumers"])["resumers"].result(timeout=30)
    assert described.state == ConsumerGroupState.EMPTY, described.state
    coordinator = described.coordinator.id
    survivor = cluster.brokers[next(b for b in (1, 2, 3) if b != coordinator)]
    cluster.brokers[coordinator].kill()

    second = Consumer({"bootstrap.servers": survivor.bootstrap, "group.id": "resumers",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    second.subscribe(["grouped"])
    first_seen = {}
    total = 0
    # Well inside the 45 s session timeout: a new coordinator that loaded
    # the group from before its member left would make this consumer wait
    # for that member's session to expire.
    deadline = time.monotonic() + 20
    while total < 3000 - sum(committed.values()) and time.monotonic() < deadline:
        message = second.poll(1.0)
        if message is None or message.error():
            continue
        first_seen.setdefault(message.partition(), message.offset())
        total += 1
    assert total == 3000 - sum(committed.values()), (total, committed)
    assert first_seen == {p: o for p, o in committed.items() if o < ends[p]}, \
        (first_seen, committed, ends)
    after = {tp.partition: max(tp.offset, 0) for tp in second.committed(
        [TopicPartition("grouped", p) for p in range(TOPIC_PARTITIONS)], timeout=30)}
    assert after == committed
    second.close()
    # The client must outlive its future.
    admin = AdminClient({"bootstrap.servers": survivor.bootstrap})
    new_coordinator = admin.describe_consumer_groups(["resumers"])["resumers"].result(
        timeout=30).coordinator.id
    assert new_coordinator != coordinator
