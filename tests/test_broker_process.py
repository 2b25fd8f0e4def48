"""The command-line contract and the broker process's behaviour at its
edges: start-up errors, the ready line, SIGTERM, and bad input on the wire.
"""

import os
import resource
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import Producer

from conftest import KEEL, Broker, free_port
from test_clients import confluent_read_all, create_topic, verify, confluent_produce


def run_keel(*args, env=None, timeout=10):
    return subprocess.run([str(KEEL), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, key", [
    (["--bogus-flag"], "--bogus-flag"),
    (["--node-id", "seven"], "--node-id"),
    (["--num-partitions", "0"], "--num-partitions"),
    (["--listen", "not-an-address"], "--listen"),
    (["--log-level", "chatty=??"], "--log-level"),
])
def test_bad_flags_exit_nonzero_with_one_line_naming_the_key(args, key):
    result = run_keel(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]


def test_bad_environment_and_config_file_values_are_named(tmp_path):
    result = run_keel(env={"KEEL_NODE_ID": "x"})
    assert result.returncode != 0 and "--node-id" in result.stderr

    missing = tmp_path / "missing.toml"
    result = run_keel("--config", str(missing))
    assert result.returncode != 0
    assert str(missing) in result.stderr and len(result.stderr.strip().splitlines()) == 1

    config = tmp_path / "keel.toml"
    config.write_text('retention = "forever"\n')
    result = run_keel("--config", str(config))
    assert result.returncode != 0 and "retention" in result.stderr

    config.write_text('log-retention-ms = "forever"\n')
    result = run_keel("--config", str(config))
    assert result.returncode != 0
    assert "--log-retention-ms" in result.stderr and "config file" in result.stderr


def test_settings_come_from_file_env_and_flags_in_that_order(tmp_path):
    port = free_port()
    config = tmp_path / "keel.toml"
    config.write_text(f'node-id = 3\nlisten = "127.0.0.1:{port}"\nnum-partitions = 2\n')
    broker = Broker(tmp_path / "data")
    broker.port = port
    broker.command = lambda: [str(KEEL), "--config", str(config), "--data-dir",
                              str(broker.data_dir), "--num-partitions", "5"]
    broker.start()
    try:
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        metadata = admin.list_topics(timeout=10)
        assert list(metadata.brokers) == [3]
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce("auto-created", b"x")
        assert producer.flush(10) == 0
        topic = admin.list_topics("auto-created", timeout=10).topics["auto-created"]
        assert len(topic.partitions) == 5
    finally:
        broker.close()


def test_ready_line_names_the_listener(broker):
    log = broker.log()
    ready = [line for line in log.splitlines() if "keel is ready" in line]
    assert len(ready) == 1
    assert broker.bootstrap in ready[0]


def test_sigterm_finishes_in_flight_work_and_exits_cleanly(broker):
    topic = "sigterm"
    create_topic(broker.bootstrap, topic)
    delivered = confluent_produce(broker.bootstrap, topic, 20_000)
    # A long-poll fetch is in flight when SIGTERM arrives.
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=200)

    started = time.monotonic()
    assert broker.stop(timeout=10) == 0
    assert time.monotonic() - started < 8
    consumer.close()
    assert "keel stopped" in broker.log()

    broker.start()
    assert "unclean shutdown" not in broker.log().split("--- start 2")[-1]
    verify(confluent_read_all(broker.bootstrap, topic, 20_000), "confluent", 20_000, delivered)


