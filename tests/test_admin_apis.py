"""Admin APIs beyond creating topics and altering them one config at a time,
each through the clients that send it: the legacy whole-set AlterConfigs,
log directories, the metadata quorum and the listing of config resources."""

import asyncio
import os
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType

DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)
DEFAULT_MAX_MESSAGE_BYTES = "1048588"


def result(futures, key):
    return futures[key].result(timeout=30)


def describe_topic(client, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return result(client.describe_configs([resource]), resource)


@pytest.mark.proves(
    "confluent-kafka: alter configs (legacy)",
    "aiokafka: alter configs (legacy)",
    "kafka-python: alter configs (legacy)",
)
def test_legacy_alter_configs_replaces_the_whole_set(broker):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    result(client.create_topics([NewTopic("legacy", 1, 1, config={"retention.ms": "60000"})]),
           "legacy")

    # librdkafka: what the resource lists becomes the whole set.
    alter = ConfigResource(ResourceType.TOPIC, "legacy",
                           set_config={"max.message.bytes": "2000000"})
    result(client.alter_configs([alter]), alter)
    described = describe_topic(client, "legacy")
    assert described["max.message.bytes"].value == "2000000"
    assert described["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["retention.ms"].value == DEFAULT_RETENTION_MS
    assert described["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # validate_only checks and changes nothing.
    check = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "5000"})
    result(client.alter_configs([check], validate_only=True), check)
    assert describe_topic(client, "legacy")["retention.ms"].value == DEFAULT_RETENTION_MS

    bad = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "-7"})
    with pytest.raises(KafkaException) as invalid:
        result(client.alter_configs([bad]), bad)
    assert invalid.value.args[0].code() == 40  # INVALID_CONFIG
    assert "retention.ms" in invalid.value.args[0].str()
    unknown_key = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.msec": "1"})
    with pytest.raises(KafkaException) as unknown:
        result(client.alter_configs([unknown_key]), unknown_key)
    assert unknown.value.args[0].code() == 40
    assert "retention.msec" in unknown.value.args[0].str()
    missing = ConfigResource(ResourceType.TOPIC, "no-such-topic", set_config={"retention.ms": "1"})
    with pytest.raises(KafkaException) as no_topic:
        result(client.alter_configs([missing]), missing)
    assert no_topic.value.args[0].code() == 3  # UNKNOWN_TOPIC_OR_PARTITION
    # A refused change leaves the set as it was.
    assert describe_topic(client, "legacy")["max.message.bytes"].value == "2000000"

    # aiokafka sends only AlterConfigs.
    async def aiokafka_alter():
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource as AConfigResource
        from aiokafka.admin.config_resource import ConfigResourceType as AConfigResourceType

        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            responses = await admin.alter_configs([AConfigResource(
                AConfigResourceType.TOPIC, "legacy", {"retention.ms": "120000"})])
            return [(error_code, name) for response in responses
                    for error_code, _, _, name in response.resources]
        finally:
            await admin.close()

    assert asyncio.run(aiokafka_alter()) == [(0, "legacy")]
    described = describe_topic(client, "legacy")
    assert described["retention.ms"].value == "120000"
    assert described["max.message.bytes"].value == DEFAULT_MAX_MESSAGE_BYTES

    # kafka-python, forced to the legacy form, keeps the other overrides
    # by sending them along.
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient

    kafka_python = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        kafka_python.alter_configs(
            [KConfigResource(ConfigResourceType.TOPIC, "legacy", {"segment.ms": "3600000"})],
            incremental=False)
    finally:
        kafka_python.close()
    described = describe_topic(client, "legacy")
    assert described["segment.ms"].value == "3600000"
    assert described["retention.ms"].value == "120000"


