"""One consumer group member, run as its own process so tests can SIGKILL it.

    python group_member.py --client confluent|kafka-python|aiokafka \
        --bootstrap HOST:PORT --group G --topic T [--assignor NAME[,NAME]] \
        [--session-timeout-ms N] [--commit auto|each] [--instance-id ID]
        [--protocol classic|consumer]

With --protocol consumer (confluent-kafka only) the member uses the
consumer group protocol of KIP-848: the broker assigns, with the server
assignor named by --assignor, and times the session.

Prints one JSON object per line on stdout:
    {"assigned": [0, 3]}               whenever its assignment changes
    {"record": [partition, offset, key]}  for every record consumed
    {"revoked": [1, 4]}                 when confluent-kafka gives partitions up
On SIGTERM it closes its consumer, which commits (auto mode) and leaves the
group, then prints {"closed": true}.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

stopping = False


def on_sigterm(*_):
    global stopping
    stopping = True


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class AssignmentReporter:
    def __init__(self):
        self.last = None

    def report(self, partitions):
        current = sorted(partitions)
        if current != self.last:
            self.last = current
            emit({"assigned": current})


def run_confluent(args):
    from confluent_kafka import Consumer

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": "member-confluent",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": args.commit == "auto",
        "auto.commit.interval.ms": 200,
        **({"group.instance.id": args.instance_id} if args.instance_id else {}),
    }
    if args.protocol == "consumer":
        config["group.protocol"] = "consumer"
        if args.assignor:
            config["group.remote.assignor"] = args.assignor
    else:
        config.update({
            "partition.assignment.strategy": args.assignor or "range,roundrobin",
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": args.session_timeout_ms // 6,
        })
    consumer = Consumer(config)

    def on_revoke(_, partitions):
        emit({"revoked": sorted(tp.partition for tp in partitions)})

    consumer.subscribe([args.topic], on_revoke=on_revoke)
    reporter = AssignmentReporter()
    while not stopping:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None:
            emit({"record": [message.partition(), message.offset(), message.key().decode()]})
            if args.commit == "each":
                consumer.commit(message=message, asynchronous=False)
        reporter.report(tp.partition for tp in consumer.assignment())
    consumer.close()


def keep_kafka_python_join_pending():
    """Works around a kafka-python 3.0.12 bug that strands a member.

    Its join loop runs only while `need_rejoin()` holds. A leader whose
    rejoin was triggered by new topic metadata clears that condition itself
    when it computes the assignment; if the consumer's poll timer then runs
    out before the SyncGroup response arrives, the finished join is never
    picked up: the member keeps no assignment, never re-enables its heartbeat
    and is expired by any broker (Apache Kafka's too), after which it never
    rejoins. The Java client counts a join in flight as a pending rejoin
    (AbstractCoordinator.rejoinNeededOrPending); this gives kafka-python the
    same rule. It changes nothing on the wire except letting the stranded
    member join again."""
    from kafka.coordinator.consumer import ConsumerCoordinator

    need_rejoin = ConsumerCoordinator.need_rejoin

    def need_rejoin_or_pending(self):
        return need_rejoin(self) or self._join_task is not None

    ConsumerCoordinator.need_rejoin = need_rejoin_or_pending


def run_kafka_python(args):
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.structs import OffsetAndMetadata

    assignors = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "cooperative-sticky": CooperativeStickyAssignor,
    }
    names = (args.assignor or "range,roundrobin").split(",")
    keep_kafka_python_join_pending()
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id="member-kafka-python",
        auto_offset_reset="earliest",
        partition_assignment_strategy=[assignors[n] for n in names],
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.session_timeout_ms // 6,
        enable_auto_commit=args.commit == "auto",
        auto_commit_interval_ms=200,
        group_instance_id=args.instance_id,
    )
    consumer.subscribe([args.topic])
    reporter = AssignmentReporter()
    while not stopping:
        for tp, records in consumer.poll(timeout_ms=100).items():
            for record in records:
                emit({"record": [tp.partition, record.offset, record.key.decode()]})
                if args.commit == "each":
                    consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        reporter.report(tp.partition for tp in consumer.assignment())
    consumer.close()


async def run_aiokafka(args):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
    names = (args.assignor or "roundrobin").split(",")
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id="member-aiokafka",
        auto_offset_reset="earliest",
        partition_assignment_strategy=tuple(assignors[n] for n in names),
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.session_timeout_ms // 6,
        enable_auto_commit=args.commit == "auto",
        auto_commit_interval_ms=200,
    )
    await consumer.start()
    reporter = AssignmentReporter()
    while not stopping:
        batches = await consumer.getmany(timeout_ms=100)
        for tp, records in batches.items():
            for record in records:
                emit({"record": [tp.partition, record.offset, record.key.decode()]})
                if args.commit == "each":
                    await consumer.commit({tp: record.offset + 1})
        reporter.report(tp.partition for tp in consumer.assignment())
    await consumer.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True,
                        choices=["confluent", "kafka-python", "aiokafka"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--assignor")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--commit", choices=["auto", "each"], default="auto")
    parser.add_argument("--instance-id", help="group.instance.id (static membership)")
    parser.add_argument("--protocol", choices=["classic", "consumer"], default="classic")
    args = parser.parse_args()
    # The Python clients log their group transitions (join, sync, heartbeat
    # failures) at info; stderr is attached to a failed test's report.
    logging.basicConfig(level=os.environ.get("MEMBER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, on_sigterm)
    if args.client == "confluent":
        run_confluent(args)
    elif args.client == "kafka-python":
        run_kafka_python(args)
    else:
        asyncio.run(run_aiokafka(args))
    emit({"closed": True})


if __name__ == "__main__":
    main()
