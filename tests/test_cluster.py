"""Three real keel processes sharing a Raft metadata quorum: agreement,
controller failover by SIGKILL, catch-up by snapshot, no quorum, and
clients using the whole cluster through one bootstrap address."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from test_clients import confluent_produce, confluent_read_all, verify


def wait_for(what, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def registered(cluster, count):
    wait_for(f"{count} brokers register", lambda: all(
        b.metrics().get("keel_registered_brokers") == count
        for b in cluster.brokers.values() if b.running))


def digests(cluster):
    return {i: (b.metrics()["keel_metadata_image_digest"], b.metrics()["keel_raft_applied_index"])
            for i, b in cluster.brokers.items() if b.running}


def agree(cluster):
    values = set(digests(cluster).values())
    return len(values) == 1


def alter_many(admin, topics, changes):
    """`changes` IncrementalAlterConfigs, spread over `topics`, 64 in flight."""
    in_flight = []
    for n in range(changes):
        topic = topics[n % len(topics)]
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", str(100_000 + n), incremental_operation=AlterConfigOpType.SET)])
        in_flight.extend(admin.incremental_alter_configs([resource]).values())
        if len(in_flight) >= 64:
            for future in in_flight:
                future.result(timeout=30)
            in_flight = []
    for future in in_flight:
        future.result(timeout=30)


def test_ten_thousand_metadata_changes_agree_on_every_node(cluster_factory):
    cluster = cluster_factory(3)
    registered(cluster, 3)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topics = [f"agree-{i}" for i in range(20)]
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in topics]).values():
        future.result(timeout=30)
    alter_many(admin, topics, 10_000)
    wait_for("every node applied the same image", lambda: agree(cluster))
    # The last value written to each topic is what every node serves.
    for broker in cluster.brokers.values():
        node_admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        resource = ConfigResource(ResourceType.TOPIC, topics[0])
        configs = node_admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["retention.ms"].value == str(100_000 + 9_980)
    applied = {b.metrics()["keel_raft_applied_index"] for b in cluster.brokers.values()}
    assert min(applied) > 10_000


def test_sigkill_of_the_controller_elects_another_and_commits_continue(cluster_factory):
    cluster = cluster_factory(3)
    registered(cluster, 3)
    old = cluster.controller()
    old.kill()
    new = cluster.controller()
    assert new is not old
    survivor = next(b for b in cluster.brokers.values() if b.running)
    admin = AdminClient({"bootstrap.servers": survivor.bootstrap})
    admin.create_topics([NewTopic("after-failover", 3, 1)])["after-failover"].result(timeout=30)
    assert new.metrics()["keel_controller_changes_total"] >= 2


def test_a_killed_node_restarts_and_catches_up_by_snapshot(cluster_factory):
    cluster = cluster_factory(3, extra_args=["--raft-snapshot-entries", "200"])
    registered(cluster, 3)
    lagging = next(b for b in cluster.brokers.values() if b is not cluster.controller())
    lagging.kill()
    live = next(b for b in cluster.brokers.values() if b.running)
    admin = AdminClient({"bootstrap.servers": live.bootstrap})
    topics = [f"snap-{i}" for i in range(5)]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=30)
    alter_many(admin, topics, 1_000)
    leader = cluster.controller()
    assert leader.metrics()["keel_raft_snapshot_index"] > 0
    lagging.restart()
    wait_for("the restarted node agrees", lambda: agree(cluster), timeout=30)
    assert "installed a metadata snapshot from the leader" in lagging.log()


def test_without_a_quorum_changes_fail_in_time_and_reads_still_work(cluster_factory):
    cluster = cluster_factory(3)
    registered(cluster, 3)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic("before", 2, 1)])["before"].result(timeout=30)
    survivor = cluster.brokers[1]
    for node in (2, 3):
        cluster.brokers[node].kill()
    admin = AdminClient({"bootstrap.servers": survivor.bootstrap})
    started = time.monotonic()
    with pytest.raises(KafkaException) as failed:
        admin.create_topics([NewTopic("during", 1, 1)], request_timeout=3)["during"].result(timeout=30)
    assert time.monotonic() - started < 15
    # librdkafka sends CreateTopics to the controller; with none it gives up
    # locally (_TIMED_OUT), a broker without a quorum answers
    # REQUEST_TIMED_OUT or NOT_CONTROLLER. Either way: an error, in time.
    error = failed.value.args[0]
    assert error.code() in (KafkaError._TIMED_OUT, 7, 41), error
    # The last known metadata is still served.
    metadata = admin.list_topics(timeout=10)
    assert "before" in metadata.topics
    assert "during" not in metadata.topics


def test_a_client_connecting_as_the_cluster_starts_sees_it_whole(cluster_factory):
    """Right after start a broker may not be registered yet; clients that
    reach it then must not be told the cluster has no brokers."""
    cluster = cluster_factory(3)
    admin = AdminClient({"bootstrap.servers": cluster.brokers[1].bootstrap})
    admin.create_topics([NewTopic("early", 3, 1)])["early"].result(timeout=10)
    assert len(admin.list_topics(timeout=10).brokers) == 3


def test_clients_use_six_partitions_on_three_brokers_through_one_bootstrap(cluster_factory):
    cluster = cluster_factory(3, extra_args=["--num-partitions", "6"])
    registered(cluster, 3)
    bootstrap = cluster.brokers[1].bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("spread", 6, 1)])["spread"].result(timeout=30)
    leaders = {p.id: p.leader for p in admin.list_topics("spread", timeout=10).topics["spread"].partitions.values()}
    assert set(leaders.values()) == {1, 2, 3}, leaders
    # Every broker answers with the same leaders.
    for broker in cluster.brokers.values():
        view = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics("spread", timeout=10)
        assert {p.id: p.leader for p in view.topics["spread"].partitions.values()} == leaders
        assert sorted(view.brokers) == [1, 2, 3]
    delivered = confluent_produce(bootstrap, "spread", 30_000, partitions=6)
    verify(confluent_read_all(bootstrap, "spread", 30_000, partitions=6), "confluent", 30_000,
           delivered, partitions=6)


def test_a_node_outside_the_voters_joins_as_a_learner(cluster_factory):
    cluster = cluster_factory(4, voters=3)
    registered(cluster, 4)
    learner = cluster.brokers[4]
    assert learner.metrics()["keel_raft_learners"] == 1
    admin = AdminClient({"bootstrap.servers": learner.bootstrap})
    admin.create_topics([NewTopic("via-learner", 4, 1)])["via-learner"].result(timeout=30)
    wait_for("all four agree", lambda: agree(cluster))


def test_node_ids_may_start_at_zero(cluster_factory, broker_factory):
    """Kafka's first node is usually node 0 (raft-rs reserves Raft id 0;
    Keel maps it). Nodes 0, 1 and 2: node 0 registers, leads partitions,
    and the cluster carries on without it and takes it back. Alone, node 0
    is its own controller."""
    cluster = cluster_factory(3, first_id=0, extra_args=["--num-partitions", "3"])
    registered(cluster, 3)
    zero = cluster.brokers[0]
    admin = AdminClient({"bootstrap.servers": zero.bootstrap})
    admin.create_topics([NewTopic("from-zero", 3, 3)])["from-zero"].result(timeout=30)
    view = admin.list_topics("from-zero", timeout=10)
    assert sorted(view.brokers) == [0, 1, 2]
    leaders = {p.leader for p in view.topics["from-zero"].partitions.values()}
    assert leaders == {0, 1, 2}, leaders
    delivered = confluent_produce(zero.bootstrap, "from-zero", 3_000, partitions=3)
    zero.kill()
    survivor = cluster.brokers[1].bootstrap
    verify(confluent_read_all(survivor, "from-zero", 3_000, partitions=3), "confluent", 3_000,
           delivered, partitions=3)
    zero.restart()
    registered(cluster, 3)

    alone = broker_factory(name="zero-alone", node_id=0)
    assert alone.metrics()["keel_controller_id"] == 0
    alone_admin = AdminClient({"bootstrap.servers": alone.bootstrap})
    assert alone_admin.describe_cluster().result(timeout=10).controller.id == 0
