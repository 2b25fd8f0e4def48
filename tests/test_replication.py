"""Replication on three real keel processes, RF=3, min.insync.replicas 2,
with real clients: followers killed and restarted under an idempotent
acks=all producer, two followers down, leadership moved by hand under load,
consumers held below the high watermark, and group offsets surviving a move
of their coordinator. Every acknowledged record is read back, once, in
order."""

import threading
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import registered, wait_for

REPLICATION_ARGS = [
    "--min-insync-replicas", "2",
    "--replica-lag-time-max-ms", "2000",
    "--offsets-topic-partitions", "3",
    "--group-initial-rebalance-delay-ms", "0",
]


def start(cluster_factory, size=3):
    cluster = cluster_factory(size, extra_args=REPLICATION_ARGS)
    registered(cluster, size)
    return cluster


def create(cluster, topic, replicas=(1, 2, 3), partitions=1):
    """A topic whose partition p has the replica list rotated by p (the
    first replica is the preferred leader)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    assignment = [list(replicas[p % len(replicas):] + replicas[:p % len(replicas)])
                  for p in range(partitions)]
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replica_assignment=assignment)])[topic].result(timeout=30)
    wait_for("every replica is in sync", lambda: all(
        sorted(p.isrs) == sorted(replicas) for p in describe(cluster, topic).values()))


def describe(cluster, topic):
    """Partition metadata (leader, replicas, isr) by partition id."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    return admin.list_topics(topic=topic, timeout=10).topics[topic].partitions


def move_leader(broker, topic, partition, to):
    """POST /admin/move-leader: the answer, or the refusal with its code."""
    request = urllib.request.Request(
        f"{broker.metrics_url}/admin/move-leader?topic={topic}&partition={partition}&to={to}",
        method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.read().decode()
    except urllib.error.HTTPError as refused:
        return f"{refused.code} {refused.read().decode()}"


class Writer:
    """An idempotent acks=all producer writing numbered records until
    stopped; remembers which were acknowledged, and at which offset."""

    def __init__(self, bootstrap, topic, acks="all", rate=500, first_key=0, linger_ms=5,
                 request_timeout_ms=5000):
        self.topic = topic
        self.first_key = first_key
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "enable.idempotence": acks == "all",
            "linger.ms": linger_ms,
            "message.timeout.ms": 60000,
            "request.timeout.ms": request_timeout_ms,
            # Without idempotence a retry can write a record twice.
            "retries": 2147483647 if acks == "all" else 0,
        })
        self.rate = rate
        self.flush_timeout = 60
        self.acked = {}
        self.acked_at = {}
        self.failed = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, error, message):
        if error is None:
            key = int(message.key())
            # An answer that came "implicitly" (see verify_acknowledged) has no
            # offset: confluent-kafka gives None, librdkafka's -1001.
            offset = message.offset()
            self.acked[key] = (message.partition(), -1001 if offset is None else offset)
            self.acked_at[key] = time.monotonic()
        else:
            self.failed.append(error)

    def _run(self):
        while not self._stop.is_set():
            key = str(self.first_key + self.sent).encode()
            self.producer.produce(self.topic, key=key, value=b"v" * 100 + key,
                                  on_delivery=self._delivered)
            self.sent += 1
            self.producer.poll(0)
            time.sleep(1 / self.rate)
        self.producer.flush(self.flush_timeout)

    def start(self):
        self._thread.start()
        return self

    def wait_acked(self, count, timeout=60):
        try:
            wait_for(f"{count} records acknowledged", lambda: len(self.acked) >= count, timeout)
        except AssertionError as timeout_error:
            raise AssertionError(f"{timeout_error}; delivery errors: {self.failed[:3]}") from None

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=90)
        assert not self._thread.is_alive()
        return self


class Reader:
    """A consumer reading `topic` as it is written, remembering where it
    saw each record."""

    def __init__(self, bootstrap, topic):
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"live-{topic}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.seen = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            message = self.consumer.poll(0.1)
            if message is not None and not message.error():
                self.seen[int(message.key())] = (message.partition(), message.offset())
        self.consumer.close()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        return self


