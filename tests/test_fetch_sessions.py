"""Incremental fetch sessions (KIP-227) with real clients: kafka-python's
consumer keeps one with the broker and reads every record once, in order,
while most of its partitions stay quiet; the followers of a three-node
cluster fetch in sessions and copy every record."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import registered, wait_for


@pytest.mark.proves("kafka-python: incremental fetch sessions (KIP-227)")
def test_kafka_python_reads_every_record_once_through_an_incremental_session(broker):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    topic, partitions = "sessions", 4
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    consumer.assign([KTopicPartition(topic, p) for p in range(partitions)])
    before = broker.metrics().get("keel_incremental_fetches_total", 0)
    sent = {p: [] for p in range(partitions)}
    read = {p: [] for p in range(partitions)}
    try:
        # Each round writes to one partition only: the others have nothing
        # new, and an incremental response leaves them out.
        for round_ in range(8):
            partition = round_ % partitions
            for i in range(50):
                value = f"{round_}-{i}".encode()
                producer.send(topic, value=value, partition=partition)
                sent[partition].append(value)
            producer.flush(timeout=30)
            deadline = time.monotonic() + 30
            while sum(map(len, read.values())) < sum(map(len, sent.values())):
                assert time.monotonic() < deadline, f"round {round_}: read {read}"
                for tp, records in consumer.poll(timeout_ms=200).items():
                    read[tp.partition].extend(r.value for r in records)
        # Nothing more arrives after the last round.
        assert not any(consumer.poll(timeout_ms=500).values())
    finally:
        consumer.close()
        producer.close()
    assert read == sent
    metrics = broker.metrics()
    assert metrics["keel_fetch_sessions"] >= 1
    assert metrics["keel_incremental_fetches_total"] - before >= 8, metrics


def test_followers_fetch_in_sessions_and_copy_every_record(cluster_factory):
    cluster = cluster_factory(3, extra_args=["--metrics-per-partition", "true"])
    registered(cluster, 3)
    bootstrap = ",".join(b.bootstrap for b in cluster.brokers.values())
    topic, partitions = "replicated", 12
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 3, config={"min.insync.replicas": "2"})]
                        )[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True})
    acknowledged = {}

    def delivered(error, message):
        assert error is None, error
        acknowledged[(message.partition(), message.offset())] = message.value()

    # Records go to a few partitions at a time, so most of each session is
    # quiet in every round.
    for round_ in range(6):
        for i in range(200):
            partition = (round_ * 2 + i % 2) % partitions
            producer.produce(topic, value=f"{round_}-{i}".encode(), partition=partition,
                             on_delivery=delivered)
        producer.flush(30)
    assert len(acknowledged) == 1200

    # Every leader holds a session for each of its two followers, and serves
    # them incrementally.
    def sessions_served():
        metrics = [b.metrics() for b in cluster.brokers.values()]
        return all(m["keel_fetch_sessions"] >= 2 and m["keel_incremental_fetches_total"] > 0
                   for m in metrics)
    wait_for("every leader serving its followers in sessions", sessions_served, timeout=30)

    # Every replica copied every record, and learnt the high watermark
    # that covers them, though most answers carried no partition at all.
    def replica_offsets(broker):
        metrics = broker.metrics()
        return {p: (metrics[f'keel_partition_log_end_offset{{topic="{topic}",partition="{p}"}}'],
                    metrics[f'keel_partition_high_watermark{{topic="{topic}",partition="{p}"}}'])
                for p in range(partitions)}
    ends = {p: 0.0 for p in range(partitions)}
    for partition, offset in acknowledged:
        ends[partition] = max(ends[partition], offset + 1.0)
    expected = {p: (end, end) for p, end in ends.items()}
    wait_for("every replica at the leader's log end and high watermark",
             lambda: all(replica_offsets(b) == expected for b in cluster.brokers.values()),
             timeout=30)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = {}
    deadline = time.monotonic() + 30
    while len(seen) < len(acknowledged) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen[(message.partition(), message.offset())] = message.value()
    consumer.close()
    assert seen == acknowledged
