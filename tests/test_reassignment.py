"""Partition reassignment on real keel processes, driven with kafka-python's
`alter_partition_reassignments` and `list_partition_reassignments`, under
an idempotent acks=all confluent-kafka producer: the target replicas catch
up into the ISR, a leaving leader hands over first (reason `reassignment`
in the history), the removed replicas are dropped and their logs deleted,
and every acknowledged record is read back. A reassignment onto a stopped
broker waits for it, is listed, survives the loss of the active
controller, and can be cancelled."""

import json
import subprocess

import pytest
from kafka import TopicPartition as KTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import (
    InvalidReplicationAssignmentError, NoReassignmentInProgressError, UnknownTopicOrPartitionError)

from conftest import KEEL
from test_cluster import wait_for
from test_replication import (
    Writer, create, describe, move_leader, read_back, start, verify_acknowledged)


def admin(cluster):
    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000)


def placed(cluster, topic, replicas, isr=None):
    """Whether partition 0 of `topic` is on `replicas` (in order) with
    `isr` (any order; the replicas when not given) and a leader among
    them."""
    partition = describe(cluster, topic)[0]
    return (list(partition.replicas) == list(replicas)
            and sorted(partition.isrs) == sorted(isr or replicas)
            and partition.leader in replicas)


def history(broker, topic):
    listed = subprocess.run([str(KEEL), "history", "--server", f"{broker.host}:{broker.metrics_port}",
                             "--topic", topic, "--json"],
                            capture_output=True, text=True, timeout=30, check=True)
    return json.loads(listed.stdout)["changes"]


def log_dirs(broker, topic):
    return [d for d in broker.data_dir.iterdir() if d.name.startswith(f"{topic}-0")]


@pytest.mark.proves("kafka-python: partition reassignment")
def test_a_reassignment_under_acks_all_load_moves_the_partition_and_loses_nothing(cluster_factory):
    cluster = start(cluster_factory, size=4)
    topic = "moving"
    create(cluster, topic, replicas=(1, 2, 3))
    assert describe(cluster, topic)[0].leader == 1
    writer = Writer(cluster.brokers[4].bootstrap, topic).start()
    writer.wait_acked(300)

    tp = KTopicPartition(topic, 0)
    client = admin(cluster)
    # Broker 1 leads and leaves: it hands over to 4 once 4 is in sync.
    assert client.alter_partition_reassignments({tp: [4, 2, 3]}) == {tp: None}
    wait_for("the partition is on 4, 2, 3", lambda: placed(cluster, topic, [4, 2, 3]), timeout=30)
    assert client.list_partition_reassignments() == {}
    writer.wait_acked(len(writer.acked) + 300)
    writer.stop()

    verify_acknowledged(writer, read_back(cluster.brokers[2].bootstrap, topic))
    moves = [c for c in history(cluster.brokers[2], topic) if c["reason"] == "reassignment"]
    assert [(c["previous_leader"], c["new_leader"]) for c in moves] == [(1, 4)], moves
    wait_for("broker 1 deleted its replica", lambda: all(
        d.name.endswith("-delete") for d in log_dirs(cluster.brokers[1], topic)))
    client.close()