def read_back(bootstrap, topic, partitions=1, timeout=60):
    """Every record of `topic` from the start: {key: (partition, offset)}.
    Fails on a duplicate key."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    admin_high = {}
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        admin_high[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = {}
    positions = {p: 0 for p in range(partitions)}
    deadline = time.monotonic() + timeout
    while any(positions[p] < admin_high[p] for p in positions) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        key = int(message.key())
        assert key not in seen, f"record {key} read twice (offsets {seen[key]} and {message.offset()})"
        assert message.value() == b"v" * 100 + message.key()
        seen[key] = (message.partition(), message.offset())
        positions[message.partition()] = message.offset() + 1
    consumer.close()
    return seen


def verify_acknowledged(writer, seen):
    """Every acknowledged record was read back at the offset it was
    acknowledged at, and records of one partition are in the order sent."""
    missing = sorted(set(writer.acked) - set(seen))
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:10]}"
    # librdkafka acknowledges a batch whose answer was lost "implicitly",
    # without an offset (-1001), once a later one of the producer succeeds:
    # such a record only has to be in its partition.
    moved = [(k, at, seen[k]) for k, at in writer.acked.items()
             if seen[k][0] != at[0] or (at[1] >= 0 and seen[k] != at)]
    assert not moved, ("records read at other (partition, offset) than acknowledged: "
                       f"{moved[:10]} (key, acknowledged, read)")
    by_partition = {}
    for key in sorted(writer.acked):
        partition, offset = seen[key]
        by_partition.setdefault(partition, []).append(offset)
    for partition, offsets in by_partition.items():
        assert offsets == sorted(offsets), f"partition {partition} out of order"


def epoch_start_offset(bootstrap, topic, leader_epoch, partition=0, timeout=60):
    """The offset of the first record of `topic` appended in `leader_epoch`
    or later (a batch carries the epoch it was appended under): where that
    leader's writes begin."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"epochs-{time.monotonic()}",
                         "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.leader_epoch() is not None and message.leader_epoch() >= leader_epoch:
                return message.offset()
            if message.offset() + 1 >= high:
                break
        raise AssertionError(f"no record of leader epoch {leader_epoch} below offset {high}")
    finally:
        consumer.close()


def when_successor_took_writes(writers, seen, first_offset):
    """When a successor acknowledged its first write: the earliest answer,
    to any of `writers`, for a record read back at the offset it was
    acknowledged with, from `first_offset` (the successor's first) on. A
    writer's first answers may well come from the old leader, and be lost."""
    return min(writer.acked_at[k] for writer in writers for k, at in writer.acked.items()
               if at[1] >= first_offset and seen.get(k) == at)


def lost_writes(writer, seen, successor_first_ack):
    """The acks=1 writes `writer` saw acknowledged that are not in `seen`,
    and those of them acknowledged at or after `successor_first_ack` (with
    how many seconds after): acks=1 may lose what a deposed leader
    acknowledged before its successor took writes, never what it
    acknowledged after."""
    lost = sorted(k for k in writer.acked if k not in seen)
    split_brain = [(k, round(writer.acked_at[k] - successor_first_ack, 3))
                   for k in lost if writer.acked_at[k] >= successor_first_ack]
    return lost, split_brain


def test_a_follower_killed_under_acks_all_load_loses_nothing_and_rejoins(cluster_factory):
    cluster = start(cluster_factory)
    create(cluster, "orders")
    writer = Writer(cluster.bootstrap, "orders").start()
    writer.wait_acked(500)

    cluster.brokers[3].kill()
    wait_for("the ISR shrinks to the live brokers",
             lambda: sorted(describe(cluster, "orders")[0].isrs) == [1, 2], timeout=30)
    acked_before = len(writer.acked)
    writer.wait_acked(acked_before + 500)

    cluster.brokers[3].restart()
    wait_for("the restarted follower catches up and rejoins",
             lambda: sorted(describe(cluster, "orders")[0].isrs) == [1, 2, 3], timeout=60)
    writer.wait_acked(len(writer.acked) + 200)
    writer.stop()
    assert not writer.failed, writer.failed[:5]

    verify_acknowledged(writer, read_back(cluster.bootstrap, "orders"))
    leader = cluster.brokers[1].metrics()
    # The controller took the dead follower out of the ISR when it fenced
    # it (the leader would have after its lag time); the leader took it
    # back in.
    fenced = sum(value for b in cluster.brokers.values() for name, value in b.metrics().items()
                 if name.startswith("keel_controller_fenced_brokers_total{"))
    assert fenced >= 1
    assert leader["keel_isr_expands_total"] >= 1
    assert leader["keel_under_replicated_partitions"] == 0


