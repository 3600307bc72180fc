"""Pid files, liveness, start and stop of background processes (real child processes)."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.errors import StackError
from pipelines.stack.process import (
    Liveness,
    PidFiles,
    ProcessRecord,
    StopOutcome,
    liveness,
    port_in_use,
    spawn,
    stop,
    tail,
    wait_ready,
)
from tests.conftest import free_port


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ProcessRecord]]:
    """Records of processes a test started; any still running are killed afterwards."""
    records: list[ProcessRecord] = []
    yield records
    for record in records:
        stop(record, timeout=1.0)


def _sleeper(tmp_path: Path, started: list[ProcessRecord], name: str = "sleeper",
             code: str = "import time; print('ready', flush=True); time.sleep(60)",
             ) -> ProcessRecord:
    proc, record = spawn(name, _python(code), env=dict(os.environ),
                         log=tmp_path / "logs" / f"{name}.log", endpoint="-")
    started.append(record)
    _wait_for_text(record.log, "ready")
    assert proc.poll() is None
    return record


def test_pid_file_round_trip(tmp_path: Path) -> None:
    files = PidFiles(tmp_path)
    record = ProcessRecord(service="broker", pid=4242, argv=("tansu", "broker", "--x", "a b"),
                           started_at=1_700_000_000.5, endpoint="127.0.0.1:9092",
                           log=tmp_path / "logs" / "broker.log", info="memory://tansu/")
    assert files.read("broker") is None
    files.write(record)
    assert files.path("broker") == tmp_path / "pids" / "broker.json"
    assert files.read("broker") == record
    files.remove("broker")
    assert files.read("broker") is None
    assert not files.path("broker").exists()


def test_unreadable_pid_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    files = PidFiles(tmp_path)
    files.dir.mkdir(parents=True)
    files.path("s3").write_text('{"service": "s3", "pid": "not a number"')
    with pytest.raises(StackError) as info:
        files.read("s3")
    text = str(info.value)
    assert str(files.path("s3")) in text
    assert "unreadable pid file" in text
    assert "delete" in text


def test_liveness_running_then_gone_after_stop(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    record = _sleeper(tmp_path, started)
    assert liveness(record) is Liveness.RUNNING
    assert stop(record, timeout=5.0) is StopOutcome.TERMINATED
    assert liveness(record) is Liveness.GONE
    with pytest.raises(ProcessLookupError):
        os.kill(record.pid, 0)
    assert stop(record, timeout=5.0) is StopOutcome.NOT_RUNNING


def test_pid_reused_by_another_program_is_never_signalled(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    victim = _sleeper(tmp_path, started)
    # A pid file from an earlier run whose pid now belongs to an unrelated program.
    stale = dataclasses.replace(victim, argv=("/opt/tansu", "broker", "--listener-url", "x"))
    assert liveness(stale) is Liveness.REPLACED
    assert stop(stale, timeout=0.5) is StopOutcome.PID_REUSED
    assert liveness(victim) is Liveness.RUNNING


def test_sigkill_after_timeout_when_sigterm_is_ignored(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    record = _sleeper(tmp_path, started, code=code)
    assert stop(record, timeout=0.3) is StopOutcome.KILLED
    assert liveness(record) is Liveness.GONE


def test_process_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    code = ("import sys; print('starting up'); "
            "print('fatal: storage engine postgres is not compiled in', file=sys.stderr); "
            "sys.exit(3)")
    proc, record = spawn("broker", _python(code), env=dict(os.environ),
                         log=tmp_path / "logs" / "broker.log", endpoint="127.0.0.1:1")
    with pytest.raises(StackError) as info:
        wait_ready("broker", proc, record, lambda: "not yet", timeout=30.0, fix="do the thing")
    text = str(info.value)
    assert "exited with code 3" in text
    assert "fatal: storage engine postgres is not compiled in" in text
    assert "starting up" in text
    assert str(record.log) in text
    assert "fix: do the thing" in text


def test_process_that_never_answers_times_out_with_last_error(
    tmp_path: Path, started: list[ProcessRecord]
) -> None:
    proc, record = spawn("s3", _python("import time; print('hung'); time.sleep(60)"),
                         env=dict(os.environ), log=tmp_path / "s3.log", endpoint="-")
    started.append(record)
    with pytest.raises(StackError) as info:
        wait_ready("s3", proc, record, lambda: "ConnectionRefused", timeout=0.3, fix="f")
    text = str(info.value)
    assert f"pid {proc.pid}" in text
    assert "did not answer" in text
    assert "ConnectionRefused" in text


def test_spawn_of_a_missing_program_is_a_stack_error(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "tansu"
    with pytest.raises(StackError) as info:
        spawn("broker", [str(missing), "broker"], env=dict(os.environ),
              log=tmp_path / "broker.log", endpoint="-")
    assert str(missing) in str(info.value)


def test_spawn_keeps_the_previous_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("previous run\n")
    proc, _ = spawn("y", _python("print('second run')"), env=dict(os.environ),
                         log=log, endpoint="-")
    proc.wait(timeout=10)
    assert log.read_text() == "second run\n"
    assert (tmp_path / "x.log.1").read_text() == "previous run\n"


def test_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    kept = tail(log, lines=3).splitlines()
    assert [line.strip() for line in kept] == ["line 97", "line 98", "line 99"]
    assert "no log" in tail(tmp_path / "missing.log")


def test_port_in_use_sees_a_bound_and_a_listening_socket() -> None:
    port = free_port()
    assert port_in_use("127.0.0.1", port) is False
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert port_in_use("127.0.0.1", port) is True
        sock.listen()
        assert port_in_use("127.0.0.1", port) is True
