"""Consumer groups with real clients against a real keel process.

Members are separate processes (`group_member.py`) running confluent-kafka,
kafka-python or aiokafka, so that they can leave cleanly (SIGTERM) or crash
(SIGKILL). The tests check what group users rely on: every partition is
owned by exactly one member once the group is stable, every record is read
exactly once while membership is steady and at least once across a crash,
committed offsets are where the next member (or the next broker process)
resumes, and the admin clients can list, describe and delete groups.
"""


import subprocess
import time
import uuid

import pytest
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
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
    wait_until,
)


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(GROUP_BROKER_ARGS)


@pytest.mark.proves(
    "confluent-kafka: consumer group, classic protocol",
)
@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_members_split_the_partitions_and_read_each_record_once(group_broker, members, assignor):
    topic = f"split-{assignor}"
    create_topic(group_broker.bootstrap, topic)
    group = f"split-{assignor}"
    trio = [members("confluent", group_broker.bootstrap, group, topic, assignor=assignor)
            for _ in range(3)]
    wait_balanced(trio)
    assert all(len(m.owned()) == 2 for m in trio)

    keys = [f"k{i}" for i in range(3000)]
    produce(group_broker.bootstrap, topic, keys)
    wait_read(trio, keys)
    time.sleep(0.5)
    assert balanced(trio), "the assignment moved while membership was steady"
    assert_read_exactly_once_by_owners(trio, keys)


@pytest.mark.parametrize("assignor,clients", [
    ("roundrobin", ["confluent", "kafka-python", "aiokafka"]),
    ("range", ["confluent", "kafka-python", "aiokafka"]),
    ("cooperative-sticky", ["confluent", "kafka-python"]),
])
@pytest.mark.proves(
    "confluent-kafka: consumer group, classic protocol",
    "kafka-python: consumer group, classic protocol",
    "aiokafka: consumer group, classic protocol",
)
def test_clients_of_different_libraries_share_a_group(group_broker, members, assignor, clients):
    topic = f"mixed-{assignor}"
    create_topic(group_broker.bootstrap, topic)
    group = f"mixed-{assignor}"
    mixed = [members(client, group_broker.bootstrap, group, topic, assignor=assignor)
             for client in clients]
    wait_balanced(mixed)

    keys = [f"m{i}" for i in range(600)]
    produce(group_broker.bootstrap, topic, keys)
    wait_read(mixed, keys)
    assert balanced(mixed)
    assert_read_exactly_once_by_owners(mixed, keys)


def test_groups_on_a_three_broker_cluster_find_their_coordinators(cluster_factory, members):
    """Groups land on the leaders of their `__consumer_offsets` partitions,
    spread over the brokers; members bootstrapped from any broker find
    them, and committed offsets are fetched from the right coordinator."""
    cluster = cluster_factory(3, extra_args=GROUP_BROKER_ARGS)
    bootstrap = cluster.brokers[1].bootstrap
    topic = "cluster-groups"
    create_topic(bootstrap, topic)
    produced = []
    coordinators = set()
    for round_, group in enumerate(f"cluster-group-{i}" for i in range(4)):
        pair = [members("confluent", broker.bootstrap, group, topic, assignor="roundrobin")
                for broker in list(cluster.brokers.values())[:2]]
        wait_balanced(pair)
        keys = [f"c{round_}-{i}" for i in range(600)]
        produce(bootstrap, topic, keys)
        produced.extend(keys)
        wait_read(pair, produced)
        assert_read_exactly_once_by_owners(pair, keys)
        for member in pair:
            member.stop()
        assert committed(bootstrap, group, topic) == {
            p: 100 * (round_ + 1) for p in range(PARTITIONS)}
        admin = AdminClient({"bootstrap.servers": bootstrap})
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        coordinators.add(described.coordinator.id)
    assert len(coordinators) > 1, "every group landed on one broker"