def test_two_followers_down_refuse_acks_all_and_hide_acks_1_until_back(cluster_factory):
    # Five brokers, the metadata quorum on 1-3: the partition lives on 1, 4
    # and 5, so killing 4 and 5 leaves the quorum up to commit ISR changes.
    cluster = start(cluster_factory, size=5)
    create(cluster, "payments", replicas=(1, 4, 5))
    cluster.brokers[4].kill()
    cluster.brokers[5].kill()

    # acks=1 is answered after the local append. The followers fall behind
    # these records, so the leader takes them out of the ISR (an idle
    # follower at the log end would stay in sync: only the controller's
    # fencing of a dead broker takes it out then).
    relaxed = Producer({"bootstrap.servers": cluster.bootstrap, "acks": 1})
    delivered = []
    for n in range(10):
        relaxed.produce("payments", str(n).encode(), on_delivery=lambda e, m: delivered.append(e))
    relaxed.flush(10)
    assert delivered == [None] * 10, delivered
    wait_for("the ISR shrinks to the leader",
             lambda: describe(cluster, "payments")[0].isrs == [1], timeout=30)
    wait_for("the leader reports it under min ISR",
             lambda: cluster.brokers[1].metrics()["keel_under_min_isr_partitions"] == 1)

    strict = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                       "message.timeout.ms": 3000, "retries": 0})
    errors = []
    strict.produce("payments", b"refused", on_delivery=lambda e, m: errors.append(e))
    strict.flush(10)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors[0]

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "peek",
                         "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition("payments", 0), timeout=10)
    assert (low, high) == (0, 0), "records above the high watermark are invisible"

    cluster.brokers[4].restart()
    cluster.brokers[5].restart()
    wait_for("the followers rejoin",
             lambda: sorted(describe(cluster, "payments")[0].isrs) == [1, 4, 5], timeout=60)
    wait_for("the acks=1 records become visible", lambda: consumer.get_watermark_offsets(
        TopicPartition("payments", 0), timeout=10)[1] == 10)
    consumer.close()


def test_moving_leadership_ten_times_under_load_loses_nothing(cluster_factory):
    cluster = start(cluster_factory)
    create(cluster, "moves", partitions=2)
    writer = Writer(cluster.bootstrap, "moves").start()
    writer.wait_acked(300)
    for n in range(10):
        partition = n % 2
        info = describe(cluster, "moves")[partition]
        target = [r for r in info.replicas if r != info.leader][n % 2]
        answer = move_leader(cluster.brokers[1], "moves", partition, target)
        assert answer.startswith(f"leader {target} "), answer
        wait_for(f"broker {target} leads partition {partition}",
                 lambda: describe(cluster, "moves")[partition].leader == target)
        acked = len(writer.acked)
        writer.wait_acked(acked + 100)
    writer.stop()
    assert not writer.failed, writer.failed[:5]
    verify_acknowledged(writer, read_back(cluster.bootstrap, "moves", partitions=2))


def test_leadership_moved_to_a_slow_follower_keeps_every_acknowledged_write(cluster_factory):
    # Broker 3's appends to this partition take 100 ms each, so it trails
    # the leader: a leader that acknowledged acks=all, or showed consumers
    # a record, before every ISR member had it would lose it when
    # leadership moves to broker 3.
    cluster = start(cluster_factory)
    slow = cluster.brokers[3]
    slow.extra_args += ["--test-faults", "stall-append:slow:0:100"]
    slow.restart()
    # The topic must not be created before the restarted broker registers
    # anew: registering as a new incarnation takes it out of every ISR
    # (KIP-903), and a follower this slow would not catch up to rejoin.
    wait_for("the restarted broker holds its lease",
             lambda: slow.metrics().get("keel_lease_held") == 1)
    registered(cluster, 3)
    create(cluster, "slow")
    reader = Reader(cluster.bootstrap, "slow").start()
    writer = Writer(cluster.bootstrap, "slow", rate=300).start()
    # acks=1 records the slow follower has not got are lost with the move
    # (as in Kafka); a consumer must never have seen them.
    # Its batches wait longer, so its requests do not queue up at the slow
    # leader faster than that leader appends them.
    careless = Writer(cluster.bootstrap, "slow", acks="1", rate=300, first_key=1_000_000,
                      linger_ms=100).start()
    writer.wait_acked(300)
    assert describe(cluster, "slow")[0].leader == 1
    # Only an in-sync replica may take over; on a busy machine the slow one
    # can fall out of the ISR for a moment.
    deadline = time.monotonic() + 20
    answer = move_leader(cluster.brokers[1], "slow", 0, 3)
    while not answer.startswith("leader 3 ") and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = move_leader(cluster.brokers[1], "slow", 0, 3)
    assert answer.startswith("leader 3 "), answer
    wait_for("broker 3 leads", lambda: describe(cluster, "slow")[0].leader == 3)
    acked = len(writer.acked)
    writer.flush_timeout = careless.flush_timeout = 20
    time.sleep(2)
    started = time.monotonic()
    writer.stop()
    careless.stop()
    stopped = time.monotonic() - started
    time.sleep(1)
    reader.stop()
    # First what matters most: nothing acknowledged is gone, and nothing a
    # consumer saw (only what every ISR member held) was taken back.
    final = read_back(cluster.bootstrap, "slow")
    verify_acknowledged(writer, final)
    unseen = [k for k, at in reader.seen.items() if final.get(k) != at]
    assert not unseen, f"records a consumer saw are gone or moved: {unseen[:10]}"
    assert reader.seen, "the consumer read along"
    assert len(writer.acked) > acked, "writes go on under the new leader"
    assert stopped < 15, f"the writers took {stopped:.1f} s to flush"
    assert not writer.failed, writer.failed[:5]


