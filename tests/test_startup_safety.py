"""Start-up never deletes partition data on a guess: a broker whose metadata
directory was wiped keeps every record, alone and in a cluster, and says
what it did; a data directory of another cluster is refused."""

import shutil
import struct
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import Broker
from test_clients import confluent_produce, confluent_read_all, create_topic, verify
from test_cluster import registered, wait_for

METADATA_DIR = "__cluster_metadata"


def records_in(partition_dir: Path) -> int:
    """Records in a partition directory's segments, from the batch headers."""
    total = 0
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        position = 0
        while position + 61 <= len(data):
            batch_length = struct.unpack_from(">i", data, position + 8)[0]
            total += struct.unpack_from(">i", data, position + 57)[0]
            position += 12 + batch_length
    return total


def cluster_id(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).cluster_id


def test_a_single_node_whose_metadata_is_wiped_keeps_every_record(broker_factory):
    broker = broker_factory(name="alone")
    topic = "precious"
    create_topic(broker.bootstrap, topic, partitions=2)
    confluent_produce(broker.bootstrap, topic, 5000, partitions=2)
    old_cluster = cluster_id(broker.bootstrap)
    broker.kill()
    shutil.rmtree(broker.data_dir / METADATA_DIR)

    broker.start()
    # The rebuilt metadata knows no topic: both logs go aside, whole.
    def strays():
        return sorted(d for d in broker.data_dir.iterdir() if d.name.endswith("-stray"))

    wait_for("both logs are moved aside", lambda: len(strays()) == 2)
    strays = strays()
    assert sorted(d.name.split(".")[0] for d in strays) == [f"{topic}-0", f"{topic}-1"]
    assert sum(records_in(d) for d in strays) == 5000
    log = broker.log().split(f"--- start {broker.starts}")[-1]
    for stray in strays:
        assert str(stray) in log, f"the operator is not told about {stray}"
    assert "moved aside" in log
    # The node keeps the cluster its data directory belongs to.
    assert cluster_id(broker.bootstrap) == old_cluster


def test_a_cluster_node_whose_metadata_is_wiped_rejoins_with_all_its_data(cluster_factory):
    cluster = cluster_factory(3)
    registered(cluster, 3)
    topic = "spread"
    create_topic(cluster.bootstrap, topic, partitions=6)
    delivered = confluent_produce(cluster.bootstrap, topic, 6000, partitions=6)
    victim = cluster.brokers[2]
    hosted = sorted(d.name for d in victim.data_dir.iterdir() if d.name.startswith(topic))
    assert hosted, "node 2 hosts some partitions"
    before = {name: records_in(victim.data_dir / name) for name in hosted}

    victim.kill()
    shutil.rmtree(victim.data_dir / METADATA_DIR)
    victim.start()
    wait_for("node 2 catches up", lambda: "caught up with the metadata quorum"
             in victim.log().split(f"--- start {victim.starts}")[-1])
    registered(cluster, 3)

    after = {d.name: records_in(d) for d in victim.data_dir.iterdir() if d.name.startswith(topic)}
    assert after == before, "node 2's partition directories changed"
    assert not any(d.name.endswith(("-stray", "-delete")) for d in victim.data_dir.iterdir())
    records = confluent_read_all(cluster.bootstrap, topic, 6000, partitions=6)
    verify(records, "confluent", 6000, delivered, partitions=6)


def test_a_data_directory_of_another_cluster_is_refused(tmp_path, broker_factory, cluster_factory):
    # Alone: the local metadata already names the cluster.
    broker = broker_factory(name="single")
    real = cluster_id(broker.bootstrap)
    broker.stop()
    properties = broker.data_dir / "meta.properties"
    assert f"cluster.id={real}" in properties.read_text()
    properties.write_text(properties.read_text().replace(real, "SomeOtherCluster"))
    broker.start_async()
    assert broker.process.wait(timeout=30) != 0
    last = broker.log().strip().splitlines()[-1]
    assert "SomeOtherCluster" in last and real in last, last

    # In a cluster: a node with no metadata of its own learns the cluster's
    # id from the quorum and stops.
    cluster = cluster_factory(3)
    registered(cluster, 3)
    victim = cluster.brokers[3]
    victim.stop()
    shutil.rmtree(victim.data_dir / METADATA_DIR)
    properties = victim.data_dir / "meta.properties"
    real = next(line.split("=", 1)[1] for line in properties.read_text().splitlines()
                if line.startswith("cluster.id="))
    properties.write_text(properties.read_text().replace(real, "SomeOtherCluster"))
    victim.start_async()
    assert victim.process.wait(timeout=30) != 0
    log = victim.log().split(f"--- start {victim.starts}")[-1]
    assert "SomeOtherCluster" in log and real in log
    assert not any(d.name.endswith(("-stray", "-delete")) for d in victim.data_dir.iterdir())
