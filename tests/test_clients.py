"""Real clients against a real keel process.

Each client creates a topic with several partitions, produces 100k messages
with keys, headers and timestamps, reads them all back from the beginning
and compares every field; then the broker is killed with SIGKILL, restarted
on the same data directory, and everything is read and compared again.
Each compression codec is produced and read back by every client.
"""

import asyncio
import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

N = 100_000
PARTITIONS = 4
BASE_TS = 1_700_000_000_000
CODECS = ["gzip", "snappy", "lz4", "zstd"]


def expected(i, client, partitions=PARTITIONS):
    """The message number `i` as produced by `client`."""
    return {
        "key": f"key-{i}".encode(),
        "value": f"value-{i}-{'x' * (i % 64)}".encode(),
        "headers": [("seq", str(i).encode()), ("client", client.encode())],
        "timestamp": BASE_TS + i,
        "partition": i % partitions,
    }


def create_topic(bootstrap, topic, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(timeout=30)


def verify(records, client, count, delivered=None, check_timestamps=True, check_headers=True,
           partitions=PARTITIONS):
    """Every produced message is there once, intact, in per-partition order."""
    assert len(records) == count, f"read {len(records)} records, expected {count}"
    by_key = {}
    for r in records:
        assert r["key"] not in by_key, f"duplicate {r['key']!r}"
        by_key[r["key"]] = r
    for i in range(count):
        want = expected(i, client, partitions)
        got = by_key.get(want["key"])
        assert got is not None, f"message {i} missing"
        assert got["value"] == want["value"], f"message {i} value"
        assert got["partition"] == want["partition"], f"message {i} partition"
        if check_headers:
            assert list(got["headers"]) == want["headers"], f"message {i} headers"
        if check_timestamps:
            assert got["timestamp"] == want["timestamp"], f"message {i} timestamp"
        if delivered is not None:
            assert delivered[i] == (got["partition"], got["offset"]), f"message {i} offset"
    for p in range(partitions):
        offsets = [r["offset"] for r in records if r["partition"] == p]
        seqs = [int(r["key"].split(b"-")[1]) for r in sorted(
            (r for r in records if r["partition"] == p), key=lambda r: r["offset"])]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert seqs == sorted(seqs), f"partition {p} is out of produce order"


# --- confluent-kafka (librdkafka) ---------------------------------------------


def confluent_produce(bootstrap, topic, count, client="confluent", partitions=PARTITIONS,
                      **config):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **config,
    })
    delivered, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[int(msg.key().split(b"-")[1])] = (msg.partition(), msg.offset())

    for i in range(count):
        m = expected(i, client, partitions)
        while True:
            try:
                producer.produce(topic, key=m["key"], value=m["value"], partition=m["partition"],
                                 headers=m["headers"], timestamp=m["timestamp"],
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:5]
    assert len(delivered) == count
    return delivered


def confluent_read_all(bootstrap, topic, count, partitions=PARTITIONS, timeout=60):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"verify-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records, at_eof = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(records) < count or len(at_eof) < partitions):
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition())
                    continue
                raise AssertionError(msg.error())
            at_eof.discard(msg.partition())
            records.append({
                "key": msg.key(), "value": msg.value(), "headers": msg.headers() or [],
                "timestamp": msg.timestamp()[1], "partition": msg.partition(),
                "offset": msg.offset(),
            })
    consumer.close()
    return records


@pytest.mark.proves(
    "confluent-kafka: produce",
    "confluent-kafka: consume",
    "confluent-kafka: data survives a broker SIGKILL",
)
@pytest.mark.slow
def test_confluent_kafka_100k_round_trip_survives_sigkill(broker):
    topic = "confluent-100k"
    create_topic(broker.bootstrap, topic)
    delivered = confluent_produce(broker.bootstrap, topic, N)
    first = confluent_read_all(broker.bootstrap, topic, N)
    verify(first, "confluent", N, delivered)

    broker.kill()
    broker.restart()
    second = confluent_read_all(broker.bootstrap, topic, N)
    verify(second, "confluent", N, delivered)
    key = lambda r: (r["partition"], r["offset"])
    assert sorted(first, key=key) == sorted(second, key=key)


@pytest.mark.proves(
    "confluent-kafka: compression codecs",
)
@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_compression(broker, codec):
    topic = f"confluent-{codec}"
    create_topic(broker.bootstrap, topic)
    delivered = confluent_produce(broker.bootstrap, topic, 5_000, **{"compression.type": codec})
    verify(confluent_read_all(broker.bootstrap, topic, 5_000), "confluent", 5_000, delivered)


# --- kafka-python ------------------------------------------------------------


def kafka_python_produce(bootstrap, topic, count, client="kafka-python", **config):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1, **config)
    futures = []
    for i in range(count):
        m = expected(i, client)
        futures.append(producer.send(topic, key=m["key"], value=m["value"],
                                     partition=m["partition"], headers=m["headers"],
                                     timestamp_ms=m["timestamp"]))
    producer.flush(timeout=120)
    delivered = {}
    for i, future in enumerate(futures):
        metadata = future.get(timeout=60)
        delivered[i] = (metadata.partition, metadata.offset)
    producer.close()
    return delivered


