"""Start one Flink daemon with the distribution's scripts and find its process id.

``jobmanager.sh start`` and ``taskmanager.sh start`` (through
``flink-daemon.sh``) fork the JVM into the background, append its pid to
``$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-<daemon>.pid`` (one line per
instance, under a lock) and exit. The n-th instance (counting from 0) writes
``$FLINK_LOG_DIR/flink-<ident>-<daemon>-<n>-<host>.log`` and ``.out``. This
module runs a script, reads the pid it appended, waits until that pid runs the
daemon's Java class (the fork has exec'd Java) and returns a
:class:`~pipelines.stack.process.ProcessRecord` holding the JVM's real command
line, so the stack's pid-file helpers can later tell it from a reused pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import StackError
from pipelines.stack.process import ProcessRecord, _proc_state_and_argv, tail


@dataclass(frozen=True)
class Daemon:
    """A kind of Flink daemon.

    Attributes:
        name: the daemon's name in the scripts (``standalonesession``, ``taskexecutor``).
        script: its start script under ``bin/``.
        main_class: the Java class the JVM runs.
        label: how messages name it.
    """

    name: str
    script: str
    main_class: str
    label: str


JOBMANAGER = Daemon(
    "standalonesession", "jobmanager.sh",
    "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint", "JobManager",
)
TASKMANAGER = Daemon(
    "taskexecutor", "taskmanager.sh",
    "org.apache.flink.runtime.taskexecutor.TaskManagerRunner", "TaskManager",
)


def script_pid_file(pid_dir: Path, ident: str, daemon: Daemon) -> Path:
    """The pid file the scripts append the daemon's pids to."""
    return pid_dir / f"flink-{ident}-{daemon.name}.pid"


