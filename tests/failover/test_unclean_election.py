"""An unclean election, where the topic allows it: the only in-sync
replica dies after the other fell out of the ISR, the other comes back,
and the controller makes it leader (reason `unclean`) once it has
reported its log, recording in the leadership history how many offsets
below the old leader's high watermark its log ends: what was lost.

Five nodes, the first three the Raft voters; the partition's replicas are
nodes 4 and 5, so the faults never cost the metadata quorum (or the
controller that heard the old leader's reports)."""

import json
import subprocess
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import KEEL
from test_cluster import registered, wait_for
from test_replication import REPLICATION_ARGS, describe

TOPIC = "unclean"


def produce(bootstrap, count, first):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True})
    failures = []
    for key in range(first, first + count):
        producer.produce(TOPIC, key=str(key), value=str(key), partition=0,
                         on_delivery=lambda err, _msg: err and failures.append(err))
    assert producer.flush(30) == 0
    assert not failures, failures[:3]


def history(broker, topic=TOPIC):
    only = ["--topic", topic] if topic else []
    listed = subprocess.run([str(KEEL), "history", "--server", f"{broker.host}:{broker.metrics_port}",
                             *only, "--json"],
                            capture_output=True, text=True, timeout=30, check=True)
    return json.loads(listed.stdout)["changes"]


def test_an_unclean_election_records_how_many_offsets_may_be_lost(cluster_factory):
    # Node 1 keeps 3 changes of history, the others 5: the controller's
    # setting holds cluster-wide, and node 1 controls once the others
    # hand over.
    cluster = cluster_factory(5, extra_args=REPLICATION_ARGS,
                              node_args={i: ["--leadership-history-retention-entries",
                                             "3" if i == 1 else "5"] for i in range(1, 6)})
    registered(cluster, 5)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = NewTopic(TOPIC, num_partitions=1, replica_assignment=[[4, 5]],
                     config={"unclean.leader.election.enable": "true", "min.insync.replicas": "1"})
    admin.create_topics([topic])[TOPIC].result(timeout=30)
    produce(cluster.bootstrap, 100, first=0)
    wait_for("both replicas in sync", lambda: sorted(describe(cluster, TOPIC)[0].isrs) == [4, 5])

    cluster.brokers[5].kill()
    wait_for("the dead follower leaves the ISR", lambda: describe(cluster, TOPIC)[0].isrs == [4],
             timeout=30)
    produce(cluster.bootstrap, 200, first=100)
    # A few heartbeats: the controller hears the leader's high watermark.
    time.sleep(1.0)

    cluster.brokers[4].kill()
    wait_for("the partition is offline", lambda: describe(cluster, TOPIC)[0].leader == -1,
             timeout=30)
    cluster.brokers[5].restart()
    wait_for("the out-of-sync replica leads", lambda: describe(cluster, TOPIC)[0].leader == 5,
             timeout=30)

    survivor = cluster.brokers[1]
    unclean = [c for c in history(survivor) if c["reason"] == "unclean"]
    assert len(unclean) == 1, history(survivor)
    change = unclean[0]
    assert (change["new_leader"], change["high_watermark"], change["new_leader_log_end_offset"]) \
        == (5, 300, 100), change
    assert change["offsets_possibly_lost"] == 200, change
    assert change["commit_latency_ms"] is not None, change
    assert survivor.metrics()['keel_leader_transitions_total{reason="unclean"}'] == 1
    table = subprocess.run([str(KEEL), "history", "--server", f"{survivor.host}:{survivor.metrics_port}",
                            "--topic", TOPIC], capture_output=True, text=True, timeout=30,
                           check=True).stdout
    assert "unclean" in table and " 200 " in table, table

    # The new leader takes writes again, from where its log ends.
    produce(cluster.bootstrap, 10, first=300)

    # History retention is the active controller's, on every node.
    controller = cluster.controller().node_id
    kept = 3 if controller == 1 else 5
    admin.create_topics([NewTopic("more", num_partitions=6, replication_factor=1)])["more"].result(30)
    def keeps_the_newest():
        for broker in cluster.brokers.values():
            if broker.running:
                sequences = [c["sequence"] for c in history(broker, topic=None)]
                newest = sequences[-1] if sequences else -1
                if newest < 8 or sequences != list(range(newest - kept + 1, newest + 1)):
                    return False
        return True
    wait_for(f"every node keeps the newest {kept} changes", keeps_the_newest)