def test_joins_leaves_and_crashes_rebalance_without_losing_records(group_broker, members):
    topic, group = "churn", "churn"
    create_topic(group_broker.bootstrap, topic)
    bootstrap = group_broker.bootstrap
    rounds = Rounds(bootstrap, topic)
    produce_round, produced = rounds.produce, rounds.produced

    first = members("confluent", bootstrap, group, topic, session_timeout_ms=30_000)
    wait_balanced([first])
    produce_round("alone")

    second = members("kafka-python", bootstrap, group, topic, session_timeout_ms=30_000)
    wait_balanced([first, second])
    assert len(first.owned()) == 3 and len(second.owned()) == 3
    keys = produce_round("pair")
    wait_read([first, second], keys)
    assert_read_exactly_once_by_owners([first, second], keys)

    # A clean leave hands its partitions over at once, long before the
    # 30 s session timeout could have noticed.
    left_at = time.monotonic()
    second.stop()
    wait_balanced([first], timeout=20)
    assert time.monotonic() - left_at < 20
    produce_round("after-leave")

    crasher = members("confluent", bootstrap, group, topic, session_timeout_ms=3_000)
    wait_balanced([first, crasher])
    produce_round("before-crash")
    wait_read([first, second, crasher], produced)
    crasher.kill()
    # Only the session timeout can tell the coordinator about a SIGKILL.
    wait_balanced([first], timeout=30)
    keys = produce_round("after-crash")

    everyone = [first, second, crasher]
    wait_read(everyone, produced)
    # Records of the crashed member's partitions may be read twice (its last
    # auto-commit may be lost), but none is ever skipped; the rounds produced
    # while membership was steady were read exactly once.
    assert set(produced) <= {r[2] for r in all_records(everyone)}
    assert_read_exactly_once_by_owners([first], keys)


@pytest.mark.proves(
    "confluent-kafka: static group membership",
)
def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(
        group_broker, members):
    topic, group = "static", "static"
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, topic)

    def static_member(instance_id):
        return members("confluent", bootstrap, group, topic, assignor="range",
                       session_timeout_ms=10_000, instance_id=instance_id)

    # The first member to join leads the group.
    leader = static_member("static-a")
    wait_balanced([leader])
    follower = static_member("static-b")
    wait_balanced([leader, follower])
    time.sleep(1)
    owned_by_leader, owned_by_follower = leader.owned(), follower.owned()
    revocations = follower.revocations

    # A static member does not leave the group when it dies; within its
    # session timeout its next incarnation takes its place and its
    # partitions, and nobody else is disturbed.
    leader.kill()
    restarted = static_member("static-a")
    assert_static_restart_moved_nothing(
        bootstrap, topic, restarted, follower, (owned_by_leader, owned_by_follower, revocations))


def test_committed_offsets_carry_over_to_new_members_and_a_restarted_broker(
        group_broker, members):
    topic, group = "resume", "resume"
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, topic)
    old = [f"old-{i}" for i in range(600)]
    produce(bootstrap, topic, old)

    first = members("confluent", bootstrap, group, topic, commit="each")
    wait_read([first], old)
    first.stop()
    assert committed(bootstrap, group, topic) == {p: 100 for p in range(PARTITIONS)}

    # If the commits were ignored, the new member would start from the
    # earliest offset and read the old records before the new ones.
    second = members("kafka-python", bootstrap, group, topic, commit="each")
    wait_balanced([second])
    new = [f"new-{i}" for i in range(60)]
    produce(bootstrap, topic, new)
    wait_read([second], new)
    second.stop()
    assert sorted(second.keys()) == sorted(new)

    group_broker.kill()
    group_broker.restart()
    assert committed(bootstrap, group, topic) == {p: 110 for p in range(PARTITIONS)}
    third = members("aiokafka", bootstrap, group, topic)
    wait_balanced([third])
    latest = [f"latest-{i}" for i in range(60)]
    produce(bootstrap, topic, latest)
    wait_read([third], latest)
    third.stop()
    assert sorted(third.keys()) == sorted(latest)
    assert committed(bootstrap, group, topic) == {p: 120 for p in range(PARTITIONS)}