def vm_size(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def limit_address_space(broker, headroom):
    """Caps the broker's address space at what it uses now plus `headroom`:
    reserving memory for a frame's announced length, even memory it never
    touches, then fails and the process aborts, which RSS would not show."""
    pid = broker.process.pid
    limit = vm_size(pid) + headroom
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


def connect(broker):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    return sock


def closed_by_peer(sock):
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def api_versions_request(correlation_id=1):
    body = struct.pack(">hhi", 18, 0, correlation_id) + struct.pack(">h", -1)
    return struct.pack(">i", len(body)) + body


def still_serves(broker):
    sock = connect(broker)
    sock.sendall(api_versions_request(9))
    length = struct.unpack(">i", sock.recv(4))[0]
    data = b""
    while len(data) < length:
        data += sock.recv(length - len(data))
    sock.close()
    return struct.unpack(">ih", data[:6]) == (9, 0)


def test_a_huge_length_prefix_closes_the_connection_without_allocating(broker):
    limit_address_space(broker, 256 << 20)
    socks = []
    for _ in range(20):
        sock = connect(broker)
        sock.sendall(struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 100)
        socks.append(sock)
    for sock in socks:
        assert closed_by_peer(sock)
    # 40 GiB announced in all, against 256 MiB of address space to spare.
    assert broker.process.poll() is None, broker.log()
    assert "exceeds the maximum" in broker.log()
    assert still_serves(broker)


def test_a_large_allowed_frame_is_buffered_as_it_arrives(broker):
    limit_address_space(broker, 256 << 20)
    socks = []
    for _ in range(10):
        sock = connect(broker)
        # 90 MiB announced, 1 KiB sent: reserving the announced length
        # (900 MiB for the ten) would not fit in the 256 MiB to spare.
        sock.sendall(struct.pack(">i", 90 << 20) + b"\x00" * 1024)
        socks.append(sock)
    time.sleep(0.5)
    assert broker.process.poll() is None, broker.log()
    assert still_serves(broker)
    for sock in socks:
        sock.close()
    assert still_serves(broker)


@pytest.mark.parametrize("payload", [
    b"",                                   # empty frame
    b"\x00\x12",                           # shorter than a header
    b"\x00\x03\x00\x05\x00\x00\x00\x01\xff\xff\xff\xff\xff",  # Metadata v5, garbage body
    b"\x00\x00\x00\x09\x00\x00\x00\x01" + b"\xff" * 64,      # Produce v9, garbage
    os.urandom(300),
])
def test_malformed_frames_close_the_connection_and_nothing_else(broker, payload):
    sock = connect(broker)
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    sock.settimeout(5)
    try:
        data = sock.recv(64)
    except ConnectionResetError:
        data = b""
    if data:
        # An unknown API key or version is answered with UNSUPPORTED_VERSION.
        assert data[8:10] == b"\x00\x23", data
    sock.close()
    assert broker.process.poll() is None
    assert still_serves(broker)
    assert "panicked" not in broker.log()


def test_unknown_topic_with_auto_create_off(broker_factory):
    broker = broker_factory(["--auto-create-topics", "false"], name="noauto")
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=2000)
    with pytest.raises(KafkaTimeoutError):
        producer.send("does-not-exist", b"x").get(timeout=5)
    producer.close()
    from confluent_kafka.admin import AdminClient
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(
        "does-not-exist", timeout=10)
    assert metadata.topics["does-not-exist"].error.code() == 3


def test_a_single_node_needs_one_port_and_a_taken_port_is_named_once(tmp_path):
    # A local Kafka quickstart holds 9093, the default Raft port: a node
    # alone must start anyway. (If something else holds 9093, so much the
    # better: that is the case under test.)
    quickstart = socket.socket()
    quickstart.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        quickstart.bind(("127.0.0.1", 9093))
        quickstart.listen()
    except OSError:
        pass
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    taken_address = "127.0.0.1:%d" % taken.getsockname()[1]
    try:
        broker = Broker(tmp_path / "alone")
        broker.command = lambda: [str(KEEL), "--listen", broker.bootstrap,
                                  "--data-dir", str(broker.data_dir)]
        broker.start()
        try:
            assert "cluster_listen=none" in broker.log()
            from confluent_kafka.admin import AdminClient
            assert list(AdminClient({"bootstrap.servers": broker.bootstrap})
                        .list_topics(timeout=10).brokers) == [1]
        finally:
            broker.close()

        # Asked for explicitly, a taken Raft port is an error naming its flag.
        result = run_keel("--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                          str(tmp_path / "asked"), "--cluster-listen", taken_address)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1, result.stderr
        assert "(--cluster-listen)" in errors[0] and errors[0].count("in use") == 1, errors[0]

        # The Kafka port likewise names --listen, once.
        result = run_keel("--listen", taken_address, "--data-dir", str(tmp_path / "kafka"))
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1, result.stderr
        assert "(--listen)" in errors[0] and errors[0].count("in use") == 1, errors[0]
    finally:
        taken.close()
        quickstart.close()
