"""The S3 offline sink through outages of a real S3 endpoint (a private moto server per test).

A frozen endpoint (SIGSTOP: connections hang) and an endpoint that is not there yet
(connection refused) must both be ridden out: writes back off, succeed afterwards,
lose nothing, and the outage is counted. An endpoint that never comes back ends in
SinkError after the configured give-up time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipelines.config import OfflineStoreSettings, S3Settings, Settings
from pipelines.errors import SinkError
from pipelines.jobs.marketplace import PIPELINE
from pipelines.offline import read_changelog
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.retry import RetryPolicy
from pipelines.sinks.s3 import S3ParquetSink, boto3_client
from pipelines.sinks.tables import changelog_schema
from pipelines.stack import s3 as stack_s3
from tests.conftest import free_port
from tests.unit.test_features_exact import random_events
from tests.unit.test_offline_changelog import _as_dicts

pytestmark = pytest.mark.integration

BUCKET = "outage-test"


class Moto:
    """A private moto S3 server on a free port (started, frozen, thawed, stopped by pid)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = stack_s3.endpoint_url(port)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(stack_s3.server_argv(sys.executable, self.port),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while stack_s3.probe(self.url, "us-east-1") is not None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)
        stack_s3.ensure_bucket(stack_s3.emulator_client(self.url, "us-east-1"), BUCKET,
                               "us-east-1")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    """One running private server for the module (tests that freeze it also thaw it)."""
    server = Moto(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _settings(server: Moto) -> Settings:
    return Settings(s3=S3Settings(endpoint_url=server.url, bucket=BUCKET),
                    offline_store=OfflineStoreSettings(
                        uri=f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"))


def _sink(settings: Settings, give_up_s: float) -> S3ParquetSink:
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, give_up_after_s=give_up_s)
    client = boto3_client(settings, connect_timeout=0.5, read_timeout=1.0)
    return S3ParquetSink(settings.offline_store.uri, settings, policy=policy, client=client)


def _rows() -> list[dict[str, Any]]:
    events = random_events(17)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    return run_pipeline(PIPELINE, events, horizon, created_ms=1)["seller_features"].rows


def _write_all(sink: S3ParquetSink, rows: list[dict[str, Any]], during: Callable[[], None],
               after_batches: int = 2) -> None:
    schema = changelog_schema(PIPELINE.view("seller_features"))
    batches = [rows[i:i + 40] for i in range(0, len(rows), 40)]
    for n, batch in enumerate(batches):
        if n == after_batches:
            during()
        sink.write("features/seller_features", schema, batch)


def _assert_all_there(settings: Settings, rows: list[dict[str, Any]]) -> None:
    got = _as_dicts(read_changelog(settings, "seller_features", dedupe=False))
    assert got == sorted(rows, key=lambda r: (r["seller_id"], r["event_timestamp"]))


def test_writes_ride_out_a_frozen_endpoint(moto: Moto) -> None:
    settings = _settings(moto)
    sink = _sink(settings, give_up_s=60)
    rows = _rows()

    def freeze_for_a_while() -> None:
        moto.signal(signal.SIGSTOP)
        threading.Timer(3.0, moto.signal, (signal.SIGCONT,)).start()

    _write_all(sink, rows, freeze_for_a_while)
    assert sink.retrier.stats.outages == 1
    assert sink.retrier.stats.retries >= 1
    _assert_all_there(settings, rows)  # every row exactly once: no loss, no duplicate file


class Listener:
    """Opens ``port`` only when told to, then pipes each connection to ``target_port``: an
    endpoint that is not there yet (connection refused) and then is."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self.server: socket.socket | None = None

    def open(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def test_writes_wait_for_an_endpoint_that_is_not_up_yet(moto: Moto) -> None:
    listener = Listener(free_port(), moto.port)
    settings = _settings(Moto(listener.port))  # nothing listens there yet: refused
    sink = _sink(settings, give_up_s=60)
    rows = _rows()
    opener = threading.Timer(2.0, listener.open)
    opener.start()
    try:
        _write_all(sink, rows, lambda: None, after_batches=0)
    finally:
        opener.join()
    try:
        assert sink.retrier.stats.outages == 1
        assert "Could not connect" in sink.retrier.stats.last_error
        _assert_all_there(settings, rows)
    finally:
        listener.close()


def test_sink_gives_up_when_the_endpoint_stays_away() -> None:
    settings = _settings(Moto(free_port()))  # never started
    sink = _sink(settings, give_up_s=1.0)
    with pytest.raises(SinkError, match="unavailable for") as err:
        _write_all(sink, _rows(), lambda: None, after_batches=0)
    assert "s3.endpoint_url" in str(err.value)
    assert (sink.retrier.stats.outages, sink.retrier.stats.gave_up) == (1, 1)


def test_missing_bucket_fails_at_once_with_a_fix(moto: Moto) -> None:
    settings = Settings(s3=S3Settings(endpoint_url=moto.url, bucket="absent-bucket"),
                        offline_store=OfflineStoreSettings(uri="s3://absent-bucket/x"))
    sink = _sink(settings, give_up_s=60)
    with pytest.raises(SinkError, match="NoSuchBucket"):
        _write_all(sink, _rows()[:5], lambda: None)
    assert sink.retrier.stats.outages == 0