def kcat_group(bootstrap, group, topic):
    """Runs kcat's balanced consumer until every assigned partition is at its
    end; returns the keys read."""
    result = subprocess.run(
        ["kcat", "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
         "-e", "-q", "-f", "%k\\n", topic],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.proves(
    "kcat: consumer group, classic protocol",
)
def test_kcat_balanced_consumer_commits_where_it_stopped(group_broker):
    topic, group = "kcat-group", "kcat-group"
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, topic)
    first = [f"a{i}" for i in range(600)]
    produce(bootstrap, topic, first)
    assert sorted(kcat_group(bootstrap, group, topic)) == sorted(first)
    assert kcat_group(bootstrap, group, topic) == []
    second = [f"b{i}" for i in range(30)]
    produce(bootstrap, topic, second)
    assert sorted(kcat_group(bootstrap, group, topic)) == sorted(second)


@pytest.mark.proves(
    "confluent-kafka: list, describe and delete groups",
    "kafka-python: list, describe and delete groups",
)
def test_admin_clients_list_describe_and_delete_groups(group_broker, members):
    topic, group = "admin-groups", "admin-groups"
    bootstrap = group_broker.bootstrap
    create_topic(bootstrap, topic)
    keys = [f"x{i}" for i in range(60)]
    produce(bootstrap, topic, keys)
    pair = [members("confluent", bootstrap, group, topic, assignor="range") for _ in range(2)]
    wait_balanced(pair)
    wait_read(pair, keys)
    admin = AdminClient({"bootstrap.servers": bootstrap})

    listed = admin.list_consumer_groups().result(timeout=30)
    states = {g.group_id: g.state.name for g in listed.valid}
    assert states.get(group) == "STABLE", states

    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert described.state.name == "STABLE"
    assert described.partition_assignor == "range"
    assert not described.is_simple_consumer_group
    assert len(described.members) == 2
    assigned = sorted(tp.partition for m in described.members
                      for tp in m.assignment.topic_partitions)
    assert assigned == list(range(PARTITIONS))
    assert all(m.client_id == "member-confluent" for m in described.members)

    from kafka.admin import KafkaAdminClient

    kafka_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kp_group = kafka_admin.describe_groups([group])[group]
    assert kp_group["error"] is None
    assert kp_group["group_state"] == "Stable"
    assert kp_group["protocol_data"] == "range"
    kp_assigned = sorted(p for m in kp_group["members"]
                         for t in m["member_assignment"]["assigned_partitions"]
                         for p in t["partitions"])
    assert kp_assigned == list(range(PARTITIONS))
    kp_listed = {g["group_id"]: g for g in kafka_admin.list_groups()}
    assert kp_listed[group]["protocol_type"] == "consumer"
    assert kp_listed[group]["group_state"] == "Stable"

    with pytest.raises(KafkaException) as non_empty:
        admin.delete_consumer_groups([group])[group].result(timeout=30)
    assert non_empty.value.args[0].code() == KafkaError.NON_EMPTY_GROUP

    for member in pair:
        member.stop()
    wait_until(lambda: admin.describe_consumer_groups([group])[group].result(timeout=30)
               .state.name == "EMPTY", 30, "the group to be empty")
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {
        p: 10 for p in range(PARTITIONS)}
    kafka_python_offsets = kafka_admin.list_group_offsets(group)[group]
    assert {tp.partition: o.offset for tp, o in kafka_python_offsets.items()} == {
        p: 10 for p in range(PARTITIONS)}
    kafka_admin.close()

    admin.delete_consumer_groups([group])[group].result(timeout=30)
    listed = admin.list_consumer_groups().result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}
    assert committed(bootstrap, group, topic) == {p: -1001 for p in range(PARTITIONS)}


