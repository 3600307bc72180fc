"""ClusterManager without JVMs: port checks, stale pid files, status, environment, options."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cluster.conf import default_options, default_pythonpath, port_range
from pipelines.cluster.daemons import prometheus_port
from pipelines.cluster.distribution import find_java
from pipelines.cluster.manager import JM_SERVICE, ClusterManager, tm_service
from pipelines.errors import StackError
from pipelines.stack.process import ProcessRecord
from tests.conftest import free_port


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(service: str, pid: int, tmp_path: Path, endpoint: str) -> ProcessRecord:
    return ProcessRecord(service, pid, ("java", "-cp", "x", "Main"), time.time() - 5,
                         endpoint, tmp_path / f"{service}.log", "process group 1")


def test_a_taken_rest_port_fails_before_anything_starts(tmp_path: Path) -> None:
    try:
        find_java()
    except StackError as exc:  # pragma: no cover - CI has Java 17
        pytest.skip(exc.problem)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        manager = ClusterManager(tmp_path)
        with pytest.raises(StackError) as info:
            manager.up(default_options(rest_port=port, rpc_port=free_port()))
    assert info.value.problem == (
        f"port {port} on 127.0.0.1 is already in use by another program, so the Flink "
        "JobManager cannot listen there")
    assert info.value.where == "--rest-port"
    assert info.value.fix is not None and f"sport = :{port}" in info.value.fix
    assert "--rest-port with a free port" in info.value.fix
    assert list((tmp_path / "pids").glob("*.json")) == []
    assert not (tmp_path / "flink" / "conf").exists()


def test_status_without_a_cluster(tmp_path: Path) -> None:
    status = ClusterManager(tmp_path).status()
    assert status.rest_url is None
    assert status.jobmanager.state == "stopped"
    assert status.taskmanagers == [] and status.jobs == []
    assert ClusterManager(tmp_path).down() == []


def test_stale_pid_files_show_dead_and_are_cleaned_by_down(tmp_path: Path) -> None:
    manager = ClusterManager(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    manager.pid_files.write(_record(JM_SERVICE, _dead_pid(), tmp_path, url))
    manager.pid_files.write(_record(tm_service(1), _dead_pid(), tmp_path, "livefeat-tm-1-x"))
    manager.pid_files.write(_record(tm_service(2), _dead_pid(), tmp_path, "livefeat-tm-2-y"))

    status = manager.status()
    assert status.rest_url == url and status.answering is False
    assert status.jobmanager.state == "dead"
    assert [(t.service, t.state, t.resource_id) for t in status.taskmanagers] == [
        (tm_service(1), "dead", "livefeat-tm-1-x"), (tm_service(2), "dead", "livefeat-tm-2-y")]

    results = manager.down()
    assert [(service, outcome) for service, _, outcome in results] == [
        (tm_service(1), "had already exited; removed its pid file"),
        (tm_service(2), "had already exited; removed its pid file"),
        (JM_SERVICE, "had already exited; removed its pid file")]
    assert list((tmp_path / "pids").glob("*.json")) == []


def test_environment_of_the_cluster_processes(tmp_path: Path) -> None:
    manager = ClusterManager(tmp_path, environ={"PYTHONPATH": "/user/libs", "PATH": "/bin"})
    options = default_options()
    env = manager.environment(options, Path("/jdk17"))
    state = tmp_path.resolve()
    assert env["JAVA_HOME"] == "/jdk17"
    assert env["FLINK_CONF_DIR"] == str(state / "flink" / "conf")
    assert env["FLINK_LIB_DIR"] == str(state / "flink" / "lib")
    assert env["FLINK_LOG_DIR"] == str(state / "flink" / "log")
    assert env["FLINK_PID_DIR"] == str(state / "flink" / "script-pids")
    assert env["PATH"] == "/bin"
    assert env["PYTHONPATH"].split(":") == [*default_pythonpath(), "/user/libs"]


def test_default_options_use_this_interpreter_and_project() -> None:
    options = default_options(taskmanagers=3)
    assert options.python == sys.executable
    assert options.taskmanagers == 3
    project_root = str(Path(__file__).resolve().parents[2])
    assert options.pythonpath[0] == project_root


def test_prometheus_port_from_a_log(tmp_path: Path) -> None:
    log = tmp_path / "tm.log"
    assert prometheus_port(log) is None
    log.write_text("... INFO PrometheusReporter [] - Started PrometheusReporter HTTP server on "
                   "port 9251.\n")
    assert prometheus_port(log) == 9251


def test_port_ranges() -> None:
    assert list(port_range("9249-9251")) == [9249, 9250, 9251]
    assert list(port_range("9249")) == [9249]
    assert list(port_range("x")) == []
