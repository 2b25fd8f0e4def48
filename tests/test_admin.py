"""Admin operations through the admin clients of confluent-kafka and
kafka-python: topics, partitions, configs, cluster, records, offsets, and
retention observed from outside."""

import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from test_clients import confluent_produce, confluent_read_all


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def result(futures, key):
    return futures[key].result(timeout=30)


@pytest.mark.proves(
    "confluent-kafka: create, grow and delete topics",
)
def test_create_describe_grow_and_delete_topics(broker):
    client = admin(broker)
    futures = client.create_topics([
        NewTopic("orders", num_partitions=3, replication_factor=1,
                 config={"retention.ms": "3600000"}),
    ])
    result(futures, "orders")
    with pytest.raises(KafkaException) as exists:
        result(client.create_topics([NewTopic("orders", 1, 1)]), "orders")
    assert exists.value.args[0].code() == 36  # TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as invalid:
        result(client.create_topics([NewTopic("bad name", 1, 1)]), "bad name")
    assert invalid.value.args[0].code() == 17  # INVALID_TOPIC_EXCEPTION
    with pytest.raises(KafkaException) as bad_config:
        result(client.create_topics([NewTopic("cfg", 1, 1, config={"retention.ms": "x"})]), "cfg")
    assert bad_config.value.args[0].code() == 40  # INVALID_CONFIG
    assert "retention.ms" in bad_config.value.args[0].str()

    topics = client.list_topics(timeout=10).topics
    assert len(topics["orders"].partitions) == 3

    result(client.create_partitions([NewPartitions("orders", 5)]), "orders")
    assert len(client.list_topics("orders", timeout=10).topics["orders"].partitions) == 5
    with pytest.raises(KafkaException):
        result(client.create_partitions([NewPartitions("orders", 2)]), "orders")

    result(client.delete_topics(["orders"]), "orders")
    deadline = time.monotonic() + 10
    while "orders" in client.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "orders" not in client.list_topics(timeout=10).topics
    # The name can be used again at once, with fresh data.
    result(client.create_topics([NewTopic("orders", 1, 1)]), "orders")
    assert confluent_read_all(broker.bootstrap, "orders", 0, partitions=1, timeout=5) == []


@pytest.mark.proves(
    "confluent-kafka: describe configs",
    "confluent-kafka: alter configs (incremental)",
)
def test_describe_and_incrementally_alter_topic_configs(broker):
    client = admin(broker)
    result(client.create_topics([NewTopic("configured", 1, 1)]), "configured")
    resource = ConfigResource(ResourceType.TOPIC, "configured")

    described = result(client.describe_configs([resource]), resource)
    assert described["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert described["cleanup.policy"].value == "delete"

    alter = ConfigResource(ResourceType.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    result(client.incremental_alter_configs([alter]), alter)
    described = result(client.describe_configs([resource]), resource)
    assert described["retention.ms"].value == "60000"
    assert described["max.message.bytes"].value == "2000000"

    reset = ConfigResource(ResourceType.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    result(client.incremental_alter_configs([reset]), reset)
    described = result(client.describe_configs([resource]), resource)
    assert described["retention.ms"].value == str(7 * 24 * 3600 * 1000)

    bad = ConfigResource(ResourceType.TOPIC, "configured", incremental_configs=[
        ConfigEntry("retention.ms", "-7", incremental_operation=AlterConfigOpType.SET),
    ])
    with pytest.raises(KafkaException) as error:
        result(client.incremental_alter_configs([bad]), bad)
    assert "retention.ms" in error.value.args[0].str()

    broker_resource = ConfigResource(ResourceType.BROKER, "1")
    described = result(client.describe_configs([broker_resource]), broker_resource)
    assert described["num.partitions"].value == "4"


@pytest.mark.proves(
    "confluent-kafka: describe cluster",
)
def test_describe_cluster(broker):
    client = admin(broker)
    cluster = client.describe_cluster().result(timeout=10)
    assert cluster.controller.id == 1
    assert [node.id for node in cluster.nodes] == [1]
    assert cluster.cluster_id


@pytest.mark.proves(
    "confluent-kafka: list offsets, delete records",
)
def test_list_offsets_and_delete_records(broker):
    client = admin(broker)
    result(client.create_topics([NewTopic("records", 1, 1)]), "records")
    confluent_produce(broker.bootstrap, "records", 100, partitions=1)
    tp = TopicPartition("records", 0)

    def offset(spec):
        return client.list_offsets({tp: spec})[tp].result(timeout=10).offset

    assert offset(OffsetSpec.earliest()) == 0
    assert offset(OffsetSpec.latest()) == 100
    # confluent_produce stamps message i with BASE_TS + i.
    from test_clients import BASE_TS
    assert offset(OffsetSpec.for_timestamp(BASE_TS + 40)) == 40

    deleted = client.delete_records([TopicPartition("records", 0, 30)])
    assert deleted[TopicPartition("records", 0, 30)].result(timeout=10).low_watermark == 30
    assert offset(OffsetSpec.earliest()) == 30
    broker.kill()
    broker.restart()
    client = admin(broker)
    assert offset(OffsetSpec.earliest()) == 30
    assert offset(OffsetSpec.latest()) == 100


@pytest.mark.proves(
    "kafka-python: create, grow and delete topics",
    "kafka-python: describe configs",
)
def test_kafka_python_admin(broker):
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    client.create_topics([KNewTopic("kp-admin", 2, 1)])
    assert "kp-admin" in client.list_topics()
    configs = client.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
    assert configs
    client.delete_topics(["kp-admin"])
    deadline = time.monotonic() + 10
    while "kp-admin" in client.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "kp-admin" not in client.list_topics()
    client.close()


def test_retention_deletes_old_segments_while_running(broker_factory):
    broker = broker_factory(["--log-retention-check-interval-ms", "200"], name="retention")
    client = admin(broker)
    topic = NewTopic("short", 1, 1, config={"segment.bytes": "20000", "retention.bytes": "60000",
                                             "retention.ms": "-1"})
    result(client.create_topics([topic]), "short")
    confluent_produce(broker.bootstrap, "short", 5_000, partitions=1, **{"batch.size": 8000})
    tp = TopicPartition("short", 0)

    def earliest():
        return client.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=10).offset

    # Wait until retention has run and settled (two passes see the same start).
    deadline = time.monotonic() + 15
    previous, current = -1, earliest()
    while time.monotonic() < deadline and (current == 0 or current != previous):
        time.sleep(0.5)
        previous, current = current, earliest()
    earliest = current
    assert earliest > 0, "retention.bytes never deleted a segment"
    records = confluent_read_all(broker.bootstrap, "short", 5_000 - earliest, partitions=1)
    assert len(records) == 5_000 - earliest
    assert records[0]["offset"] == earliest
