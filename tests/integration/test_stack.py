"""The embedded stack end to end: real Tansu broker, real moto S3 server, real clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from pipelines.config import KafkaSettings, Settings
from pipelines.errors import StackError
from pipelines.stack import StackManager, override_stack, s3_client
from pipelines.topics import REFERENCE_TOPICS
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PARTITIONS = 2  # neither livefeat's default (4) nor Tansu's (3): proves the setting is used


def _settings(tmp_path: Path, storage: str = "memory") -> Settings:
    base = Settings(kafka=KafkaSettings(partitions=PARTITIONS))
    return override_stack(base, broker_port=free_port(), s3_port=free_port(),
                          broker_storage=storage, state_dir=tmp_path / "state")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[StackManager]:
    manager = StackManager(_settings(tmp_path))
    yield manager
    manager.down()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _read_back(bootstrap: str, topic: str, partition: int, offset: int, count: int,
               timeout: float = 20.0) -> list[tuple[bytes | None, bytes | None]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((m.key, m.value) for m in batch)
        return got
    finally:
        consumer.close()


def test_up_status_use_up_again_down(manager: StackManager) -> None:
    endpoints = manager.up()
    assert endpoints.started == ("s3", "broker")
    assert endpoints.already_running == ()
    assert endpoints.bootstrap_servers == f"127.0.0.1:{manager.settings.stack.broker_port}"
    assert endpoints.s3_endpoint_url == f"http://127.0.0.1:{manager.settings.stack.s3_port}"
    assert endpoints.topics == dict.fromkeys(REFERENCE_TOPICS, PARTITIONS)

    statuses = {s.service: s for s in manager.status()}
    pids = {name: s.pid for name, s in statuses.items()}
    for name, status in statuses.items():
        assert status.state == "running"
        assert status.answering is True
        record = manager.pid_files.read(name)
        assert record is not None and record.pid == status.pid
        assert not _gone(record.pid)

    # The broker's own metadata, read independently of the manager.
    admin = KafkaAdminClient(bootstrap_servers=endpoints.bootstrap_servers)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    assert {t: described[t] for t in REFERENCE_TOPICS} == dict.fromkeys(REFERENCE_TOPICS, 2)

    # One record through every reference topic.
    producer = KafkaProducer(bootstrap_servers=endpoints.bootstrap_servers, acks="all")
    sent = {}
    for topic in REFERENCE_TOPICS:
        key, value = b"user-1", f"{topic}:{uuid.uuid4()}".encode()
        meta = producer.send(topic, key=key, value=value).get(timeout=10)
        sent[topic] = (meta.partition, meta.offset, key, value)
    producer.close()
    for topic, (partition, offset, key, value) in sent.items():
        assert _read_back(endpoints.bootstrap_servers, topic, partition, offset, 1) == [
            (key, value)
        ]

    # An object through the offline-store bucket.
    client = s3_client(endpoints.apply(manager.settings))
    body = uuid.uuid4().bytes * 100
    client.put_object(Bucket=endpoints.bucket, Key="probe/object.bin", Body=body)
    assert client.get_object(Bucket=endpoints.bucket, Key="probe/object.bin")["Body"].read() == body

    # Up again: nothing new starts, the same processes keep running, data is still there.
    again = manager.up()
    assert again.started == ()
    assert again.already_running == ("s3", "broker")
    assert {s.service: s.pid for s in manager.status()} == pids
    partition, offset, key, value = sent[REFERENCE_TOPICS[0]]
    assert _read_back(again.bootstrap_servers, REFERENCE_TOPICS[0], partition, offset, 1) == [
        (key, value)
    ]

    results = {r.service: r for r in manager.down()}
    assert {name: (r.pid, r.outcome) for name, r in results.items()} == {
        "broker": (pids["broker"], "stopped"), "s3": (pids["s3"], "stopped"),
    }
    assert [(s.service, s.state) for s in manager.status()] == [
        ("s3", "stopped"), ("broker", "stopped"),
    ]
    assert not manager.pid_files.path("broker").exists()
    assert not manager.pid_files.path("s3").exists()
    assert all(pid is not None and _gone(pid) for pid in pids.values())


def test_cli_services_outlive_the_command(tmp_path: Path) -> None:
    livefeat = str(Path(sys.executable).parent / "livefeat")
    state = tmp_path / "state"
    broker_port, s3_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIVEFEAT_CONFIG"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([livefeat, "stack", *args, "--state-dir", str(state)], cwd=tmp_path,
                              env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                              timeout=120, check=False)

    up = run("up", "--broker-port", str(broker_port), "--s3-port", str(s3_port))
    try:
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{broker_port}" in up.stdout
        assert f"http://127.0.0.1:{s3_port}" in up.stdout
        # The settings still name the default ports, so the user is told to point them here.
        assert f"set it to 127.0.0.1:{broker_port}" in up.stdout

        status = run("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("running") == 2

        second = run("up", "--broker-port", str(broker_port), "--s3-port", str(s3_port))
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == 2
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.count(": stopped") == 2
    stopped = run("status")
    assert stopped.returncode == 3
    assert stopped.stdout.count("stopped") == 2


def test_s3_storage_keeps_records_across_a_broker_restart(tmp_path: Path) -> None:
    manager = StackManager(_settings(tmp_path, storage="s3"))
    try:
        endpoints = manager.up()
        assert endpoints.broker_storage == "s3://livefeat-broker/"
        topic = REFERENCE_TOPICS[2]
        producer = KafkaProducer(bootstrap_servers=endpoints.bootstrap_servers, acks="all")
        values = [f"bid-{i}-{uuid.uuid4()}".encode() for i in range(20)]
        metas = [producer.send(topic, value=v, partition=1).get(timeout=10) for v in values]
        producer.close()
        first_offset = metas[0].offset

        before = manager.pid_files.read("broker")
        stopped = manager.down(["broker"])
        assert [(r.service, r.outcome) for r in stopped] == [("broker", "stopped")]
        assert [s.state for s in manager.status()] == ["running", "stopped"]

        restarted = manager.up()
        assert restarted.started == ("broker",)
        assert restarted.already_running == ("s3",)
        after = manager.pid_files.read("broker")
        assert before is not None and after is not None and after.pid != before.pid
        got = _read_back(restarted.bootstrap_servers, topic, 1, first_offset, len(values))
        assert [v for _, v in got] == values
    finally:
        manager.down()


def test_broker_port_taken_rolls_back_what_this_call_started(tmp_path: Path) -> None:
    import socket

    manager = StackManager(_settings(tmp_path))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", manager.settings.stack.broker_port))
        holder.listen()
        with pytest.raises(StackError) as info:
            manager.up()
    text = str(info.value)
    assert f"port {manager.settings.stack.broker_port}" in text
    assert "stack.broker_port" in text and "--broker-port" in text
    # The S3 emulator this call had started is stopped again, its pid file gone.
    assert [s.state for s in manager.status()] == ["stopped", "stopped"]
    s3_log = (manager.log_dir / "s3.log").read_text()
    assert "Running on" in s3_log


def test_broker_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'storage engine s3: bucket unreachable' >&2\nexit 2\n")
    fake.chmod(0o755)
    manager = StackManager(_settings(tmp_path), tansu_path=fake)
    with pytest.raises(StackError) as info:
        manager.up()
    text = str(info.value)
    assert "exited with code 2" in text
    assert "storage engine s3: bucket unreachable" in text
    assert str(manager.log_dir / "broker.log") in text
    assert [s.state for s in manager.status()] == ["stopped", "stopped"]


def test_session_fixture_points_at_a_running_stack(
    stack_settings: Settings, kafka_bootstrap: str
) -> None:
    assert kafka_bootstrap == stack_settings.kafka.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert set(REFERENCE_TOPICS) <= topics
    client = s3_client(stack_settings)
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert stack_settings.s3.bucket in names
    # Local paths of the session point into the temporary directory, not the work tree.
    state = stack_settings.stack.state_dir
    assert Path(stack_settings.offline_store.uri).parent == state.parent
    assert stack_settings.online_store.sqlite_path.parent == state.parent
