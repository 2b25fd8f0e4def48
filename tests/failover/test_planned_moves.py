"""A leader moved away while alive (an operator's move, a preferred replica
rebalance, a stall, a controlled shutdown) keeps taking writes until it
learns of the move. Its successor must not take any before then, or both
acknowledge writes at once and the old leader's are truncated away. Shown
with acks=1 writers, against a leader that learns of the move late: the
fault hook `apply-metadata-late` makes it apply committed metadata 800 ms
after the others."""

import time

from confluent_kafka import Consumer, TopicPartition

from test_cluster import registered, wait_for
from test_replication import (
    REPLICATION_ARGS, Writer, create, describe, lost_writes, move_leader, read_back)

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
    # writes to the successor.
    old = Writer(late.bootstrap, topic, acks="1", rate=500).start()
    old.wait_acked(300)
    wait_for("the followers replicate the old leader's writes",
             lambda: high_watermark(late.bootstrap, topic) >= 300)
    moved_at = time.monotonic()
    print("\n" + move_leader(successor, topic, 0, to=1).strip())
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
    first_successor_ack = min(new.acked_at.values())
    lost, split_brain = lost_writes(old, seen, first_successor_ack)
    last_old_ack = max((old.acked_at[k] for k in lost), default=None)
    print(f"old leader: {len(old.acked)} acknowledged, {len(lost)} lost (acks=1), "
          f"{len(old.failed)} refused, lease expiries {late.metrics()['keel_lease_expiries_total']:.0f}; "
          f"successor: {len(new.acked)} acknowledged, the first "
          f"{first_successor_ack - moved_at:.3f} s after the move; the last lost write was "
          f"acknowledged {(last_old_ack - moved_at) if last_old_ack else 0:.3f} s after it")
    assert not split_brain, (
        f"{len(split_brain)} writes acknowledged by the old leader after its successor's first "
        f"and lost: (key, seconds after) {split_brain[:10]}")
    assert all(k in seen for k in new.acked), "the successor lost acknowledged writes"
