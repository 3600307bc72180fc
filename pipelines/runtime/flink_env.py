"""A configured PyFlink ``StreamExecutionEnvironment`` built from :class:`Settings`.

What this takes care of (each one a measured pitfall, see docs/flink-runtime.md):

* **Java.** PyFlink starts a JVM; Flink 2.0 runs on Java 11, 17 or 21. The JDK
  is found from ``JAVA_HOME``, else the ``java`` on ``PATH``, else the usual
  JVM directories. Nothing suitable gives a :class:`StackError` that says how
  to install Java 17.
* **Python workers.** Workers run ``python`` from ``PATH`` unless
  ``python.executable``/``python.client.executable`` name this interpreter;
  thread-mode workers (an interpreter embedded in the JVM) also need this
  environment's site-packages on ``python.pythonpath``. The project root is
  added too, so workers import ``pipelines`` and ``schemas``.
* **Execution mode.** ``thread`` (default) is about 2.5x faster than
  ``process``; keyed state, event-time timers and checkpoints work in both.
* **Checkpoints** are on by default (``flink.checkpoint_interval_ms``; 0
  turns them off) and go to ``flink.checkpoint_dir``: a local path becomes an
  absolute ``file://`` URI, a URI (``s3://bucket/prefix`` on Kubernetes) is
  passed to Flink unchanged. They are kept when a job is cancelled, so a
  stopped job can be resumed with ``restore_from``. The state backend is
  Flink's default (heap, ``hashmap``).
* **Restarts.** With checkpoints Flink would restart a failing job forever (a
  bug in a step looks like a hang); we allow :data:`RESTART_ATTEMPTS`, then
  the job fails with the cause. Without checkpoints it fails at once.
* **Logs.** Unless ``FLINK_LOG_DIR`` is set, the local runtime logs to
  ``<stack.state_dir>/flink-logs`` instead of inside the installed pyflink
  package.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import FlinkSettings, Settings
from pipelines.errors import StackError

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

SUPPORTED_JAVA = (17, 21, 11)
"""Java feature versions Flink 2.0 runs on, in order of preference."""

JAVA_INSTALL_FIX = (
    "install a Java 17 runtime (Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`; others: https://adoptium.net) and set JAVA_HOME to it"
)

RESTART_ATTEMPTS = 3
"""Restarts from the last checkpoint before a failing job gives up."""

JVM_ROOTS = (Path("/usr/lib/jvm"), Path("/usr/java"), Path("/Library/Java/JavaVirtualMachines"))
"""Where Linux packages and macOS installers put JDKs."""
_VERSION_LINE = re.compile(r'version "([^"]+)"')


def _major(version: str) -> int | None:
    """``"17.0.15"`` -> 17, ``"1.8.0_392"`` -> 8, ``"21"`` -> 21."""
    parts = re.split(r"[._+-]", version.strip())
    try:
        first = int(parts[0])
        return int(parts[1]) if first == 1 and len(parts) > 1 else first
    except ValueError:
        return None


def java_version(home: Path) -> int | None:
    """The Java feature version of the JDK/JRE at ``home``; None if there is no usable java there.

    Reads ``home/release`` when present (no process started), else runs
    ``home/bin/java -version``.
    """
    java = home / "bin" / "java"
    if not java.is_file():
        return None
    release = home / "release"
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                return _major(line.split("=", 1)[1].strip().strip('"'))
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_LINE.search(out.stderr + out.stdout)
    return _major(match.group(1)) if match else None


def _homes_under(roots: Sequence[Path]) -> Iterator[Path]:
    for root in roots:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            mac_home = child / "Contents" / "Home"
            yield mac_home if mac_home.is_dir() else child


def find_java_home(
    environ: Mapping[str, str] | None = None, *, search: Sequence[Path] = JVM_ROOTS
) -> Path:
    """The home of a Java that Flink 2.0 runs on.

    Args:
        environ: the environment to read ``JAVA_HOME`` and ``PATH`` from;
            ``os.environ`` when None.
        search: directories whose subdirectories are JDK homes, searched when
            ``JAVA_HOME`` is unset and ``java`` on ``PATH`` is missing or unsupported.

    Raises:
        StackError: ``JAVA_HOME`` is set but is not a supported Java, or no
            supported Java was found anywhere.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("JAVA_HOME")
    if explicit:
        home = Path(explicit)
        version = java_version(home)
        if version in SUPPORTED_JAVA:
            return home
        found = "no bin/java there" if version is None else f"Java {version} there"
        raise StackError(
            f"JAVA_HOME does not point to a Java that Flink 2.0 supports ({found})",
            where=f"JAVA_HOME={explicit}",
            fix=f"point JAVA_HOME at Java {' or '.join(map(str, sorted(SUPPORTED_JAVA)))}, "
            f"or {JAVA_INSTALL_FIX}",
        )
    candidates: list[Path] = []
    on_path = shutil.which("java", path=env.get("PATH", os.defpath))
    if on_path:
        candidates.append(Path(on_path).resolve().parent.parent)
    candidates.extend(_homes_under(search))
    seen: dict[Path, int | None] = {}
    for home in candidates:
        if home not in seen:
            seen[home] = java_version(home)
    for wanted in SUPPORTED_JAVA:
        for home, version in seen.items():
            if version == wanted:
                return home
    others = ", ".join(f"{h} (Java {v})" for h, v in seen.items() if v is not None)
    raise StackError(
        "no Java 11, 17 or 21 found for Flink" + (f"; found only {others}" if others else ""),
        where="JAVA_HOME is unset; searched PATH and " + ", ".join(str(r) for r in search),
        fix=JAVA_INSTALL_FIX,
    )