@pytest.mark.proves(
    "kafka-python: describe log dirs, alter replica log dirs",
)
def test_log_dirs_are_described_with_sizes_and_moves_within_the_one_dir_succeed(broker):
    from kafka import TopicPartitionReplica
    from kafka.admin import KafkaAdminClient
    from test_clients import confluent_produce

    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    result(client.create_topics([NewTopic("sized", 2, 1)]), "sized")
    confluent_produce(broker.bootstrap, "sized", 200, partitions=2)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_log_dirs()
        assert [b["broker"] for b in described] == [1]
        dirs = described[0]["log_dirs"]
        assert len(dirs) == 1, dirs
        log_dir = dirs[0]
        assert log_dir["error_code"] == 0
        assert log_dir["log_dir"] == os.path.abspath(broker.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        sized = {t["name"]: t["partitions"] for t in log_dir["topics"]}["sized"]
        assert sorted(p["partition_index"] for p in sized) == [0, 1]
        # The size is that of the partition's segment files.
        for p in sized:
            on_disk = sum(f.stat().st_size
                          for f in (broker.data_dir / f"sized-{p['partition_index']}").glob("*.log"))
            assert p["partition_size"] == on_disk > 0, (p, on_disk)
        assert all(p["offset_lag"] == 0 and not p["is_future_key"] for p in sized)

        only = admin.describe_log_dirs({"sized": [1]})
        topics = [t for b in only for d in b["log_dirs"] for t in d["topics"]]
        assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in topics] \
            == [("sized", [1])]

        moves = admin.alter_replica_log_dirs({
            TopicPartitionReplica("sized", 0, 1): os.path.abspath(broker.data_dir),
            TopicPartitionReplica("sized", 7, 1): os.path.abspath(broker.data_dir),
            TopicPartitionReplica("sized", 1, 1): "/no/such/dir",
        })
        codes = {(r.topic, r.partition): error.errno for r, error in moves.items()}
        # A partition the cluster does not have; one it has that this broker
        # holds no replica of is in the cluster test below.
        assert codes == {("sized", 0): 0, ("sized", 7): 3, ("sized", 1): 57}, moves
    finally:
        admin.close()


@pytest.mark.proves(
    "kafka-python: describe metadata quorum",
)
def test_a_cluster_describes_its_quorum_and_log_dirs_from_every_broker(cluster_factory):
    """Four brokers, three of them voters: whichever broker is asked, the
    quorum's answer is the leader's, with every voter and the observer
    caught up; each broker describes the replicas it holds."""
    import time

    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin import DescribeQuorumRequest

    from test_cluster import registered

    cluster = cluster_factory(size=4, voters=3)
    controller = cluster.controller()
    registered(cluster, 4)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        def quorum():
            described = admin.describe_metadata_quorum()
            [topic] = described["topics"]
            assert topic["topic_name"] == "__cluster_metadata"
            [partition] = topic["partitions"]
            assert partition["error"] is None, partition
            return described, partition

        # The observer joins as a learner and catches up in its own time.
        deadline = time.monotonic() + 15
        described, partition = quorum()
        while time.monotonic() < deadline and not (
                len(partition["observers"]) == 1 and all(
                    partition["high_watermark"] - r["log_end_offset"] <= 5
                    for r in partition["current_voters"] + partition["observers"])):
            time.sleep(0.2)
            described, partition = quorum()
        assert partition["leader_id"] == controller.node_id
        assert partition["leader_epoch"] >= 1
        assert sorted(v["replica_id"] for v in partition["current_voters"]) == [1, 2, 3]
        assert [o["replica_id"] for o in partition["observers"]] == [4]
        now_ms = time.time() * 1000
        for replica in partition["current_voters"] + partition["observers"]:
            # Every replica answers the leader's heartbeats and holds the
            # log up to about the high watermark.
            assert abs(replica["log_end_offset"] - partition["high_watermark"]) <= 5, replica
            assert now_ms - 10_000 < replica["last_fetch_timestamp"] <= now_ms + 1_000, replica
            assert replica["last_caught_up_timestamp"] > now_ms - 10_000, replica
        assert sorted(n["node_id"] for n in described["nodes"]) == [1, 2, 3]
        ports = {n["node_id"]: n["listeners"][0]["port"] for n in described["nodes"]}
        assert ports == {i: cluster.brokers[i].port for i in (1, 2, 3)}

        def ask(node_id, topic_name="__cluster_metadata"):
            partition = DescribeQuorumRequest.TopicData.PartitionData(partition_index=0)
            request = DescribeQuorumRequest(topics=[DescribeQuorumRequest.TopicData(
                topic_name=topic_name, partitions=[partition])])

            async def send():
                return await admin._manager.send(request, node_id=node_id)
            [answer] = admin._manager.run(send).topics[0].partitions
            return answer

        # A follower voter and the observer ask the leader.
        for node_id in cluster.brokers:
            answer = ask(node_id)
            assert (answer.error_code, answer.leader_id) == (0, controller.node_id), answer
        assert ask(1, topic_name="orders").error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION

        from kafka import TopicPartitionReplica
        from kafka.admin import NewTopic as KNewTopic
        admin.create_topics([KNewTopic("spread", 4, 1)])
        leaders = {}
        deadline = time.monotonic() + 10
        while len(leaders) < 4 and time.monotonic() < deadline:
            for t in admin.describe_topics(["spread"]):
                leaders = {p["partition_index"]: p["leader_id"] for p in t["partitions"]
                           if p["leader_id"] >= 0}
            time.sleep(0.1)
        hosts = {p: leader for p, leader in leaders.items()}
        by_broker = {b["broker"]: b["log_dirs"][0] for b in admin.describe_log_dirs(["spread"])}
        assert sorted(by_broker) == [1, 2, 3, 4]
        for broker_id, log_dir in by_broker.items():
            held = sorted(p["partition_index"] for t in log_dir["topics"] for p in t["partitions"])
            assert held == sorted(p for p, b in hosts.items() if b == broker_id), by_broker
            assert log_dir["log_dir"] == str(cluster.brokers[broker_id].data_dir)
        elsewhere = next(b for b in cluster.brokers if b != hosts[0])
        moves = admin.alter_replica_log_dirs({TopicPartitionReplica("spread", 0, elsewhere):
                                              str(cluster.brokers[elsewhere].data_dir)})
        assert [error.errno for error in moves.values()] == [9]  # REPLICA_NOT_AVAILABLE
    finally:
        admin.close()


