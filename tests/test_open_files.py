"""A broker under a low limit on open files, set for its process as
`ulimit -n` sets it: it takes partitions up to what it can open again and
refuses more with POLICY_VIOLATION naming the limit; it comes back after a
clean stop and after SIGKILL with every partition readable; it raises its
soft limit to the hard one at start; and it refuses to start, naming the
numbers, when its data needs more files than the limit allows.
"""

import os
import re

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from conftest import Broker

LIMIT = 512
# What a broker keeps for connections and the Raft log (open_files::RESERVED).
RESERVED = 256
CAPACITY = LIMIT - RESERVED


@pytest.fixture
def broker(tmp_path):
    """A broker for the test to configure and start; killed at its end."""
    broker = Broker(tmp_path / "broker")
    yield broker
    broker.close()


def create(admin, topics):
    futures = admin.create_topics(topics, operation_timeout=30)
    for future in futures.values():
        future.result(timeout=60)


def read_back(bootstrap, partitions):
    """One record from each (topic, partition), read from the start."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, 0) for t, p in partitions])
    seen = set()
    while len(seen) < len(partitions):
        for message in consumer.consume(num_messages=500, timeout=10):
            assert message.error() is None, message.error()
            seen.add((message.topic(), message.partition()))
    consumer.close()
    return seen


def soft_limit(pid):
    limits = open(f"/proc/{pid}/limits").read()
    return int(re.search(r"Max open files\s+(\d+)", limits).group(1))


def test_partitions_up_to_the_open_file_limit_survive_restarts(broker):
    # The soft limit is lower still: the broker raises it to the hard one.
    broker.open_files = (300, LIMIT)
    broker.start()
    assert soft_limit(broker.process.pid) == LIMIT
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    create(admin, [NewTopic(f"t{i}", 10, 1) for i in range(25)])
    # Six more fit exactly; then nothing more.
    admin.create_partitions([NewPartitions("t0", 16)])["t0"].result(timeout=60)
    with pytest.raises(KafkaException) as refused:
        create(admin, [NewTopic("one-too-many", 1, 1)])
    error = refused.value.args[0]
    assert error.name() == "POLICY_VIOLATION", error
    assert f"can keep {CAPACITY} partition replicas open" in error.str(), error
    with pytest.raises(KafkaException) as refused:
        admin.create_partitions([NewPartitions("t1", 11)])["t1"].result(timeout=60)
    assert refused.value.args[0].name() == "POLICY_VIOLATION"

    partitions = [("t0", p) for p in range(16)] + [
        (f"t{i}", p) for i in range(1, 25) for p in range(10)]
    assert len(partitions) == CAPACITY
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for topic, partition in partitions:
        producer.produce(topic, b"v", partition=partition)
    assert producer.flush(60) == 0

    # A clean stop, then a crash: it opens every partition again each time.
    assert broker.stop() == 0
    broker.start()
    assert read_back(broker.bootstrap, partitions) == set(partitions)
    broker.kill()
    broker.start()
    assert read_back(broker.bootstrap, partitions) == set(partitions)


def test_a_broker_whose_data_needs_more_files_than_its_limit_says_so(broker):
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create(admin, [NewTopic(f"t{i}", 10, 1) for i in range(20)])
    assert broker.stop() == 0

    broker.open_files = (300, 300)
    broker.start_async()
    assert broker.process.wait(timeout=30) != 0
    log = broker.log().split(f"--- start {broker.starts}\n")[-1]
    assert "holds 200 partition logs" in log, log
    assert "the open file limit is 300" in log, log
    assert "at least 456" in log, log

    # Raised, it starts with everything.
    broker.open_files = (LIMIT, LIMIT)
    broker.start()
    assert served_topics(broker.bootstrap) == 20


def test_older_segments_hold_no_file_open(broker):
    """Partitions with many segments: only each one's active segment keeps
    a file open, so a broker whose segments far outnumber its limit starts,
    serves every record from the oldest segment on, and starts again after
    SIGKILL."""
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create(admin, [NewTopic("many", 10, 1, config={"segment.bytes": "1024"})])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                         "linger.ms": 0})
    rounds = 40
    for i in range(rounds):
        for partition in range(10):
            # Two records do not fit a segment: every one rolls it.
            producer.produce("many", b"%04d" % i * 150, partition=partition)
        assert producer.flush(30) == 0
    segments = len(list(broker.data_dir.glob("many-*/*.log")))
    assert segments >= 300, segments
    assert broker.stop() == 0

    broker.open_files = (300, 300)
    broker.start()
    assert read_counts(broker.bootstrap, "many", 10) == [rounds] * 10
    assert len(os.listdir(f"/proc/{broker.process.pid}/fd")) < 300
    broker.kill()
    broker.start()
    assert read_counts(broker.bootstrap, "many", 10) == [rounds] * 10


def read_counts(bootstrap, topic, partitions):
    """How many records each partition of `topic` holds, read from offset 0
    and checked to be consecutive."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    next_offsets = [0] * partitions
    idle = 0
    while idle < 3:
        messages = consumer.consume(num_messages=500, timeout=2)
        idle = 0 if messages else idle + 1
        for message in messages:
            assert message.error() is None, message.error()
            assert message.offset() == next_offsets[message.partition()]
            next_offsets[message.partition()] += 1
    consumer.close()
    return next_offsets


def served_topics(bootstrap):
    """How many of the test's topics the broker serves."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len([t for t in admin.list_topics(timeout=30).topics if t.startswith("t")])