def ensure_java(environ: Mapping[str, str] | None = None) -> Path:
    """Find Java (see :func:`find_java_home`) and export it as ``JAVA_HOME`` for PyFlink's JVM."""
    home = find_java_home(environ)
    os.environ["JAVA_HOME"] = str(home)
    return home


def project_root() -> Path:
    """The directory that holds the ``pipelines`` and ``schemas`` packages."""
    import pipelines

    return Path(pipelines.__file__).resolve().parent.parent


def worker_python_path() -> list[str]:
    """What workers need on their path: the project root, then this environment's site-packages."""
    entries = [str(project_root())]
    paths = sysconfig.get_paths()
    entries += [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(e for e in entries if e and Path(e).is_dir()))


def checkpoint_uri(checkpoint_dir: str | Path) -> str:
    """``flink.checkpoint_dir`` as the URI Flink gets.

    A URI (``s3://...``, ``file:///...``) is returned unchanged; a local path is
    made absolute (against the working directory) and turned into a ``file://`` URI.

    >>> checkpoint_uri("s3://livefeat-flink/marketplace/checkpoints")
    's3://livefeat-flink/marketplace/checkpoints'
    >>> checkpoint_uri(Path("/data/ckpt"))
    'file:///data/ckpt'
    """
    if isinstance(checkpoint_dir, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", checkpoint_dir):
        return checkpoint_dir
    return Path(checkpoint_dir).expanduser().resolve().as_uri()


def flink_configuration(
    flink: FlinkSettings,
    *,
    python_executable: str,
    python_path: Sequence[str],
    restore_from: str | None = None,
) -> dict[str, str]:
    """The Flink configuration keys for ``flink`` (pure: no JVM, no side effects).

    Args:
        flink: the validated ``flink`` section of the settings.
        python_executable: the interpreter workers run (normally ``sys.executable``).
        python_path: entries for the workers' ``PYTHONPATH``.
        restore_from: a retained checkpoint or savepoint directory to resume from.
    """
    conf = {
        "parallelism.default": str(flink.parallelism),
        "python.execution-mode": flink.execution_mode,
        "python.executable": python_executable,
        "python.client.executable": python_executable,
        "python.pythonpath": os.pathsep.join(python_path),
    }
    if flink.checkpoint_interval_ms > 0:
        conf.update(
            {
                "execution.checkpointing.interval": f"{flink.checkpoint_interval_ms} ms",
                "execution.checkpointing.dir": checkpoint_uri(flink.checkpoint_dir),
                "execution.checkpointing.mode": "EXACTLY_ONCE",
                "execution.checkpointing.externalized-checkpoint-retention": (
                    "RETAIN_ON_CANCELLATION"
                ),
                # Flink's default with checkpoints is to restart forever, so a deterministic
                # bug looks like a hang. Restart a few times from the last checkpoint, then fail.
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": str(RESTART_ATTEMPTS),
                "restart-strategy.fixed-delay.delay": "1 s",
            }
        )
    else:
        conf["restart-strategy.type"] = "none"  # without a checkpoint a restart re-reads everything
    if restore_from:
        conf["execution.state-recovery.path"] = restore_from
    return conf


def _route_logs(state_dir: Path) -> None:
    if "FLINK_LOG_DIR" in os.environ:
        return
    log_dir = Path(state_dir).resolve() / "flink-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FLINK_LOG_DIR"] = str(log_dir)


def create_env(
    settings: Settings,
    *,
    extra: Mapping[str, str] | None = None,
    restore_from: str | None = None,
) -> StreamExecutionEnvironment:
    """A ``StreamExecutionEnvironment`` configured from ``settings``.

    Args:
        settings: validated settings (``flink`` and ``stack.state_dir`` are used).
        extra: further Flink configuration keys; they win over the derived ones.
        restore_from: a retained checkpoint or savepoint directory to resume from.

    Raises:
        StackError: no supported Java, or the JVM could not start.
    """
    ensure_java()
    _route_logs(settings.stack.state_dir)
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from pipelines.runtime import pyflink_patches

    pyflink_patches.apply()
    keys = flink_configuration(
        settings.flink,
        python_executable=sys.executable,
        python_path=worker_python_path(),
        restore_from=restore_from,
    )
    keys.update(extra or {})
    conf = Configuration()
    for key, value in keys.items():
        conf.set_string(key, value)
    try:
        return StreamExecutionEnvironment.get_execution_environment(conf)
    except Exception as exc:  # the JVM gateway failed to start; PyFlink raises bare Exceptions
        raise StackError(
            f"the Flink runtime (JVM) did not start: {exc}",
            where=f"JAVA_HOME={os.environ.get('JAVA_HOME')}",
            fix=f"check the logs in {os.environ.get('FLINK_LOG_DIR')}; if Java is broken, "
            + JAVA_INSTALL_FIX,
        ) from exc