@pytest.mark.proves("kafka-python: partition reassignment")
def test_a_reassignment_waits_for_its_target_survives_a_controller_failover_and_can_be_cancelled(
        cluster_factory):
    cluster = start(cluster_factory, size=4)
    create(cluster, "waiting", replicas=(1, 2, 3))
    create(cluster, "cancelled", replicas=(1, 2, 3))
    cluster.brokers[4].stop()
    writer = Writer(cluster.brokers[2].bootstrap, "waiting").start()
    writer.wait_acked(200)

    waiting, cancelled = KTopicPartition("waiting", 0), KTopicPartition("cancelled", 0)
    client = admin(cluster)
    assert client.alter_partition_reassignments({waiting: [2, 3, 4], cancelled: [2, 4]}) == {
        waiting: None, cancelled: None}
    assert client.list_partition_reassignments() == {
        waiting: {"replicas": [2, 3, 4, 1], "adding_replicas": [4], "removing_replicas": [1]},
        cancelled: {"replicas": [2, 4, 1, 3], "adding_replicas": [4], "removing_replicas": [1, 3]},
    }
    assert client.list_partition_reassignments([cancelled]) == {
        cancelled: {"replicas": [2, 4, 1, 3], "adding_replicas": [4], "removing_replicas": [1, 3]}}

    # A cancel puts the original replicas back, in the order the
    # reassignment left them (as Kafka's revert does); a second finds
    # nothing.
    assert client.alter_partition_reassignments({cancelled: None}) == {cancelled: None}
    wait_for("the cancelled partition is back on 2, 1, 3",
             lambda: placed(cluster, "cancelled", [2, 1, 3]))
    assert client.alter_partition_reassignments({cancelled: None}) == {
        cancelled: NoReassignmentInProgressError}
    assert client.alter_partition_reassignments({
        cancelled: [1, 9], KTopicPartition("missing", 0): [1]}) == {
        cancelled: InvalidReplicationAssignmentError,
        KTopicPartition("missing", 0): UnknownTopicOrPartitionError}
    client.close()

    # The active controller dies with the reassignment in progress; its
    # successor completes it once broker 4 is back and in sync.
    killed = cluster.controller()
    killed.kill()
    successor = cluster.controller()
    assert successor is not killed
    killed.start()
    cluster.brokers[4].start()
    wait_for("the partition is on 2, 3, 4",
             lambda: placed(cluster, "waiting", [2, 3, 4]), timeout=60)
    assert "partition reassignment completed" in successor.log()
    writer.wait_acked(len(writer.acked) + 200)
    writer.stop()
    verify_acknowledged(writer, read_back(cluster.brokers[3].bootstrap, "waiting"))
    client = admin(cluster)
    assert client.list_partition_reassignments() == {}
    client.close()


@pytest.mark.proves("kafka-python: partition reassignment")
def test_a_cancel_moves_leadership_off_a_replica_being_added_before_dropping_it(cluster_factory):
    cluster = start(cluster_factory, size=4)
    topic = "reverted"
    create(cluster, topic, replicas=(1, 2, 3))
    writer = Writer(cluster.brokers[2].bootstrap, topic).start()
    writer.wait_acked(200)
    # Broker 3 is down: the reassignment to 4, 2, 3 waits for it, with 4
    # in sync meanwhile, and 4 is made leader by hand.
    cluster.brokers[3].stop()
    tp = KTopicPartition(topic, 0)
    client = admin(cluster)
    assert client.alter_partition_reassignments({tp: [4, 2, 3]}) == {tp: None}
    wait_for("4 is in sync", lambda: 4 in describe(cluster, topic)[0].isrs)
    assert "leader" in move_leader(cluster.brokers[1], topic, 0, to=4)
    wait_for("4 leads", lambda: describe(cluster, topic)[0].leader == 4)
    writer.wait_acked(len(writer.acked) + 200)

    # The cancel hands leadership to an original replica, then drops 4.
    assert client.alter_partition_reassignments({tp: None}) == {tp: None}
    wait_for("the partition is back on 2, 3, 1 without 4",
             lambda: placed(cluster, topic, [2, 3, 1], isr=[1, 2]))
    assert client.list_partition_reassignments() == {}
    client.close()
    moves = [c for c in history(cluster.brokers[2], topic) if c["reason"] == "reassignment"]
    assert [(c["previous_leader"], c["new_leader"]) for c in moves] == [(4, 2)], moves
    writer.wait_acked(len(writer.acked) + 200)
    writer.stop()
    verify_acknowledged(writer, read_back(cluster.brokers[1].bootstrap, topic))
