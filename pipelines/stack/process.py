"""Background processes of the embedded stack: pid files, start, readiness, stop.

Every service ``livefeat stack up`` starts gets a pid file,
``<state_dir>/pids/<service>.json``, holding its process id, the exact command
line it was started with and when. The command line guards against pid reuse:
a pid whose process now runs something else is never signalled. Services run
in their own session (``start_new_session=True``) so they outlive the command
that started them; their output goes to ``<state_dir>/logs/<service>.log``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.errors import StackError

LOG_TAIL_LINES = 20
"""How many lines of a service's log an error message shows."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about one running service.

    Attributes:
        service: service name (``broker``, ``s3``).
        pid: process id.
        argv: the exact command line it was started with.
        started_at: start time, seconds since the epoch.
        endpoint: where clients reach it (``127.0.0.1:9092``, ``http://127.0.0.1:9000``).
        log: its log file.
        info: one line about how it runs (e.g. its storage), shown by ``status``.
    """

    service: str
    pid: int
    argv: tuple[str, ...]
    started_at: float
    endpoint: str
    log: Path
    info: str = ""

    def to_json(self) -> str:
        """The pid file's content."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["log"] = str(self.log)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        """Parse a pid file's content.

        Raises:
            ValueError: the content is not a pid record.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(
                service=str(data["service"]),
                pid=int(data["pid"]),
                argv=tuple(str(a) for a in data["argv"]),
                started_at=float(data["started_at"]),
                endpoint=str(data["endpoint"]),
                log=Path(data["log"]),
                info=str(data.get("info", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field: {exc}") from exc


class Liveness(enum.Enum):
    """What became of the process a pid file names."""

    RUNNING = "running"
    """The pid is alive and runs the recorded command line."""
    GONE = "gone"
    """No such process any more (it exited or was killed)."""
    REPLACED = "replaced"
    """The pid is alive but runs something else now (pid reuse)."""


class PidFiles:
    """The pid files under ``<state_dir>/pids``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "pids"

    def path(self, service: str) -> Path:
        """The pid file of ``service``."""
        return self.dir / f"{service}.json"

    def read(self, service: str) -> ProcessRecord | None:
        """The record of ``service``, or None when it has no pid file.

        Raises:
            StackError: the pid file exists but cannot be parsed.
        """
        path = self.path(service)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ProcessRecord.from_json(text)
        except ValueError as exc:
            raise StackError(
                f"unreadable pid file ({exc})",
                where=str(path),
                fix=f"check that no {service} from an earlier `livefeat stack up` still runs "
                f"(look for it with `ps`), then delete {path}",
            ) from exc

    def write(self, record: ProcessRecord) -> None:
        """Write (atomically) the pid file of ``record.service``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(record.service)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.to_json())
        tmp.replace(path)

    def remove(self, service: str) -> None:
        """Delete the pid file of ``service`` if it exists."""
        self.path(service).unlink(missing_ok=True)


def _proc_state_and_argv(pid: int) -> tuple[str, str] | None:
    """(state letter, command line joined by spaces) of a live pid, None if there is none."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            raw = (proc / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            return ("?", "")
        # stat is "pid (comm) S ...": the state follows the last ')'.
        state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
        return state, " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    out = subprocess.run(
        ["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)],
        capture_output=True, text=True, check=False,
    )
    line = out.stdout.strip()
    if out.returncode != 0 or not line:
        return None
    state, _, command = line.partition(" ")
    return state[:1], command.strip()


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our own child (no zombie is left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def liveness(record: ProcessRecord) -> Liveness:
    """Whether the process of ``record`` still runs, is gone, or its pid was reused."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return Liveness.GONE
    except PermissionError:
        return Liveness.REPLACED  # alive but owned by another user: not ours
    found = _proc_state_and_argv(record.pid)
    if found is None:
        return Liveness.GONE
    state, command = found
    if state == "Z":
        _reap(record.pid)
        return Liveness.GONE
    if not command and state != "?":
        return Liveness.GONE  # exiting: the kernel already dropped its command line
    if command.split() != " ".join(record.argv).split():
        return Liveness.REPLACED
    return Liveness.RUNNING


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (for private stacks in tests and
    benchmarks; another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on, or holds, ``host:port``."""
    if port_open(host, port):
        return True
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_open(host: str, port: int) -> bool:
    """True when ``host:port`` accepts a TCP connection right now."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, indented for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (log is empty)"


def _rotate(log: Path) -> None:
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))


def spawn(
    service: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    endpoint: str,
    info: str = "",
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` in its own session, writing its output to ``log``.

    The previous log, if any, is kept as ``<log>.1``.

    Raises:
        StackError: the program cannot be executed.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log)
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env), start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise StackError(
                f"cannot start the {service}: {exc.strerror or exc}",
                where=argv[0],
                fix="reinstall the environment (deploy/local/setup.sh) so the program exists "
                "and is executable",
            ) from exc
    record = ProcessRecord(
        service=service, pid=proc.pid, argv=tuple(argv), started_at=time.time(),
        endpoint=endpoint, log=log, info=info,
    )
    return proc, record


def wait_ready(
    service: str,
    proc: subprocess.Popen[bytes],
    record: ProcessRecord,
    probe: Callable[[], str | None],
    *,
    timeout: float,
    fix: str,
) -> None:
    """Call ``probe`` until it returns None (ready), failing if the process dies or time runs out.

    Args:
        service: service name, for messages.
        proc: the process just started.
        record: its pid record (for the log path).
        probe: a real request against the service; returns None when it answered,
            else a short description of what went wrong.
        timeout: seconds to wait.
        fix: what to tell the user if the service never becomes ready.

    Raises:
        StackError: the process exited, or never answered within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            raise StackError(
                f"the {service} exited with code {code} right after it started; "
                f"last lines of its log:\n{tail(record.log)}",
                where=str(record.log),
                fix=fix,
            )
        outcome = probe()
        if outcome is None:
            return
        last = outcome
        if time.monotonic() >= deadline:
            raise StackError(
                f"the {service} (pid {proc.pid}) did not answer within {timeout:.0f} s "
                f"(last attempt: {last}); last lines of its log:\n{tail(record.log)}",
                where=str(record.log),
                fix=fix,
            )
        time.sleep(0.1)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        # A service started by spawn() leads its own process group: signal the group
        # so helper processes it may have started go too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _exited(record: ProcessRecord) -> bool:
    """True once the process of ``record`` has fully exited (or its pid runs something else)."""
    _reap(record.pid)
    found = _proc_state_and_argv(record.pid)
    if found is None:
        return True
    state, command = found
    if state == "Z":
        _reap(record.pid)
        return True  # a zombie holds no sockets or files any more
    if not command:
        return False  # still exiting
    return command.split() != " ".join(record.argv).split()


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if _exited(record):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class StopOutcome(enum.Enum):
    """How :func:`stop` ended a process."""

    TERMINATED = "stopped"
    KILLED = "killed"
    NOT_RUNNING = "was not running"
    PID_REUSED = "pid reused by another program; not signalled"


def stop(record: ProcessRecord, timeout: float) -> StopOutcome:
    """Stop the process of ``record``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Only a process that still runs the recorded command line is signalled.

    Raises:
        StackError: the process survived SIGKILL.
    """
    state = liveness(record)
    if state is Liveness.GONE:
        return StopOutcome.NOT_RUNNING
    if state is Liveness.REPLACED:
        return StopOutcome.PID_REUSED
    _signal(record.pid, signal.SIGTERM)
    if _wait_gone(record, timeout):
        return StopOutcome.TERMINATED
    if liveness(record) is Liveness.RUNNING:  # re-checked: never kill a reused pid
        _signal(record.pid, signal.SIGKILL)
    if _wait_gone(record, 5.0):
        return StopOutcome.KILLED
    raise StackError(
        f"the {record.service} (pid {record.pid}) survived SIGKILL",
        fix=f"check `ps -o pid,stat,args -p {record.pid}`; a process stuck in the kernel "
        "(state D) goes away when its I/O ends",
    )


@contextlib.contextmanager
def state_lock(state_dir: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock on ``state_dir`` so two stack commands never race.

    Raises:
        StackError: another stack command kept the lock for ``timeout`` seconds.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - the stack is POSIX-only
        raise StackError("the embedded stack runs on Linux and macOS only")
    import fcntl

    path = state_dir / "stack.lock"
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another `livefeat stack` command has held {path} for {timeout:.0f} s",
                        fix="wait for it to finish, or stop it and run the command again",
                    ) from exc
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
