"""A leader moved away while alive (an operator's move, a preferred replica
rebalance, a stall, a controlled shutdown) keeps taking writes until it
learns of the move. Its successor must not take any before then, or both
acknowledge writes at once and the old leader's are truncated away. Shown
with acks=1 writers, against a leader that learns of the move late: the
fault hook `apply-metadata-late` makes it apply committed metadata 800 ms
after the others."""

import re
import time

from confluent_kafka import Consumer, TopicPartition

from test_cluster import registered, wait_for
from test_replication import (
    REPLICATION_ARGS, Writer, create, describe, epoch_start_offset, lost_writes, move_leader,
    read_back, when_successor_took_writes)

LATE_MS = 800


def high_watermark(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_a_moved_leader_stops_taking_writes_before_its_successor_starts(cluster_factory):
    # Broker 4 is no voter, so the late node never controls.
    cluster = cluster_factory(4, extra_args=REPLICATION_ARGS,
                              node_args={4: ["--test-faults", f"apply-metadata-late:{LATE_MS}"]})
    registered(cluster, 4)
    topic = "succession"
    late, successor = cluster.brokers[4], cluster.brokers[1]
    # Broker 4 learns of its own registration 800 ms late, and may be
    # fenced before its first heartbeat: a topic it should lead waits until
    # it heartbeats and holds a lease.
    wait_for("broker 4 holds its lease", lambda: late.metrics().get("keel_lease_held") == 1)
    create(cluster, topic, replicas=(4, 1, 2))
    wait_for("broker 4 leads and holds its lease", lambda: (
        describe(cluster, topic)[0].leader == 4 and late.metrics().get("keel_lease_held") == 1))

    # The first writer knows broker 4 only: it goes on writing there until
    # broker 4 refuses. The second starts once the move is committed and
    # writes to whoever its Metadata answers name: the successor, or for a
    # moment broker 4, which names itself until it learns of the move.
    old = Writer(late.bootstrap, topic, acks="1", rate=500).start()
    old.wait_acked(300)
    wait_for("the followers replicate the old leader's writes",
             lambda: high_watermark(late.bootstrap, topic) >= 300)
    moved_at = time.monotonic()
    moved = move_leader(successor, topic, 0, to=1).strip()
    print("\n" + moved)
    new_epoch = int(re.fullmatch(r"leader 1 at leader epoch (\d+)", moved).group(1))
    new = Writer(successor.bootstrap, topic, acks="1", rate=500, first_key=1_000_000).start()
    new.wait_acked(300)
    time.sleep(1)
    old.stop()
    new.stop()
    wait_for("broker 4 follows again, in sync", lambda: (
        describe(cluster, topic)[0].leader == 1 and sorted(describe(cluster, topic)[0].isrs) == [1, 2, 4]))
    # Broker 4 stays in the ISR while it lags (for up to the replica lag
    # time), and the high watermark waits for it: read back only once it
    # covers every offset acknowledged to either writer. (Once broker 4
    # hangs up on it, the first writer writes to the successor too.)
    last_acked = max(offset for writer in (old, new) for _, offset in writer.acked.values())
    wait_for("the high watermark covers every acknowledged offset",
             lambda: high_watermark(successor.bootstrap, topic) > last_acked)

    seen = read_back(successor.bootstrap, topic)
    # Either writer's answers may come from either leader: when the
    # successor took writes is told by the records read back from its
    # first offset on.
    first_offset = epoch_start_offset(successor.bootstrap, topic, new_epoch)
    first_successor_ack = when_successor_took_writes((old, new), seen, first_offset)
    lost_at, split_brain = [], []
    for writer in (old, new):
        lost, writer_split_brain = lost_writes(writer, seen, first_successor_ack)
        lost_at += [writer.acked_at[k] for k in lost]
        split_brain += writer_split_brain
    print(f"old leader: {len(lost_at)} writes lost (acks=1), {len(old.failed)} refused, "
          f"lease expiries {late.metrics()['keel_lease_expiries_total']:.0f}; successor: first "
          f"write acknowledged {first_successor_ack - moved_at:.3f} s after the move; the last "
          f"lost write was acknowledged {max(lost_at, default=moved_at) - moved_at:.3f} s after it")
    assert not split_brain, (
        f"{len(split_brain)} writes acknowledged by the old leader after its successor's first "
        f"and lost: (key, seconds after) {split_brain[:10]}")
    assert any(at[1] >= first_offset and seen.get(k) == at for k, at in new.acked.items()), (
        "the successor acknowledged none of the second writer's records")


def test_a_leadership_moved_to_a_broker_is_taken_at_once_though_its_followers_long_poll_it(
        cluster_factory):
    """A successor takes writes once every replica has fetched in its
    epoch. Its followers may already be parked in a long poll at it for
    another, idle partition (here for up to 5 s); they must give that
    fetch up and fetch the moved partition at once, or the successor's
    writes wait out the whole succession wait (about a lease, 4.9 s here).
    Seen in rolling restarts: the producer's connection to the successor
    was held by the parked write, so no record reached the idle partition
    to end the long poll either."""
    cluster = cluster_factory(3, extra_args=[
        *REPLICATION_ARGS, "--replica-fetch-wait-max-ms", "5000",
        "--broker-session-timeout-ms", "5000"])
    registered(cluster, 3)
    create(cluster, "idle", replicas=(1, 2, 3))
    create(cluster, "moving", replicas=(2, 1, 3))
    for topic in ("idle", "moving"):
        wait_for(f"every replica of {topic} in its ISR",
                 lambda: sorted(describe(cluster, topic)[0].isrs) == [1, 2, 3], timeout=30)
    time.sleep(1.0)  # the followers of broker 1 are parked in a fetch of "idle"

    moved_at = time.monotonic()
    moved = move_leader(cluster.brokers[2], "moving", 0, to=1).strip()
    assert re.fullmatch(r"leader 1 at leader epoch \d+", moved), moved
    writer = Writer(cluster.bootstrap, "moving").start()
    writer.wait_acked(1)
    took = min(writer.acked_at.values()) - moved_at
    writer.stop()
    print(f"\nfirst write acknowledged {took:.2f} s after the move")
    assert took < 2.5, "the successor waited for followers parked in a long poll"
