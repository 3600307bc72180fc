"""A real local Flink cluster: up, submit, savepoint, resume, TaskManager loss, down.

The session's cluster (a JobManager and two TaskManagers with two slots each,
on free ports; see ``tests/integration/flink_cluster.py``) serves the module.
The probe job (``pipelines.cluster.probe``) counts an ordered number sequence
per key in keyed state; every line it writes must
satisfy ``count == n // keys + 1``, which only holds after a restore when the
counters and the source position came back together. The reference values
here are computed from ``n`` alone, never read from the job's state.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.cli.cluster_cmd import cluster, jobs, submit
from pipelines.cluster.conf import default_options
from pipelines.cluster.daemons import group_leftovers, prometheus_port, recorded_group
from pipelines.cluster.manager import JM_SERVICE, ClusterManager, tm_service
from pipelines.cluster.probe import DEFAULT_KEYS, CountLine, read_counts, violations
from pipelines.cluster.rest import FlinkRest
from pipelines.stack.process import Liveness, liveness
from tests.integration.flink_cluster import invoke as _invoke
from tests.integration.flink_cluster import restarts as _restarts
from tests.integration.flink_cluster import wait_for

pytestmark = pytest.mark.integration


def _lines_after(out: Path, minimum: int) -> list[CountLine]:
    return wait_for(f"{minimum} probe lines in {out}",
                    lambda: (lines if len(lines := read_counts(out)) >= minimum else None))


def _past(out: Path, n: int) -> list[CountLine] | None:
    lines = read_counts(out)
    return lines if lines and max(line.n for line in lines) > n else None


def test_up_registers_two_taskmanagers_and_is_idempotent(cluster_dir: Path) -> None:
    manager = ClusterManager(cluster_dir)
    rest = FlinkRest(manager.rest_url() or "")
    overview = rest.overview()
    assert (overview["taskmanagers"], overview["slots-total"]) == (2, 4)
    pids = {p.service: p.pid for p in manager.status().taskmanagers}
    assert len(pids) == 2

    again = manager.up(default_options(taskmanagers=2, slots=2))
    assert again.started == ()
    assert set(again.already_running) == {JM_SERVICE, tm_service(1), tm_service(2)}
    assert {p.service: p.pid for p in manager.status().taskmanagers} == pids

    text = _invoke(cluster, ["status", "--state-dir", str(cluster_dir)])
    assert "taskmanager-1" in text and "taskmanager-2" in text
    assert "2 TaskManager(s), 4/4 slots free" in text


def test_job_savepoint_resume_and_taskmanager_loss(cluster_dir: Path, tmp_path: Path) -> None:
    manager = ClusterManager(cluster_dir)
    rest = FlinkRest(manager.rest_url() or "")
    state = ["--state-dir", str(cluster_dir)]

    # 1. submit through the CLI; the job runs and counts.
    first_out = tmp_path / "first"
    job1 = _invoke(submit, ["pipelines.cluster.probe", *state, "--", "--out", str(first_out),
                            "--delay-ms", "3", "--mode", "thread"]).strip()
    assert len(job1) == 32
    assert rest.wait_for_state(job1, {"RUNNING"}) == "RUNNING"
    _lines_after(first_out, 100)
    assert job1 in _invoke(jobs, ["list", *state])
    wait_for("a completed checkpoint",
             lambda: rest.checkpoints(job1)["counts"]["completed"] >= 1)

    # The Prometheus reporter exports the job's user metrics under the documented name.
    ports = [prometheus_port(p.log) for p in manager.status().taskmanagers if p.log]
    bodies = [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
              .decode() for port in ports if port]
    assert any("flink_taskmanager_job_task_operator_livefeat_probe_counted{" in body
               for body in bodies)
    last_n = [float(line.rsplit(" ", 1)[1]) for body in bodies for line in body.splitlines()
              if line.startswith("flink_taskmanager_job_task_operator_livefeat_probe_last_n{")]
    assert last_n and max(last_n) > 0  # the pushed thread-mode gauge carries real values

    # 2. savepoint and cancel through the CLI.
    savepoint_dir = (tmp_path / "savepoints").as_uri()
    location = _invoke(jobs, ["savepoint", job1, "--dir", savepoint_dir, "--cancel",
                              *state]).strip()
    assert location.startswith("file:") and "savepoint-" in location
    assert rest.wait_for_state(job1, {"CANCELED"}) == "CANCELED"
    first = read_counts(first_out)
    assert first and violations(first) == []

    # 3. resume from the savepoint: counting continues where the savepoint left it.
    second_out = tmp_path / "second"
    job2 = _invoke(jobs, ["resume", location, "pipelines.cluster.probe", *state, "--",
                          "--out", str(second_out), "--delay-ms", "3", "--mode", "thread"]).strip()
    assert rest.wait_for_state(job2, {"RUNNING"}) == "RUNNING"
    restored = rest.checkpoints(job2)["latest"]["restored"]
    assert restored["is_savepoint"] is True
    assert restored["external_path"] == location
    second = _lines_after(second_out, 50)
    assert violations(second) == []
    resumed_at = min(line.n for line in second)
    # Nothing was skipped, and the run did not start over: the counters came back.
    assert 0 < resumed_at <= max(line.n for line in first) + 1
    assert min(line.count for line in second) == resumed_at // DEFAULT_KEYS + 1 > 1

    # 4. kill -9 the TaskManager that runs the job: the job restarts on the spare slots.
    busiest = min(rest.taskmanagers(), key=lambda tm: tm.free_slots)
    victim = next(p for p in manager.status().taskmanagers if p.resource_id == busiest.id)
    assert victim.pid is not None
    before_kill = max(line.n for line in read_counts(second_out))
    os.kill(victim.pid, signal.SIGKILL)
    wait_for("a restart", lambda: _restarts(rest, job2) >= 1)

    # 5. meanwhile `up` replaces the dead TaskManager, and only it.
    with ThreadPoolExecutor(1) as pool:
        replacing = pool.submit(manager.up, default_options(taskmanagers=2, slots=2))
        rest.wait_for_state(job2, {"RUNNING"})
        after = wait_for("counting after the failover",
                         lambda: _past(second_out, before_kill + 50))
        replaced = replacing.result(timeout=180)
    assert violations(after) == []
    assert replaced.started == (victim.service,)
    assert replaced.taskmanagers == 2
    wait_for("two TaskManagers", lambda: rest.overview()["taskmanagers"] == 2)
    rest.cancel(job2)
    assert rest.wait_for_state(job2, {"CANCELED"}) == "CANCELED"


def test_down_stops_every_cluster_process(cluster_dir: Path) -> None:
    manager = ClusterManager(cluster_dir)
    assert list(manager.paths.logs.glob("hs_err_pid*.log")) == []  # no JVM crashed
    # Stand alone: whatever an earlier test left (a killed TaskManager), `up` mends it.
    manager.up(default_options(taskmanagers=2, slots=2))
    services = [JM_SERVICE, *(p.service for p in manager.status().taskmanagers)]
    records = [manager.pid_files.read(service) for service in services]
    assert all(r is not None and liveness(r) is Liveness.RUNNING for r in records)

    text = _invoke(cluster, ["down", "--state-dir", str(cluster_dir)])
    outcomes = dict(line.rsplit(": ", 1) for line in text.strip().splitlines())
    assert len(outcomes) == len(services), text
    # SIGTERM normally; SIGKILL after the timeout on a very busy machine.
    assert set(outcomes.values()) <= {"stopped", "killed"}, text
    for record in records:
        assert record is not None
        assert liveness(record) is Liveness.GONE
        group = recorded_group(record)
        assert group is not None and group_leftovers(group, ("",)) == []
        assert manager.pid_files.read(record.service) is None
    assert manager.status().rest_url is None
