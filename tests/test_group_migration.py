"""Online migration between the classic and the consumer group protocols
(KIP-848), with real clients against a real keel process: classic members
(confluent-kafka cooperative and eager, kafka-python eager) consuming a
topic are joined by a confluent-kafka member under `group.protocol=consumer`,
which moves the group to the consumer protocol while the classic members
keep consuming; when it leaves, the group goes back to the classic
protocol. At every steady point each partition is owned once and every
record is read exactly once by its owner, no record is skipped across the
moves, and the committed offsets are where the last members stopped.
"""

import time

import pytest
from confluent_kafka.admin import AdminClient

from group_support import (
    PARTITIONS,
    Rounds,
    all_records,
    assert_read_exactly_once_by_owners,
    balanced,
    committed,
    create_topic,
    wait_balanced,
    wait_read,
    wait_until,
)
from test_consumer_protocol import CONSUMER_PROTOCOL_ARGS


@pytest.fixture
def migration_broker(broker_factory):
    return broker_factory(CONSUMER_PROTOCOL_ARGS)


def group_type(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
    return listed[group].type.name


@pytest.mark.proves(
    "confluent-kafka: consumer group, online migration between protocols",
    "kafka-python: consumer group, online migration between protocols",
)
@pytest.mark.parametrize("client,assignor", [
    ("confluent", "cooperative-sticky"),
    ("confluent", "range"),
    ("kafka-python", "range"),
])
def test_classic_members_move_to_the_consumer_protocol_and_back(
        migration_broker, members, client, assignor):
    bootstrap = migration_broker.bootstrap
    topic = group = f"migrate-{client}-{assignor}"
    create_topic(bootstrap, topic)
    rounds = Rounds(bootstrap, topic)
    produce_round, produced = rounds.produce, rounds.produced

    classic = [members(client, bootstrap, group, topic, assignor=assignor) for _ in range(2)]
    wait_balanced(classic)
    keys = produce_round("classic")
    wait_read(classic, keys)
    assert_read_exactly_once_by_owners(classic, keys)
    assert group_type(bootstrap, group) == "CLASSIC"

    # A consumer-protocol member joins: the group moves over, the classic
    # members give up a share through their own rebalance protocol.
    newcomer = members("confluent", bootstrap, group, topic, protocol="consumer")
    trio = classic + [newcomer]
    wait_balanced(trio)
    assert group_type(bootstrap, group) == "CONSUMER"
    keys = produce_round("mixed")
    wait_read(trio, keys)
    time.sleep(1)
    assert balanced(trio), "the assignment moved while membership was steady"
    assert_read_exactly_once_by_owners(trio, keys)

    # It leaves: the group goes back to the classic protocol and its
    # members share every partition again.
    newcomer.stop()
    wait_until(lambda: group_type(bootstrap, group) == "CLASSIC", 30, "the group to be classic")
    wait_balanced(classic)
    keys = produce_round("classic-again")
    wait_read(classic, keys)
    time.sleep(1)
    assert balanced(classic)
    assert_read_exactly_once_by_owners(classic, keys)

    # Nothing was skipped across the moves, and what was read is committed.
    assert set(produced) <= {r[2] for r in all_records(trio)}
    for member in classic:
        member.stop()
    per_partition = len(produced) // PARTITIONS
    assert committed(bootstrap, group, topic) == {p: per_partition for p in range(PARTITIONS)}
