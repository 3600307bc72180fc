"""A real local Flink session cluster for integration tests, and helpers to watch its jobs.

``tests/integration/conftest.py`` exposes its fixtures; tests ask for
``cluster_dir``. One cluster (a JobManager and two TaskManagers with
two slots each, on free ports) serves the whole session: each module that asks
for it gets it running (``livefeat cluster up`` is idempotent and replaces a
TaskManager an earlier test killed, or the whole cluster an earlier test
stopped), and the session stops it by process id at the end.
:func:`prometheus_urls` and :func:`scrape` read the TaskManagers' Prometheus endpoints.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

from pipelines.cluster.conf import default_options
from pipelines.cluster.daemons import prometheus_port
from pipelines.cluster.distribution import find_java
from pipelines.cluster.manager import ClusterManager
from pipelines.cluster.rest import FlinkRest
from pipelines.errors import StackError
from tests.conftest import free_port

T = TypeVar("T")

TASKMANAGERS = 2
SLOTS = 2


def java_or_skip() -> None:
    """Skip the test when this machine has no Java for Flink."""
    try:
        find_java()
    except StackError as exc:  # pragma: no cover - CI has Java 17
        pytest.skip(f"no Java for Flink: {exc.problem}")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 90.0,
             poll: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``
    (a test failure, not an ``AssertionError``: an expected-failure mark never hides it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def invoke(command: object, args: list[str]) -> str:
    """Run a livefeat click command in-process; fail with its output unless it exits 0."""
    result = CliRunner().invoke(command, args, catch_exceptions=False)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.stdout


def restarts(rest: FlinkRest, job: str) -> int:
    """The job's ``numRestarts``; 0 while the JobManager has not reported it yet.

    Right after a TaskManager dies the metric query can answer an empty list
    (the metric store is refreshed asynchronously), which is "not yet", not 0.
    """
    answer = rest.request("GET", f"/jobs/{job}/metrics?get=numRestarts")
    return int(answer[0]["value"]) if answer else 0


Sample = tuple[str, dict[str, str], float]
"""One Prometheus sample: metric name, labels, value."""

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_urls(state_dir: Path) -> list[str]:
    """The ``/metrics`` URL of every running TaskManager of the cluster of ``state_dir``.

    Each port is read from the TaskManager's own log, so a scrape never reaches another
    cluster's process; a TaskManager that exports nothing fails the test.
    """
    urls = []
    for tm in ClusterManager(state_dir).status().taskmanagers:
        if tm.state != "running":
            continue
        port = None if tm.log is None else prometheus_port(tm.log)
        if port is None:
            pytest.fail(f"{tm.service} exports no Prometheus metrics (no reporter port in "
                        f"{tm.log}); other Flink processes may hold every port of the "
                        "reporter's range")
        urls.append(f"http://127.0.0.1:{port}/metrics")
    return urls


def scrape(url: str, prefix: str = "", timeout: float = 10.0) -> list[Sample]:
    """The samples of a Prometheus text endpoint whose metric name starts with ``prefix``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        if not line.startswith(prefix) or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


SMALL_NETWORK_BUFFERS = {"taskmanager.memory.segment-size": "4kb"}
"""Network buffers of 4 KiB instead of 32 KiB: a source can then run only a few hundred
records ahead of the steps after it, as with production-sized input, instead of
having the whole of a test's input in flight before the first savepoint."""


def ensure_up(state_dir: Path) -> ClusterManager:
    """Start whatever of the 2 x 2-slot cluster of ``state_dir`` is not running."""
    manager = ClusterManager(state_dir)
    manager.up(default_options(taskmanagers=TASKMANAGERS, slots=SLOTS, rest_port=free_port(),
                               rpc_port=free_port(), extra=SMALL_NETWORK_BUFFERS))
    return manager


@pytest.fixture(scope="session")
def flink_cluster_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state directory of the session's cluster; stops the cluster at the end."""
    java_or_skip()
    state = tmp_path_factory.mktemp("cluster") / "state"
    try:
        yield state
    finally:
        ClusterManager(state).down()


@pytest.fixture(scope="module")
def cluster_dir(flink_cluster_state: Path) -> Path:
    """A state directory with a running 2 x 2-slot cluster on free ports."""
    ensure_up(flink_cluster_state)
    return flink_cluster_state
