"""StackManager errors and state reporting that need no running service."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.config import Settings
from pipelines.errors import StackError
from pipelines.stack import StackManager, override_stack
from pipelines.stack.broker import tansu_binary
from pipelines.stack.process import PidFiles, ProcessRecord, spawn
from tests.conftest import free_port


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "broker_port": free_port(), "s3_port": free_port(), "state_dir": tmp_path / "state",
    }
    values.update(overrides)
    return override_stack(Settings(), **values)  # type: ignore[arg-type]


def _no_pid_files(manager: StackManager) -> bool:
    return not manager.pid_files.dir.exists() or not any(manager.pid_files.dir.iterdir())


def _dead_record(tmp_path: Path, service: str) -> ProcessRecord:
    """The record of a process that really ran and has exited (and been reaped)."""
    proc, record = spawn(service, [sys.executable, "-c", "print('bye')"], env=dict(os.environ),
                         log=tmp_path / "state" / "logs" / f"{service}.log",
                         endpoint="127.0.0.1:1")
    proc.wait(timeout=10)
    return record


def test_port_in_use_names_the_port_the_setting_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        manager = StackManager(_settings(tmp_path, s3_port=port))
        with pytest.raises(StackError) as info:
            manager.up()
    text = str(info.value)
    assert f"port {port} on 127.0.0.1 is already in use" in text
    assert "stack.s3_port" in text
    assert "--s3-port" in text
    assert f"lsof -iTCP:{port}" in text
    assert _no_pid_files(manager)


def test_missing_broker_binary_fails_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "tansu"
    manager = StackManager(_settings(tmp_path), tansu_path=missing)
    with pytest.raises(StackError) as info:
        manager.up()
    text = str(info.value)
    assert str(missing) in text
    assert "binary is missing" in text
    assert "setup.sh" in text
    assert _no_pid_files(manager)


def test_broker_binary_that_is_not_executable(tmp_path: Path) -> None:
    binary = tmp_path / "tansu"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o644)
    with pytest.raises(StackError) as info:
        tansu_binary(binary)
    assert "not executable" in str(info.value)
    assert f"chmod +x {binary}" in str(info.value)


def test_bundled_broker_binary_is_found() -> None:
    path = tansu_binary()
    assert path.name == "tansu"
    assert os.access(path, os.X_OK)


def test_missing_python_for_the_s3_emulator(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python3"
    manager = StackManager(_settings(tmp_path), python=str(python))
    with pytest.raises(StackError) as info:
        manager.up()
    assert str(python) in str(info.value)
    assert "interpreter" in str(info.value)
    assert _no_pid_files(manager)


def test_status_without_pid_files_is_stopped(tmp_path: Path) -> None:
    statuses = StackManager(_settings(tmp_path)).status()
    assert [(s.service, s.state, s.pid) for s in statuses] == [
        ("s3", "stopped", None), ("broker", "stopped", None),
    ]


def test_dead_pid_file_is_reported_and_cleaned_by_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    record = _dead_record(tmp_path, "broker")
    manager = StackManager(settings)
    manager.pid_files.write(record)
    broker = {s.service: s for s in manager.status()}["broker"]
    assert broker.state == "dead"
    assert broker.pid == record.pid
    assert "its process is gone" in broker.detail
    assert "livefeat stack down" in broker.detail
    assert str(manager.pid_files.path("broker")) in broker.detail

    results = {r.service: r for r in manager.down()}
    assert results["broker"].pid == record.pid
    assert "already exited" in results["broker"].outcome
    assert results["s3"].outcome == "was not running"
    assert not manager.pid_files.path("broker").exists()
    assert [s.state for s in manager.status()] == ["stopped", "stopped"]


def test_down_of_an_unknown_service(tmp_path: Path) -> None:
    with pytest.raises(StackError) as info:
        StackManager(_settings(tmp_path)).down(["zookeeper"])
    assert "unknown service zookeeper" in str(info.value)


def test_override_stack_keeps_other_values() -> None:
    base = Settings()
    changed = override_stack(base, broker_port=19092, broker_storage="s3")
    assert changed.stack.broker_port == 19092
    assert changed.stack.broker_storage == "s3"
    assert changed.stack.s3_port == base.stack.s3_port
    assert changed.kafka == base.kafka
    assert override_stack(base) is base


# --- the CLI over the same state ------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("LIVEFEAT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no livefeat.yaml here: built-in defaults
    return CliRunner()


def test_cli_status_stopped_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["stack", "status", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 3, result.output
    assert result.output.count("stopped") == 2


def test_cli_status_dead_exits_1_and_says_how_to_clean_up(
    runner: CliRunner, tmp_path: Path
) -> None:
    record = _dead_record(tmp_path, "s3")
    PidFiles(tmp_path / "state").write(record)
    result = runner.invoke(cli, ["stack", "status", "--state-dir", str(tmp_path / "state")],
                           terminal_width=300)
    assert result.exit_code == 1, result.output
    assert "dead" in result.output
    assert str(record.pid) in result.output
    assert "livefeat stack down" in result.output

    down = runner.invoke(cli, ["stack", "down", "--state-dir", str(tmp_path / "state")],
                         terminal_width=300)
    assert down.exit_code == 0, down.output
    assert f"(pid {record.pid}): had already exited" in down.output
    assert not (tmp_path / "state" / "pids" / "s3.json").exists()


def test_uptime_of_a_running_service(tmp_path: Path) -> None:
    proc, record = spawn("s3", [sys.executable, "-c", "import time; time.sleep(60)"],
                         env=dict(os.environ), log=tmp_path / "state" / "logs" / "s3.log",
                         endpoint="http://127.0.0.1:1")
    try:
        manager = StackManager(_settings(tmp_path))
        old = ProcessRecord(**{**record.__dict__, "started_at": time.time() - 3725})
        manager.pid_files.write(old)
        s3 = manager.status(check=False)[0]
        assert (s3.service, s3.state, s3.pid) == ("s3", "running", proc.pid)
        assert s3.uptime_s is not None and 3725 <= s3.uptime_s < 3725 + 60
        assert s3.answering is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_uptime_format() -> None:
    from pipelines.cli.stack_cmd import _uptime

    assert [_uptime(s) for s in (None, 0.4, 59.9, 61, 3725)] == ["", "0s", "59s", "1m 01s",
                                                                  "1h 02m 05s"]