def test_offsets_topic_has_three_replicas_and_a_group_keeps_its_offsets_when_its_coordinator_moves(
        cluster_factory):
    cluster = start(cluster_factory)
    create(cluster, "events")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for n in range(100):
        producer.produce("events", str(n).encode())
    producer.flush(30)

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "billing",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe(["events"])
    read = 0
    deadline = time.monotonic() + 60
    while read < 60 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            read += 1
    consumer.commit(offsets=[TopicPartition("events", 0, 60)], asynchronous=False)
    consumer.close()

    offsets = describe(cluster, "__consumer_offsets")
    assert all(len(p.replicas) == 3 for p in offsets.values()), offsets
    # Move every partition of __consumer_offsets away from its leader.
    for partition, info in offsets.items():
        target = next(r for r in info.isrs if r != info.leader)
        answer = move_leader(cluster.brokers[1], "__consumer_offsets", partition, target)
        assert answer.startswith(f"leader {target} "), answer

    checker = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "billing",
                        "enable.auto.commit": False})

    def committed():
        try:
            return checker.committed([TopicPartition("events", 0)], timeout=10)[0].offset
        except KafkaException as error:
            # NOT_COORDINATOR while the client learns where the group went.
            assert error.args[0].code() in (KafkaError.NOT_COORDINATOR,
                                            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                            KafkaError.COORDINATOR_NOT_AVAILABLE), error
            return None

    wait_for("the moved coordinator answers with the committed offset",
             lambda: committed() == 60, timeout=60)
    checker.close()
    moved = describe(cluster, "__consumer_offsets")
    assert all(moved[p].leader != info.leader for p, info in offsets.items())


def test_followers_fetching_less_than_a_batch_still_copy_every_batch_whole(cluster_factory):
    # Both of a follower's fetch limits below the size of every batch: the
    # leader still sends the first batch whole (KIP-74), so followers keep
    # up a batch per fetch and acks=all writes complete.
    cluster = cluster_factory(3, extra_args=[
        *REPLICATION_ARGS,
        "--replica-fetch-max-bytes", "1024",
        "--replica-fetch-response-max-bytes", "1024",
        "--metrics-per-partition", "true",
    ])
    registered(cluster, 3)
    create(cluster, "wide", partitions=2)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "linger.ms": 20, "batch.size": 1_000_000})
    failures = []
    for n in range(400):
        producer.produce("wide", b"w" * 10_000, key=str(n).encode(), partition=n % 2,
                         on_delivery=lambda error, _: error and failures.append(error))
    assert producer.flush(60) == 0, "acks=all writes still waiting for followers"
    assert not failures, failures[:5]

    def log_end_offsets():
        return {(node_id, p): broker.metrics()[
                    f'keel_partition_log_end_offset{{topic="wide",partition="{p}"}}']
                for node_id, broker in cluster.brokers.items() for p in range(2)}

    wait_for("every replica to hold the 200 records of each partition",
             lambda: set(log_end_offsets().values()) == {200})
    assert all(sorted(p.isrs) == [1, 2, 3] for p in describe(cluster, "wide").values())
