"""Consumer groups under the consumer protocol of KIP-848, with
confluent-kafka (`group.protocol=consumer`) against a real keel process:
the broker computes the assignment and members reconcile through
ConsumerGroupHeartbeat. The checks are those of the classic tests: every
partition owned once when stable, every record read exactly once while
membership is steady and none skipped across leaves and crashes, and
committed offsets where the next member resumes.
"""

import time

import pytest
from confluent_kafka.admin import AdminClient

from group_support import (
    GROUP_BROKER_ARGS,
    PARTITIONS,
    Rounds,
    all_records,
    assert_read_exactly_once_by_owners,
    assert_static_restart_moved_nothing,
    balanced,
    committed,
    create_topic,
    produce,
    wait_balanced,
    wait_read,
)

CONSUMER_PROTOCOL_ARGS = GROUP_BROKER_ARGS + [
    "--group-consumer-heartbeat-interval-ms", "500",
    "--group-consumer-session-timeout-ms", "4000",
    "--group-consumer-min-session-timeout-ms", "1000",
    "--group-consumer-min-heartbeat-interval-ms", "100",
]


@pytest.fixture
def consumer_broker(broker_factory):
    return broker_factory(CONSUMER_PROTOCOL_ARGS)


@pytest.mark.proves(
    "confluent-kafka: consumer group, KIP-848 protocol",
)
@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_the_broker_assigns_and_members_read_each_record_once(consumer_broker, members, assignor):
    bootstrap = consumer_broker.bootstrap
    topic, group = f"kip848-{assignor}", f"kip848-{assignor}"
    create_topic(bootstrap, topic)
    trio = [members("confluent", bootstrap, group, topic, assignor=assignor, protocol="consumer")
            for _ in range(3)]
    wait_balanced(trio)
    assert all(len(m.owned()) == 2 for m in trio)

    keys = [f"k{i}" for i in range(1200)]
    produce(bootstrap, topic, keys)
    wait_read(trio, keys)
    time.sleep(1)
    assert balanced(trio), "the assignment moved while membership was steady"
    assert_read_exactly_once_by_owners(trio, keys)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
    assert listed[group].type.name == "CONSUMER"
    assert listed[group].state.name == "STABLE"
    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert described.partition_assignor == assignor
    assert len(described.members) == 3
    assigned = sorted(tp.partition for m in described.members
                      for tp in m.assignment.topic_partitions)
    assert assigned == list(range(PARTITIONS))
    # Described with ConsumerGroupDescribe: the type and each member's
    # target come with it.
    assert described.type.name == "CONSUMER"
    targets = sorted(tp.partition for m in described.members
                     for tp in m.target_assignment.topic_partitions)
    assert targets == list(range(PARTITIONS))


def test_leaves_and_crashes_move_partitions_without_skipping_records(consumer_broker, members):
    bootstrap = consumer_broker.bootstrap
    topic, group = "kip848-churn", "kip848-churn"
    create_topic(bootstrap, topic)
    rounds = Rounds(bootstrap, topic)
    produce_round, produced = rounds.produce, rounds.produced

    def member():
        return members("confluent", bootstrap, group, topic, protocol="consumer")

    first, second, third = member(), member(), member()
    wait_balanced([first, second, third])
    keys = produce_round("trio")
    wait_read([first, second, third], keys)
    assert_read_exactly_once_by_owners([first, second, third], keys)

    # A clean leave: its partitions are free at once.
    second.stop()
    wait_balanced([first, third], timeout=20)
    keys = produce_round("after-leave")
    wait_read([first, second, third], produced)

    # A crash: only the session timeout (4 s) frees its partitions.
    third.kill()
    wait_balanced([first], timeout=30)
    keys = produce_round("after-crash")
    everyone = [first, second, third]
    wait_read(everyone, produced)
    assert set(produced) <= {r[2] for r in all_records(everyone)}
    assert_read_exactly_once_by_owners([first], keys)

    # What the last member read is committed for the next one.
    first.stop()
    per_partition = len(produced) // PARTITIONS
    assert committed(bootstrap, group, topic) == {p: per_partition for p in range(PARTITIONS)}
    successor = member()
    wait_balanced([successor])
    keys = produce_round("successor")
    wait_read([successor], keys)
    time.sleep(1)
    read = [r[2] for r in successor.record_list()]
    assert sorted(read) == sorted(keys), "the successor resumed at the committed offsets"


def test_members_keep_their_partitions_across_a_broker_kill_and_restart(
        consumer_broker, members):
    """The group record holds the members, their epochs and assignments:
    the restarted coordinator knows them, and they go on with the same
    partitions without giving any up."""
    bootstrap = consumer_broker.bootstrap
    topic, group = "kip848-restart", "kip848-restart"
    create_topic(bootstrap, topic)
    pair = [members("confluent", bootstrap, group, topic, protocol="consumer")
            for _ in range(2)]
    wait_balanced(pair)
    time.sleep(1)
    owned = [m.owned() for m in pair]
    revocations = [m.revocations for m in pair]
    before = [f"b{i}" for i in range(300)]
    produce(bootstrap, topic, before)
    wait_read(pair, before)
    time.sleep(1)  # auto-commit every 200 ms

    consumer_broker.kill()
    consumer_broker.restart()
    after = [f"a{i}" for i in range(300)]
    produce(bootstrap, topic, after)
    wait_read(pair, after)
    time.sleep(2)  # a few heartbeats with the restarted coordinator
    assert [m.owned() for m in pair] == owned
    assert [m.revocations for m in pair] == revocations, "a member gave partitions up"
    read = [r[2] for r in all_records(pair)]
    assert sorted(read) == sorted(before + after), "a record was read twice or never"