@pytest.mark.proves(
    "kafka-python: list config resources",
)
def test_config_resources_are_listed_by_type(broker):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import UnsupportedVersionError

    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    result(client.create_topics([NewTopic("listed-a", 1, 1), NewTopic("listed-b", 1, 1)]),
           "listed-a")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = admin.list_config_resources()
        assert sorted(listed["topic"]) == ["listed-a", "listed-b"], listed
        assert listed["broker"] == ["1"]
        assert not listed.get("group") and not listed.get("client_metrics"), listed
        assert admin.list_config_resources(["BROKER"]) == {"broker": ["1"]}
        # Broker loggers have no configs in Keel: refused as Kafka refuses
        # a type it does not support.
        with pytest.raises(UnsupportedVersionError):
            admin.list_config_resources(["BROKER_LOGGER"])
    finally:
        admin.close()


@pytest.mark.proves(
    "confluent-kafka: authorized operations (KIP-430)",
    "kafka-python: authorized operations (KIP-430)",
)
def test_without_an_authorizer_every_operation_is_authorized(broker):
    """KIP-430: asked for, the authorized operations are every operation the
    resource supports, as Kafka answers without an authorizer."""
    from confluent_kafka import (
        ConsumerGroupTopicPartitions, KafkaError, TopicCollection, TopicPartition)
    from confluent_kafka.admin import AclOperation as Op

    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    result(client.create_topics([NewTopic("ops", 1, 1)]), "ops")

    described = client.describe_topics(TopicCollection(["ops"]),
                                       include_authorized_operations=True)
    assert set(described["ops"].result(timeout=30).authorized_operations) == {
        Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE,
        Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS}
    not_asked = client.describe_topics(TopicCollection(["ops"]))
    assert not not_asked["ops"].result(timeout=30).authorized_operations

    cluster = client.describe_cluster(include_authorized_operations=True).result(timeout=30)
    assert set(cluster.authorized_operations) == {
        Op.CREATE, Op.ALTER, Op.DESCRIBE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS,
        Op.ALTER_CONFIGS, Op.IDEMPOTENT_WRITE}
    assert not client.describe_cluster().result(timeout=30).authorized_operations

    # A group with committed offsets and no members. The first request for
    # a group creates __consumer_offsets, whose coordinator answers
    # COORDINATOR_LOAD_IN_PROGRESS (retriable) until it has loaded; the
    # admin client reports that per partition and leaves the retry to us.
    committed = ConsumerGroupTopicPartitions("ops-group", [TopicPartition("ops", 0, 0)])
    deadline = time.monotonic() + 15
    while True:
        altered = client.alter_consumer_group_offsets([committed])["ops-group"].result(30)
        errors = [p.error for p in altered.topic_partitions if p.error is not None]
        if not errors:
            break
        loading = all(e.code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS for e in errors)
        assert loading and time.monotonic() < deadline, errors
        time.sleep(0.1)
    group = client.describe_consumer_groups(
        ["ops-group"], include_authorized_operations=True)["ops-group"].result(timeout=30)
    assert set(group.authorized_operations) == {
        Op.READ, Op.DELETE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS}

    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        kp_group = admin.describe_groups(["ops-group"],
                                         include_authorized_operations=True)["ops-group"]
        assert sorted(kp_group["authorized_operations"]) == [
            "ALTER_CONFIGS", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ"], kp_group
    finally:
        admin.close()


@pytest.mark.proves(
    "confluent-kafka: every Kafka 4 topic config",
)
def test_every_kafka_topic_config_is_accepted_checked_and_described(broker):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    overrides = {
        "cleanup.policy": "compact",
        "compression.zstd.level": "5",
        "file.delete.delay.ms": "1000",
        "follower.replication.throttled.replicas": "*",
        "local.retention.ms": "-2",
        "max.compaction.lag.ms": "600000",
        "message.timestamp.after.max.ms": "60000",
        "message.timestamp.before.max.ms": "86400000",
        "min.compaction.lag.ms": "1000",
        "preallocate": "true",
        "remote.storage.enable": "false",
        "segment.index.bytes": "1048576",
        "segment.jitter.ms": "5000",
    }
    result(client.create_topics([NewTopic("every-config", 1, 1, config=overrides)]),
           "every-config")
    described = describe_topic(client, "every-config")
    assert len(described) == 33, sorted(described)
    for key, value in overrides.items():
        assert described[key].value == value, key
        assert described[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, key
    assert described["message.timestamp.type"].source == ConfigSource.DEFAULT_CONFIG.value
    assert described["compression.lz4.level"].value == "9"

    def refused(config):
        resource = ConfigResource(ResourceType.TOPIC, "every-config", incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in config.items()])
        with pytest.raises(KafkaException) as error:
            result(client.incremental_alter_configs([resource]), resource)
        assert error.value.args[0].code() == 40, error.value  # INVALID_CONFIG
        return error.value.args[0].str()

    assert "Tiered Storage" in refused({"remote.storage.enable": "true"})
    assert "message.format.version" in refused({"message.format.version": "3.0"})
    assert "conflict" in refused({"min.compaction.lag.ms": "700000"})
    assert "compression.gzip.level" in refused({"compression.gzip.level": "10"})

    # An empty cleanup policy (Kafka 4): neither retention nor compaction.
    empty = ConfigResource(ResourceType.TOPIC, "every-config", incremental_configs=[
        ConfigEntry("cleanup.policy", "", incremental_operation=AlterConfigOpType.SET)])
    result(client.incremental_alter_configs([empty]), empty)
    assert describe_topic(client, "every-config")["cleanup.policy"].value == ""

    # Records more than message.timestamp.after.max.ms ahead are refused.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    delivered = []
    ahead_ms = int(time.time() * 1000) + 600_000
    producer.produce("every-config", key=b"k", value=b"v", timestamp=ahead_ms,
                     on_delivery=lambda e, m: delivered.append(e and e.code()))
    assert producer.flush(30) == 0
    producer.produce("every-config", key=b"k", value=b"v",
                     on_delivery=lambda e, m: delivered.append(e and e.code()))
    assert producer.flush(30) == 0
    assert delivered == [KafkaError.INVALID_TIMESTAMP, None]


@pytest.mark.proves(
    "confluent-kafka: elect leaders",
    "kafka-python: elect leaders",
    "kafka-python: describe topic partitions (KIP-966)",
)
def test_elect_leaders_and_describe_topic_partitions_through_the_admin_clients(cluster_factory):
    """Leadership moved off the preferred replicas comes back with a
    preferred ElectLeaders from kafka-python and from confluent-kafka, and
    kafka-python's DescribeTopicPartitions pages through the partitions."""
    from confluent_kafka import TopicPartition
    from confluent_kafka import ElectionType
    from kafka.admin import KafkaAdminClient
    from test_replication import REPLICATION_ARGS, create, describe, move_leader
    from test_cluster import registered, wait_for

    cluster = cluster_factory(3, extra_args=[*REPLICATION_ARGS,
                                             "--auto-leader-rebalance-enable", "false"])
    registered(cluster, 3)
    create(cluster, "elected", partitions=3)
    preferred = {p: info.replicas[0] for p, info in describe(cluster, "elected").items()}

    def move_away(partition):
        info = describe(cluster, "elected")[partition]
        target = next(r for r in info.replicas if r != info.leader)
        answer = move_leader(cluster.brokers[1], "elected", partition, target)
        assert answer.startswith(f"leader {target} "), answer
        wait_for(f"broker {target} leads {partition}",
                 lambda: describe(cluster, "elected")[partition].leader == target)

    def leaders():
        return {p: info.leader for p, info in describe(cluster, "elected").items()}

    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        move_away(0)
        move_away(1)
        admin.elect_leaders(0, {"elected": [0, 1]})
        wait_for("preferred leaders again", lambda: leaders() == preferred)

        move_away(2)
        client = AdminClient({"bootstrap.servers": cluster.bootstrap})
        elected = client.elect_leaders(ElectionType.PREFERRED,
                                       [TopicPartition("elected", 2)]).result(timeout=30)
        assert all(error is None for error in elected.values()), elected
        wait_for("preferred leaders again", lambda: leaders() == preferred)

        first = admin.describe_topic_partitions(["elected"], response_partition_limit=2)
        [topic] = first["topics"]
        assert [p["partition_index"] for p in topic["partitions"]] == [0, 1]
        assert first["next_cursor"] == {"topic_name": "elected", "partition_index": 2}
        rest = admin.describe_topic_partitions(["elected"], cursor=first["next_cursor"])
        [p2] = rest["topics"][0]["partitions"]
        assert (p2["partition_index"], p2["leader_id"]) == (2, preferred[2])
        assert sorted(p2["isr_nodes"]) == [1, 2, 3]
        assert rest["next_cursor"] is None
    finally:
        admin.close()