def kafka_python_read_all(bootstrap, topic, count, partitions=PARTITIONS, timeout=120):
    from kafka import KafkaConsumer, TopicPartition as KTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    tps = [KTopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=1000, max_records=10_000).items():
            for msg in batch:
                records.append({
                    "key": msg.key, "value": msg.value, "headers": list(msg.headers),
                    "timestamp": msg.timestamp, "partition": msg.partition, "offset": msg.offset,
                })
    consumer.close()
    return records


@pytest.mark.proves(
    "kafka-python: produce",
    "kafka-python: consume",
    "kafka-python: data survives a broker SIGKILL",
)
@pytest.mark.slow
def test_kafka_python_100k_round_trip_survives_sigkill(broker):
    topic = "kafka-python-100k"
    create_topic(broker.bootstrap, topic)
    delivered = kafka_python_produce(broker.bootstrap, topic, N)
    verify(kafka_python_read_all(broker.bootstrap, topic, N), "kafka-python", N, delivered)
    broker.kill()
    broker.restart()
    verify(kafka_python_read_all(broker.bootstrap, topic, N), "kafka-python", N, delivered)


@pytest.mark.proves(
    "kafka-python: compression codecs",
)
@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_compression(broker, codec):
    topic = f"kafka-python-{codec}"
    create_topic(broker.bootstrap, topic)
    delivered = kafka_python_produce(broker.bootstrap, topic, 5_000, compression_type=codec)
    verify(kafka_python_read_all(broker.bootstrap, topic, 5_000), "kafka-python", 5_000, delivered)


# --- aiokafka (pins Metadata v1, Fetch v4, Produce v7) ------------------------


async def aiokafka_produce(bootstrap, topic, count, client="aiokafka", **config):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            m = expected(i, client)
            futures.append(await producer.send(topic, key=m["key"], value=m["value"],
                                               partition=m["partition"], headers=m["headers"],
                                               timestamp_ms=m["timestamp"]))
        results = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {i: (md.partition, md.offset) for i, md in enumerate(results)}


async def aiokafka_read_all(bootstrap, topic, count, partitions=PARTITIONS, timeout=120):
    from aiokafka import AIOKafkaConsumer, TopicPartition as ATopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [ATopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, batch in batches.items():
                for msg in batch:
                    records.append({
                        "key": msg.key, "value": msg.value, "headers": list(msg.headers),
                        "timestamp": msg.timestamp, "partition": msg.partition,
                        "offset": msg.offset,
                    })
        return records
    finally:
        await consumer.stop()


@pytest.mark.proves(
    "aiokafka: produce",
    "aiokafka: consume",
    "aiokafka: data survives a broker SIGKILL",
)
@pytest.mark.slow
def test_aiokafka_100k_round_trip_survives_sigkill(broker):
    topic = "aiokafka-100k"
    create_topic(broker.bootstrap, topic)
    delivered = asyncio.run(aiokafka_produce(broker.bootstrap, topic, N))
    verify(asyncio.run(aiokafka_read_all(broker.bootstrap, topic, N)), "aiokafka", N, delivered)
    broker.kill()
    broker.restart()
    verify(asyncio.run(aiokafka_read_all(broker.bootstrap, topic, N)), "aiokafka", N, delivered)


@pytest.mark.proves(
    "aiokafka: compression codecs",
)
@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_compression(broker, codec):
    topic = f"aiokafka-{codec}"
    create_topic(broker.bootstrap, topic)
    delivered = asyncio.run(aiokafka_produce(broker.bootstrap, topic, 5_000,
                                             compression_type=codec))
    records = asyncio.run(aiokafka_read_all(broker.bootstrap, topic, 5_000))
    verify(records, "aiokafka", 5_000, delivered)


# --- kcat (librdkafka 2.0 from Debian) ---------------------------------------


def kcat_produce(bootstrap, topic, count, codec=None):
    """kcat sets one header list per run and stamps CreateTime itself, so
    each partition gets one run and timestamps are checked against the
    production window instead of exact values."""
    for p in range(PARTITIONS):
        lines = "".join(
            f"{m['key'].decode()}\t{m['value'].decode()}\n"
            for m in (expected(i, "kcat") for i in range(p, count, PARTITIONS))
        )
        args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", str(p), "-K", "\t",
                "-H", "client=kcat", "-X", "acks=all"]
        if codec:
            args += ["-z", codec]
        subprocess.run(args, input=lines.encode(), check=True, timeout=120)


def kcat_read_all(bootstrap, topic):
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J"],
        capture_output=True, check=True, timeout=180,
    ).stdout.decode()
    records = []
    for line in out.splitlines():
        m = json.loads(line)
        headers = m.get("headers") or []
        records.append({
            "key": m["key"].encode(), "value": m["payload"].encode(),
            "headers": [(headers[i], headers[i + 1].encode()) for i in range(0, len(headers), 2)],
            "timestamp": m["ts"], "partition": m["partition"], "offset": m["offset"],
        })
    return records


