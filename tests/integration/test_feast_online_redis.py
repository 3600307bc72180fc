"""The online sink on real Redis: the changelog scenario on the machine's Redis, outages on a
private redis-server that the test freezes (SIGSTOP) and thaws, never the shared one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipelines.config import OfflineStoreSettings, OnlineStoreSettings, Settings
from pipelines.errors import SinkError
from pipelines.feast_repo import apply
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.online import OnlineSink
from pipelines.sinks.retry import RetryPolicy
from pipelines.sinks.tables import changelog_schema
from tests.conftest import free_port
from tests.reference import Reference
from tests.unit.test_features_exact import random_events
from tests.unit.test_online_sqlite import CREATED, assert_online_is, run_scenario

pytestmark = pytest.mark.integration

SHARED_REDIS = "127.0.0.1:6379"


def _settings(tmp_path: Path, connection: str) -> Settings:
    return Settings(
        online_store=OnlineStoreSettings(type="redis", redis_connection_string=connection,
                                         sqlite_path=tmp_path / "online.db"),
        offline_store=OfflineStoreSettings(uri=str(tmp_path / "offline")),
    )


def _project_keys(client: redis.Redis, project: str) -> list[bytes]:
    return list(client.scan_iter(b"*" + project.encode()))


@pytest.fixture
def shared_redis() -> redis.Redis:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {SHARED_REDIS} (the project's machines and CI run one)")
    return client


def test_redis_online_values_follow_the_changelog(tmp_path: Path,
                                                  shared_redis: redis.Redis) -> None:
    project = f"t{uuid.uuid4().hex[:10]}"  # a unique key suffix: no clash with anyone
    settings = _settings(tmp_path, SHARED_REDIS)
    try:
        sink = run_scenario(settings, project)
        assert sink.outages.outages == 0
        assert _project_keys(shared_redis, project)
        sink.close()
    finally:
        apply(settings, project=project).teardown()
    assert _project_keys(shared_redis, project) == []


# -- outages, on a private server --------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield port, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _changelog() -> tuple[list[dict[str, object]], dict[str, dict[str, object]], dict[str, int]]:
    events = random_events(8)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    rows = run_pipeline(PIPELINE, events, horizon, created_ms=CREATED)["user_features"].rows
    keys = sorted({str(r["user_id"]) for r in rows})
    want = {r["user_id"]: r for r in Reference(events).as_of("user_features",
                                                              [(k, horizon) for k in keys])}
    last = {k: max(int(r["event_timestamp"]) for r in rows if r["user_id"] == k) for k in keys}
    return rows, want, last


def test_writes_ride_out_a_frozen_redis(tmp_path: Path,
                                        private_redis: tuple[int, subprocess.Popen[bytes]]
                                        ) -> None:
    port, proc = private_redis
    settings = _settings(tmp_path, f"127.0.0.1:{port}")
    rows, want, last = _changelog()
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, give_up_after_s=60)
    sink = OnlineSink(settings, project="outage", policy=policy, redis_socket_timeout_s=0.5)
    schema = changelog_schema(PIPELINE.view("user_features"))
    half = len(rows) // 2
    sink.write("features/user_features", schema, rows[:half])
    os.kill(proc.pid, signal.SIGSTOP)  # the server stops answering, connections hang
    thaw = threading.Timer(3.0, os.kill, (proc.pid, signal.SIGCONT))
    thaw.start()
    try:
        for i in range(half, len(rows), 60):
            sink.write("features/user_features", schema, rows[i:i + 60])
    finally:
        thaw.join()
    assert sink.outages.outages == 1
    assert sink.outages.retries >= 1
    assert sink.outages.gave_up == 0
    sink.close()
    store = apply(settings, project="outage")
    assert_online_is(store, "user_features", want, last)  # nothing lost


def test_sink_gives_up_after_the_configured_time(tmp_path: Path,
                                                 private_redis: tuple[int,
                                                                      subprocess.Popen[bytes]]
                                                 ) -> None:
    port, proc = private_redis
    settings = _settings(tmp_path, f"127.0.0.1:{port}")
    rows, _, _ = _changelog()
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, give_up_after_s=1.5)
    sink = OnlineSink(settings, project="giveup", policy=policy, redis_socket_timeout_s=0.3)
    schema = changelog_schema(PIPELINE.view("user_features"))
    sink.write("features/user_features", schema, rows[:10])
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(SinkError, match="unavailable for"):
            sink.write("features/user_features", schema, rows[10:])
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert (sink.outages.outages, sink.outages.gave_up) == (1, 1)