def read_script_pids(path: Path) -> list[int]:
    """The pids listed in a script pid file, in start order (unparsable lines are skipped).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.pid"
    >>> _ = f.write_text("123\\n\\nnot-a-pid\\n456\\n")
    >>> read_script_pids(f)
    [123, 456]
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in (raw.strip() for raw in text.splitlines()) if line.isdigit()]


def command_line(pid: int) -> list[str] | None:
    """The command line of a live, non-zombie process, None when there is none."""
    found = _proc_state_and_argv(pid)
    if found is None or found[0] == "Z" or not found[1]:
        return None
    return found[1].split()


def daemon_log(log_dir: Path, ident: str, daemon: Daemon, index: int) -> Path:
    """The ``.log`` file of the ``index``-th instance the scripts started."""
    matches = sorted(log_dir.glob(f"flink-{ident}-{daemon.name}-{index}-*.out"))
    if matches:
        return matches[-1].with_suffix(".log")
    return log_dir / f"flink-{ident}-{daemon.name}-{index}.log"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _find_started(pid_file: Path, daemon: Daemon, pgid: int,
                  skip: set[int]) -> tuple[int, int, list[str]] | None:
    """(pid, instance index, command line) of the listed JVM of process group ``pgid``."""
    pids = read_script_pids(pid_file)
    for index, pid in enumerate(pids):
        if pid in skip or _pgid(pid) != pgid:
            continue
        cmd = command_line(pid)
        if cmd is not None and daemon.main_class in cmd:
            return pid, index, cmd
    return None


def start_daemon(
    daemon: Daemon,
    *,
    service: str,
    bin_dir: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    pid_dir: Path,
    log_dir: Path,
    ident: str,
    endpoint: str,
    info: str = "",
    exec_timeout: float = 20.0,
) -> ProcessRecord:
    """Run ``<daemon.script> start ARGS`` and return the record of the JVM it forked.

    The script runs in a new session, so it leads a new process group that the
    JVM (and later its Python workers) inherit: the JVM outlives the calling
    command, a terminal's hang-up does not reach it, and among the pids the
    scripts list, ours is the one in that group, even when several daemons
    start at once. If the JVM cannot be confirmed, whatever runs in that group
    is ended before the error is raised.

    Raises:
        StackError: the script failed, or no listed pid of its group ran the daemon's class.
    """
    pid_file = script_pid_file(pid_dir, ident, daemon)
    before = set(read_script_pids(pid_file))
    script = bin_dir / daemon.script
    argv = ["bash", str(script), "start", *args]
    proc = subprocess.Popen(
        argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, stdin=subprocess.DEVNULL,
    )
    pgid = proc.pid
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        end_group(pgid)
        raise StackError(
            f"{daemon.script} start did not return within 120 s", where=str(script),
            fix="check that `java -version` answers quickly and the disk is not full",
        ) from exc
    deadline = time.monotonic() + exec_timeout
    found = None
    while proc.returncode == 0:
        found = _find_started(pid_file, daemon, pgid, before)
        if found is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if found is None:
        end_group(pgid)
        logs = sorted(log_dir.glob(f"flink-{ident}-{daemon.name}-*.out"), key=_mtime)
        last = logs[-1] if logs else log_dir / "(no log)"
        raise StackError(
            f"the {daemon.label} did not come up ({daemon.script} start exited with code "
            f"{proc.returncode}); its output:\n"
            + "\n".join(f"    {line}" for line in output.strip().splitlines()[-15:])
            + f"\n  last lines of {last.name}:\n{tail(last)}\n  and of its log:\n"
            f"{tail(last.with_suffix('.log'))}",
            where=str(last),
            fix="check JAVA_HOME points at a JDK 17 and read the logs; a port in use or too "
            "little memory are the usual causes",
        )
    pid, index, cmd = found
    return ProcessRecord(
        service=service, pid=pid, argv=tuple(cmd), started_at=time.time(), endpoint=endpoint,
        log=daemon_log(log_dir, ident, daemon, index),
        info=f"process group {pgid}" + (f"; {info}" if info else ""),
    )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def end_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, process group ``pgid`` (one a start script of ours leads)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not group_leftovers(pgid, ("",)):
                return
            time.sleep(0.1)


_GROUP = re.compile(r"^process group (\d+)")


def recorded_group(record: ProcessRecord) -> int | None:
    """The process group a record's ``info`` names (see :func:`group_info`).

    >>> rec = ProcessRecord("x", 10, ("java",), 0.0, "", Path("l"), "process group 7; rpc")
    >>> recorded_group(rec)
    7
    """
    match = _GROUP.match(record.info)
    return int(match.group(1)) if match else None


def group_leftovers(pgid: int, markers: Sequence[str]) -> list[int]:
    """Live processes of process group ``pgid`` whose command line holds one of ``markers``.

    After a TaskManager dies (``kill -9``), the Python workers it started may
    outlive it in its process group; the markers (``pyflink``, the cluster's
    directory) keep a reused group id from ever matching another program.
    Zombies are left out: they hold nothing and go when their parent reaps them.
    """
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True,
                         text=True, check=False)
    found = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if (len(parts) == 4 and parts[1] == str(pgid) and parts[0].isdigit()
                and not parts[2].startswith("Z") and int(parts[0]) != os.getpid()
                and any(m in parts[3] for m in markers)):
            found.append(int(parts[0]))
    return found


def end_leftovers(pgid: int, markers: Sequence[str], timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, the :func:`group_leftovers` of ``pgid``; returns their pids."""
    pids = group_leftovers(pgid, markers)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_leftovers(pgid, markers):
            time.sleep(0.1)
        if not group_leftovers(pgid, markers):
            break
    return pids


def forget_script_pids(pid_dir: Path, ident: str, pids: set[int]) -> None:
    """Drop ``pids`` from the scripts' pid files (delete a file left empty)."""
    for daemon in (JOBMANAGER, TASKMANAGER):
        path = script_pid_file(pid_dir, ident, daemon)
        kept = [pid for pid in read_script_pids(path) if pid not in pids]
        if not path.exists():
            continue
        if kept:
            path.write_text("".join(f"{pid}\n" for pid in kept))
        else:
            path.unlink(missing_ok=True)


def prometheus_port(log: Path) -> int | None:
    """The port a process's Prometheus reporter listens on, read from its log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"Started PrometheusReporter HTTP server on port (\d+)", text)
    return int(found[-1]) if found else None
