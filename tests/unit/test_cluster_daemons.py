"""Pid handling of Flink daemons, with real processes started by a stand-in start script.

The stand-in behaves like ``flink-daemon.sh start``: it forks a long-running
process whose command line names the TaskManager's Java class, appends its pid
to ``$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid`` and exits.
(No JVM is started: that is the integration test's job.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.cluster.daemons import (
    TASKMANAGER,
    command_line,
    daemon_log,
    end_leftovers,
    forget_script_pids,
    group_leftovers,
    read_script_pids,
    recorded_group,
    script_pid_file,
    start_daemon,
)
from pipelines.errors import StackError
from pipelines.stack.process import Liveness, ProcessRecord, StopOutcome, liveness, stop

STAND_IN = """#!/usr/bin/env bash
pid_file="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid"
mkdir -p "$FLINK_PID_DIR" "$FLINK_LOG_DIR"
exec 200<"$FLINK_PID_DIR"
flock 200
id=$([ -f "$pid_file" ] && wc -l < "$pid_file" | tr -d ' ' || echo 0)
out="$FLINK_LOG_DIR/flink-$FLINK_IDENT_STRING-taskexecutor-$id-testhost.out"
{behaviour}
echo $! >> "$pid_file"
"""
RUNS_CLASS = ('"$PY" -c "import time; time.sleep(120)" '
              'org.apache.flink.runtime.taskexecutor.TaskManagerRunner "${@:2}" '
              '> "$out" 200<&- 2>&1 &')
WITH_WORKER = ('"$PY" -c "import subprocess, sys, time; '
               'subprocess.Popen([sys.executable, \\"-c\\", \\"import time; time.sleep(120)\\", '
               '\\"py\\" + \\"flink-worker\\"]); time.sleep(120)" '
               'org.apache.flink.runtime.taskexecutor.TaskManagerRunner > "$out" 200<&- 2>&1 &')
WRONG_PROGRAM = '"$PY" -c "import time; time.sleep(120)" something-else > "$out" 200<&- 2>&1 &'


@pytest.fixture()
def spawned() -> Iterator[list[int]]:
    """Pids a test started; whatever still runs is killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _bin(tmp_path: Path, behaviour: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "taskmanager.sh").write_text(STAND_IN.format(behaviour=behaviour))
    return bin_dir


def _start(tmp_path: Path, bin_dir: Path, service: str = "flink-taskmanager-1",
           args: tuple[str, ...] = (), exec_timeout: float = 5.0) -> ProcessRecord:
    env = {**os.environ, "PY": sys.executable, "FLINK_PID_DIR": str(tmp_path / "pids"),
           "FLINK_LOG_DIR": str(tmp_path / "log"), "FLINK_IDENT_STRING": "t"}
    return start_daemon(
        TASKMANAGER, service=service, bin_dir=bin_dir, args=args, env=env,
        pid_dir=tmp_path / "pids", log_dir=tmp_path / "log", ident="t", endpoint=service,
        info="x", exec_timeout=exec_timeout,
    )


def test_start_records_the_jvm_pid_its_command_line_and_group(tmp_path: Path,
                                                              spawned: list[int]) -> None:
    record = _start(tmp_path, _bin(tmp_path, RUNS_CLASS), args=("-D", "k=v"))
    spawned.append(record.pid)
    assert read_script_pids(script_pid_file(tmp_path / "pids", "t", TASKMANAGER)) == [record.pid]
    assert TASKMANAGER.main_class in record.argv and "k=v" in record.argv
    assert command_line(record.pid) == list(record.argv)
    assert liveness(record) is Liveness.RUNNING
    group = recorded_group(record)
    assert group is not None and group == os.getpgid(record.pid) != record.pid
    assert record.info == f"process group {group}; x"
    assert record.log == tmp_path / "log" / "flink-t-taskexecutor-0-testhost.log"

    assert stop(record, timeout=5) is StopOutcome.TERMINATED
    assert liveness(record) is Liveness.GONE
    forget_script_pids(tmp_path / "pids", "t", {record.pid})
    assert not script_pid_file(tmp_path / "pids", "t", TASKMANAGER).exists()


def test_concurrent_starts_each_find_their_own_pid(tmp_path: Path, spawned: list[int]) -> None:
    bin_dir = _bin(tmp_path, RUNS_CLASS)
    with ThreadPoolExecutor(3) as pool:
        records = list(pool.map(lambda i: _start(tmp_path, bin_dir, f"tm-{i}", (f"id={i}",)),
                                range(3)))
    spawned.extend(r.pid for r in records)
    assert len({r.pid for r in records}) == 3
    for index, record in enumerate(records):
        assert f"id={index}" in record.argv  # the pid really is the one this start forked
        assert recorded_group(record) == os.getpgid(record.pid)
    listed = read_script_pids(script_pid_file(tmp_path / "pids", "t", TASKMANAGER))
    assert sorted(listed) == sorted(r.pid for r in records)
    assert {r.log.name for r in records} == {
        f"flink-t-taskexecutor-{i}-testhost.log" for i in range(3)}


def test_a_start_that_runs_something_else_is_undone(tmp_path: Path, spawned: list[int]) -> None:
    with pytest.raises(StackError, match="did not come up") as info:
        _start(tmp_path, _bin(tmp_path, WRONG_PROGRAM), exec_timeout=1.0)
    assert info.value.fix is not None and "JAVA_HOME" in info.value.fix
    (pid,) = read_script_pids(script_pid_file(tmp_path / "pids", "t", TASKMANAGER))
    spawned.append(pid)
    deadline = time.monotonic() + 5
    while command_line(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert command_line(pid) is None  # the stray process was ended with its group


def test_a_failing_script_shows_its_output(tmp_path: Path) -> None:
    with pytest.raises(StackError) as info:
        _start(tmp_path, _bin(tmp_path, 'echo "[ERROR] no flink-dist jar"; exit 1'))
    assert "exited with code 1" in info.value.problem
    assert "[ERROR] no flink-dist jar" in info.value.problem


def test_workers_left_by_a_killed_taskmanager_are_found_and_ended(
        tmp_path: Path, spawned: list[int]) -> None:
    record = _start(tmp_path, _bin(tmp_path, WITH_WORKER))
    spawned.append(record.pid)
    group = recorded_group(record)
    assert group is not None
    deadline = time.monotonic() + 10
    while not group_leftovers(group, ("pyflink",)) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = group_leftovers(group, ("pyflink",))
    spawned.extend(found)
    assert len(found) == 1
    worker = found[0]
    os.kill(record.pid, signal.SIGKILL)
    assert group_leftovers(group, ("pyflink",)) == [worker]  # outlives its parent
    assert group_leftovers(group, ("no-such-marker",)) == []
    assert end_leftovers(group, ("pyflink",)) == [worker]
    assert group_leftovers(group, ("",)) == []


def test_script_pid_files_and_log_names(tmp_path: Path) -> None:
    path = tmp_path / "flink-t-taskexecutor.pid"
    assert read_script_pids(path) == []
    path.write_text("11\n12\n\n13\n")
    forget_script_pids(tmp_path, "t", {12})
    assert read_script_pids(path) == [11, 13]
    (tmp_path / "flink-t-taskexecutor-1-somehost.out").write_text("")
    assert daemon_log(tmp_path, "t", TASKMANAGER, 1).name == "flink-t-taskexecutor-1-somehost.log"
    assert daemon_log(tmp_path, "t", TASKMANAGER, 5).name == "flink-t-taskexecutor-5.log"
    record = ProcessRecord("s", 1, ("java",), 0.0, "", tmp_path, "rpc port 1")
    assert recorded_group(record) is None
