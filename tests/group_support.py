"""What the consumer group tests share: member processes (`group_member.py`)
and what they report, producing keyed records to chosen partitions, and
checks that every record was read once by the member owning its partition."""

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MEMBER = Path(__file__).with_name("group_member.py")
PARTITIONS = 6
GROUP_BROKER_ARGS = [
    "--num-partitions", str(PARTITIONS),
    "--offsets-topic-partitions", "6",
    "--group-initial-rebalance-delay-ms", "0",
    "--group-min-session-timeout-ms", "1000",
]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Member:
    """A group member process and what it has reported."""

    def __init__(self, tmp_path, client, bootstrap, group, topic, assignor=None,
                 session_timeout_ms=6000, commit="auto", instance_id=None, protocol="classic"):
        self.client = client
        self.name = f"{client}-{uuid.uuid4().hex[:6]}"
        self.stderr_path = tmp_path / f"{self.name}.stderr"
        command = [sys.executable, str(MEMBER), "--client", client, "--bootstrap", bootstrap,
                   "--group", group, "--topic", topic,
                   "--session-timeout-ms", str(session_timeout_ms), "--commit", commit]
        if assignor:
            command += ["--assignor", assignor]
        if instance_id:
            command += ["--instance-id", instance_id]
        if protocol != "classic":
            command += ["--protocol", protocol]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=open(self.stderr_path, "w"), text=True)
        self.lock = threading.Lock()
        self.records = []
        self.assignment = None
        self.revocations = 0
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            event = json.loads(line)
            with self.lock:
                if "record" in event:
                    self.records.append(tuple(event["record"]))
                elif "assigned" in event:
                    self.assignment = set(event["assigned"])
                elif "revoked" in event:
                    self.revocations += 1
                elif "closed" in event:
                    self.closed = True

    def owned(self):
        with self.lock:
            return set(self.assignment) if self.assignment is not None else None

    def keys(self):
        with self.lock:
            return [key for _, _, key in self.records]

    def record_list(self):
        with self.lock:
            return list(self.records)

    def stop(self):
        """Leaves the group cleanly."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        assert self.closed, f"{self.name} did not close cleanly:\n{self.stderr()}"

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self):
        if self.process.poll() is None:
            self.kill()

    def stderr(self):
        return self.stderr_path.read_text()[-3000:]


def balanced(group_members, partitions=PARTITIONS):
    """Every partition owned by exactly one member, shares differing by at
    most one."""
    owned = [m.owned() for m in group_members]
    if any(o is None for o in owned):
        return False
    every = [p for o in owned for p in o]
    sizes = [len(o) for o in owned]
    return (sorted(every) == list(range(partitions))
            and max(sizes) - min(sizes) <= 1)


def wait_balanced(group_members, timeout=60):
    wait_until(lambda: balanced(group_members), timeout,
               "a balanced assignment: " + ", ".join(
                   f"{m.name}={sorted(m.owned() or [])}" for m in group_members))


def create_topic(bootstrap, topic, partitions=PARTITIONS, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result(30)


def produce(bootstrap, topic, keys, partitions=PARTITIONS):
    """Produces one record per key, key i to partition i % partitions;
    returns each key's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    delivered, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.key().decode()] = (msg.partition(), msg.offset())

    for i, key in enumerate(keys):
        producer.produce(topic, key=key, value=b"v", partition=i % partitions,
                         on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors, errors[:5]
    return delivered


class Rounds:
    """Rounds of 120 keyed records produced to `topic` (see `produce`), each
    key named after its round; `produced` keeps every key so far."""

    def __init__(self, bootstrap, topic):
        self.bootstrap = bootstrap
        self.topic = topic
        self.produced = []

    def produce(self, tag):
        keys = [f"{tag}-{i}" for i in range(120)]
        produce(self.bootstrap, self.topic, keys)
        self.produced.extend(keys)
        return keys


def all_records(group_members):
    return [r for m in group_members for r in m.record_list()]


def assert_read_exactly_once_by_owners(group_members, keys):
    """Each key read exactly once, by the member owning its partition."""
    seen = {}
    for member in group_members:
        owned = member.owned()
        for partition, _, key in member.record_list():
            if key not in keys:
                continue
            assert key not in seen, f"{key} read by {seen[key]} and {member.name}"
            assert partition in owned, f"{member.name} read {key} from unowned {partition}"
            seen[key] = member.name
    assert set(seen) == set(keys), f"{len(set(keys) - set(seen))} records never read"


def assert_static_restart_moved_nothing(bootstrap, topic, restarted, other, before):
    """After a static member's restart: its next incarnation owns what it
    owned, every new record is read once by its owner, and the other member
    kept its partitions without being asked to give any up. `before` is
    (what the restarted member owned, what `other` owned, `other`'s
    revocations)."""
    owned_by_restarted, owned_by_other, revocations = before
    wait_balanced([restarted, other], timeout=30)
    assert restarted.owned() == owned_by_restarted
    keys = [f"s{i}" for i in range(300)]
    produce(bootstrap, topic, keys)
    wait_read([restarted, other], keys)
    assert_read_exactly_once_by_owners([restarted, other], keys)
    assert other.owned() == owned_by_other
    assert other.revocations == revocations, "the other member had to give up partitions"


def wait_read(group_members, keys, timeout=60):
    wanted = set(keys)
    wait_until(lambda: wanted <= {r[2] for r in all_records(group_members)}, timeout,
               f"{len(wanted)} records to be read")


def committed(bootstrap, group, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                 timeout=30)
    consumer.close()
    return {tp.partition: tp.offset for tp in offsets}