@pytest.mark.proves(
    "confluent-kafka: static group membership",
)
def test_a_static_member_that_restarts_gets_its_partitions_back(consumer_broker, members):
    """A static member leaves for a while when it closes (epoch -2); its
    next incarnation takes its partitions over, and the other member is
    never asked to give any up."""
    bootstrap = consumer_broker.bootstrap
    topic, group = "kip848-static", "kip848-static"
    create_topic(bootstrap, topic)

    def static_member(instance_id):
        return members("confluent", bootstrap, group, topic, protocol="consumer",
                       instance_id=instance_id)

    first, other = static_member("static-a"), static_member("static-b")
    wait_balanced([first, other])
    time.sleep(1)
    owned_by_first, owned_by_other = first.owned(), other.owned()
    revocations = other.revocations

    first.stop()
    restarted = static_member("static-a")
    assert_static_restart_moved_nothing(
        bootstrap, topic, restarted, other, (owned_by_first, owned_by_other, revocations))


def test_a_member_subscribed_by_regular_expression_follows_new_topics(consumer_broker, members):
    bootstrap = consumer_broker.bootstrap
    for topic in ["rx-orders", "rx-payments", "unrelated"]:
        create_topic(bootstrap, topic, partitions=2)
    member = members("confluent", bootstrap, "kip848-regex", "^rx-.*", protocol="consumer")
    first = [f"o{i}" for i in range(20)]
    produce(bootstrap, "rx-orders", first, partitions=2)
    produce(bootstrap, "rx-payments", [f"p{i}" for i in range(20)], partitions=2)
    produce(bootstrap, "unrelated", [f"u{i}" for i in range(20)], partitions=2)
    wait_read([member], first + [f"p{i}" for i in range(20)])

    # A topic created later that matches is assigned at a heartbeat.
    create_topic(bootstrap, "rx-refunds", partitions=2)
    later = [f"r{i}" for i in range(20)]
    produce(bootstrap, "rx-refunds", later, partitions=2)
    wait_read([member], later, timeout=30)
    assert not any(key.startswith("u") for key in member.keys())


@pytest.mark.proves(
    "confluent-kafka: manual assignment with committed offsets",
)
def test_a_consumer_that_assigns_by_hand_commits_and_reads_back(consumer_broker):
    """Under group.protocol=consumer, a consumer that assigns partitions
    itself commits with its own member id and epoch -1; with no member in
    the group Kafka takes that commit, and so does Keel."""
    from confluent_kafka import Consumer, TopicPartition

    bootstrap = consumer_broker.bootstrap
    topic, group = "by-hand", "by-hand"
    create_topic(bootstrap, topic)
    keys = [f"h{i}" for i in range(40)]
    produce(bootstrap, topic, keys)

    def consumer():
        return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "group.protocol": "consumer", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})

    first = consumer()
    first.assign([TopicPartition(topic, 0, 0)])
    read = []
    deadline = time.monotonic() + 20
    while not read and time.monotonic() < deadline:
        message = first.poll(0.5)
        if message is not None and message.error() is None:
            read.append(message)
    assert read, "nothing read from partition 0"
    position = read[-1].offset() + 1
    [committed_partition] = first.commit(offsets=[TopicPartition(topic, 0, position)],
                                         asynchronous=False)
    assert committed_partition.error is None, committed_partition.error
    first.close()

    second = consumer()
    [fetched] = second.committed([TopicPartition(topic, 0)], timeout=10)
    second.close()
    assert fetched.offset == position


@pytest.mark.proves(
    "kafka-python: group configs",
)
def test_a_group_config_sets_its_members_session_timeout(consumer_broker, members):
    """A GROUP resource's consumer.session.timeout.ms is described, altered
    and applied: with 1.2 s instead of the broker's 4 s, a killed member
    is gone within 3 s. Share-group keys are refused by name."""
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    bootstrap = consumer_broker.bootstrap
    topic, group = "tuned", "tuned"
    create_topic(bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        def described():
            resource = KConfigResource(ConfigResourceType.GROUP, group)
            configs = admin.describe_configs([resource], config_filter="all")
            return {key: (entry["value"], entry["config_source"])
                    for key, entry in configs["group"][group].items()}

        assert described() == {
            "consumer.heartbeat.interval.ms": ("500", "STATIC_BROKER_CONFIG"),
            "consumer.session.timeout.ms": ("4000", "STATIC_BROKER_CONFIG"),
        }
        admin.alter_configs([KConfigResource(ConfigResourceType.GROUP, group,
                                             {"consumer.session.timeout.ms": "1200"})])
        assert described()["consumer.session.timeout.ms"] == ("1200", "DYNAMIC_GROUP_CONFIG")
        assert admin.list_config_resources(["GROUP"]) == {"group": [group]}
        refused = admin.alter_configs(
            [KConfigResource(ConfigResourceType.GROUP, group,
                             {"share.record.lock.duration.ms": "1000"})],
            raise_on_unknown=False)
        assert "share groups are not implemented" in str(refused), refused
        too_short = admin.alter_configs(
            [KConfigResource(ConfigResourceType.GROUP, group,
                             {"consumer.heartbeat.interval.ms": "1500"})],
            raise_on_unknown=False)
        assert "must be less than consumer.session.timeout.ms" in str(too_short), too_short
    finally:
        admin.close()

    member = members("confluent", bootstrap, group, topic, protocol="consumer")
    wait_balanced([member])
    client = AdminClient({"bootstrap.servers": bootstrap})
    member.kill()
    killed = time.monotonic()
    while client.describe_consumer_groups([group])[group].result(timeout=30).members:
        assert time.monotonic() - killed < 3.0, "the member outlived the group's session timeout"
        time.sleep(0.1)