def read_from_beginning(bootstrap, topic):
    """Every record of partition 0 as (offset, key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    records = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                break
            raise KafkaException(message.error())
        value = message.value().decode() if message.value() is not None else None
        records.append((message.offset(), message.key().decode(), value))
    consumer.close()
    return records


def test_a_compacted_topic_keeps_the_latest_value_of_every_key(broker_factory):
    broker = broker_factory(GROUP_BROKER_ARGS + ["--log-cleaner-backoff-ms", "200"])
    bootstrap = broker.bootstrap
    topic = "compacted"
    create_topic(bootstrap, topic, partitions=1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    delivered = {}

    def on_delivery(err, msg):
        assert err is None, err
        delivered[(msg.key().decode(), msg.value())] = msg.offset()

    for round_ in range(5):
        for key in range(10):
            producer.produce(topic, key=f"key-{key}", value=f"round-{round_}",
                             on_delivery=on_delivery)
        producer.flush(30)
        time.sleep(0.15)  # segment.ms passes: the next round starts a segment
    producer.produce(topic, key="key-0", value=None, on_delivery=on_delivery)
    producer.flush(30)
    time.sleep(0.15)
    # The active segment is never cleaned; this record moves everything
    # before it into closed segments.
    producer.produce(topic, key="end", value="end", on_delivery=on_delivery)
    producer.flush(30)

    expected = [(delivered[(f"key-{k}", b"round-4")], f"key-{k}", "round-4") for k in range(1, 10)]
    expected.append((delivered[("key-0", None)], "key-0", None))
    expected.append((delivered[("end", b"end")], "end", "end"))
    expected.sort()
    wait_until(lambda: read_from_beginning(bootstrap, topic) == expected, 30,
               f"the compacted log {expected}, last read {read_from_beginning(bootstrap, topic)}")

    # A compacted topic cannot take a record without a key.
    errors = []
    producer.produce(topic, key=None, value="keyless",
                     on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]

    # Compaction survives a crash and a restart, offsets unchanged.
    broker.kill()
    broker.restart()
    assert read_from_beginning(bootstrap, topic) == expected


def test_a_session_ends_at_its_deadline(group_broker):
    """A member's session ends when its timeout has passed since the
    coordinator last heard from it, not at some later tick: a client that
    waits out the session timeout after the member's last request can
    delete the group at once (with Kafka too)."""
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.consumer.group import JoinGroupRequest, SyncGroupRequest

    admin = KafkaAdminClient(bootstrap_servers=group_broker.bootstrap)

    def send(request):
        async def call():
            return await admin._manager.send(request, node_id=group_broker.node_id)
        return admin._manager.run(call)

    try:
        for attempt in range(3):
            group, instance = f"deadline-{attempt}", f"static-{attempt}"
            protocol = JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")
            join = JoinGroupRequest(
                group_id=group, session_timeout_ms=2_000, rebalance_timeout_ms=2_000,
                member_id="", group_instance_id=instance, protocol_type="consumer",
                protocols=[protocol])
            # Finding the coordinator makes __consumer_offsets; the
            # coordinator then takes a moment to be ready.
            admin.describe_groups([group])
            deadline = time.monotonic() + 15
            while (joined := send(join)).error_code in (14, 15, 16):
                assert time.monotonic() < deadline, joined
                time.sleep(0.1)
            assert joined.error_code == 0, joined
            synced = send(SyncGroupRequest(
                group_id=group, generation_id=joined.generation_id, member_id=joined.member_id,
                group_instance_id=instance, protocol_type="consumer", protocol_name="range",
                assignments=[]))
            assert synced.error_code == 0, synced
            # The coordinator heard from the member last before this moment.
            # A coordinator that expires sessions on a 100 ms tick still
            # holds it 25 ms past the timeout most of the time.
            heard = time.monotonic()
            time.sleep(heard + 2.025 - time.monotonic())
            outcome = admin.delete_groups([group])
            assert outcome == {group: "OK"}, outcome
    finally:
        admin.close()