def verify_kcat(records, count, started_ms, finished_ms):
    for r in records:
        assert r["headers"] == [("client", b"kcat")]
        assert started_ms - 1000 <= r["timestamp"] <= finished_ms + 1000
    verify(records, "kcat", count, check_timestamps=False, check_headers=False)


@pytest.mark.proves(
    "kcat: produce",
    "kcat: consume",
    "kcat: data survives a broker SIGKILL",
)
@pytest.mark.slow
def test_kcat_100k_round_trip_survives_sigkill(broker):
    topic = "kcat-100k"
    create_topic(broker.bootstrap, topic)
    started = int(time.time() * 1000)
    kcat_produce(broker.bootstrap, topic, N)
    finished = int(time.time() * 1000)
    first = kcat_read_all(broker.bootstrap, topic)
    verify_kcat(first, N, started, finished)
    broker.kill()
    broker.restart()
    second = kcat_read_all(broker.bootstrap, topic)
    verify_kcat(second, N, started, finished)
    key = lambda r: (r["partition"], r["offset"])
    assert sorted(first, key=key) == sorted(second, key=key)


@pytest.mark.proves(
    "kcat: compression codecs",
)
@pytest.mark.parametrize("codec", CODECS)
def test_kcat_compression(broker, codec):
    topic = f"kcat-{codec}"
    create_topic(broker.bootstrap, topic)
    started = int(time.time() * 1000)
    kcat_produce(broker.bootstrap, topic, 5_000, codec=codec)
    finished = int(time.time() * 1000)
    verify_kcat(kcat_read_all(broker.bootstrap, topic), 5_000, started, finished)


@pytest.mark.proves(
    "confluent-kafka: per-record errors (KIP-467)",
)
def test_records_a_topic_refuses_are_named_to_the_producer(broker):
    """A compacted topic refuses records without a key. The broker names
    them in the produce response (KIP-467), so librdkafka fails those with
    INVALID_RECORD and the rest of their batch with "an invalid record in
    the same batch"; nothing of the batch is stored."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("keyed-only", 1, 1, config={"cleanup.policy": "compact"})])[
        "keyed-only"].result(timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200})
    delivered = []
    for i, key in enumerate([b"a", None, b"c", None]):
        producer.produce("keyed-only", key=key, value=b"v%d" % i,
                         on_delivery=lambda e, m: delivered.append((m.key(), e and e.code())))
    assert producer.flush(30) == 0
    assert sorted(delivered, key=str) == sorted([
        (b"a", KafkaError._INVALID_DIFFERENT_RECORD),
        (None, KafkaError.INVALID_RECORD),
        (b"c", KafkaError._INVALID_DIFFERENT_RECORD),
        (None, KafkaError.INVALID_RECORD),
    ], key=str)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "keyed-only"})
    low, high = consumer.get_watermark_offsets(TopicPartition("keyed-only", 0), timeout=10)
    consumer.close()
    assert (low, high) == (0, 0)


def stored_codecs(data_dir, topic, partitions=PARTITIONS):
    """The codec of every batch in a topic's segment files (the low three
    bits of a v2 batch's attributes)."""
    import struct
    from pathlib import Path

    codecs = []
    for p in range(partitions):
        for segment in sorted(Path(data_dir, f"{topic}-{p}").glob("*.log")):
            data = segment.read_bytes()
            position = 0
            while position + 61 <= len(data):
                (length,) = struct.unpack_from(">i", data, position + 8)
                (attributes,) = struct.unpack_from(">h", data, position + 21)
                codecs.append(attributes & 0x07)
                position += 12 + length
    return codecs


@pytest.mark.proves(
    "confluent-kafka: broker recompression (topic compression.type)",
    "kafka-python: broker recompression (topic compression.type)",
    "aiokafka: broker recompression (topic compression.type)",
)
@pytest.mark.parametrize("topic_codec, number", [("zstd", 4), ("uncompressed", 0)])
def test_a_topic_codec_recompresses_what_every_client_sends(broker, topic_codec, number):
    """compression.type other than producer: batches sent in any codec are
    stored in the topic's, and every client reads them back intact."""
    topic = f"recompressed-{topic_codec}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1,
                                  config={"compression.type": topic_codec})])[topic].result(30)
    delivered = confluent_produce(broker.bootstrap, topic, 2_000, **{"compression.type": "gzip"})
    verify(confluent_read_all(broker.bootstrap, topic, 2_000), "confluent", 2_000, delivered)
    verify(kafka_python_read_all(broker.bootstrap, topic, 2_000), "confluent", 2_000, delivered)
    verify(asyncio.run(aiokafka_read_all(broker.bootstrap, topic, 2_000)), "confluent", 2_000,
           delivered)
    codecs = stored_codecs(broker.data_dir, topic)
    assert codecs and set(codecs) == {number}, codecs
