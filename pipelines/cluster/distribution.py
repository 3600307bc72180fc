"""The Flink distribution inside the PyFlink wheel, and the Java that runs it.

The ``apache-flink`` wheel carries a complete Flink distribution: ``bin/``
(``jobmanager.sh``, ``taskmanager.sh``, the ``flink`` client), ``conf/``,
``lib/``, ``opt/`` and ``plugins/`` (among them ``metrics-prometheus``). This
module finds it without importing PyFlink, and finds a Java runtime Flink 2.0
supports.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import StackError

SUPPORTED_JAVA = (17, 21, 11)
"""Java major versions Flink 2.0 runs on (17 is its default; 11 is deprecated)."""

INSTALL_JAVA = (
    "install a JDK 17 (Debian/Ubuntu: `sudo apt-get install openjdk-17-jdk-headless`; "
    "macOS: `brew install openjdk@17`; or any Temurin 17 build) and set JAVA_HOME to its "
    "home directory (the one holding bin/java)"
)


@dataclass(frozen=True)
class FlinkDistribution:
    """Paths of a Flink distribution.

    Attributes:
        home: the distribution's root (``FLINK_HOME``).
    """

    home: Path

    @property
    def bin(self) -> Path:
        """``bin/``: the start scripts and the ``flink`` client."""
        return self.home / "bin"

    @property
    def conf(self) -> Path:
        """``conf/``: the shipped configuration, copied before any change."""
        return self.home / "conf"

    @property
    def plugins(self) -> Path:
        """``plugins/``: one directory per plugin (metrics reporters, file systems)."""
        return self.home / "plugins"

    def script(self, name: str) -> Path:
        """A script under ``bin/``.

        Raises:
            StackError: the script is missing.
        """
        path = self.bin / name
        if not path.is_file():
            raise StackError(
                f"the Flink distribution has no bin/{name}",
                where=str(self.home),
                fix="reinstall the environment (deploy/local/setup.sh) so the apache-flink "
                "wheel is complete",
            )
        return path


def locate_distribution(home: Path | None = None) -> FlinkDistribution:
    """The Flink distribution to use: ``home`` if given, else the one in the PyFlink wheel.

    Raises:
        StackError: PyFlink is not installed, or the directory is not a Flink distribution.
    """
    if home is None:
        spec = importlib.util.find_spec("pyflink")
        if spec is None or spec.origin is None:
            raise StackError(
                "PyFlink is not installed in this Python environment",
                fix="install the project's locked requirements (deploy/local/setup.sh)",
            )
        home = Path(spec.origin).parent
    dist = FlinkDistribution(home.resolve())
    for needed in ("bin/jobmanager.sh", "bin/taskmanager.sh", "bin/flink", "conf/config.yaml"):
        if not (dist.home / needed).is_file():
            raise StackError(
                f"not a Flink distribution: {needed} is missing",
                where=str(dist.home),
                fix="reinstall the apache-flink wheel (deploy/local/setup.sh)",
            )
    return dist


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation Flink can use.

    Attributes:
        home: its ``JAVA_HOME``.
        major: its major version (17, 21).
        version: the full ``java.version`` string.
    """

    home: Path
    major: int
    version: str


_PROPERTY = re.compile(r"^\s*(java\.home|java\.version|java\.specification\.version)\s*=\s*(.*)$")


def parse_java_properties(text: str) -> dict[str, str]:
    """The ``java.home``, ``java.version`` and ``java.specification.version`` lines of
    ``java -XshowSettings:properties -version`` output.

    >>> parse_java_properties("    java.home = /opt/jdk\\n    java.specification.version = 17\\n")
    {'java.home': '/opt/jdk', 'java.specification.version': '17'}
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _PROPERTY.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def java_major(spec_version: str) -> int | None:
    """The major version from ``java.specification.version`` (``1.8`` -> 8, ``17`` -> 17).

    >>> java_major("1.8"), java_major("17"), java_major("x")
    (8, 17, None)
    """
    parts = spec_version.split(".")
    head = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
    return int(head) if head.isdigit() else None


def find_java(environ: Mapping[str, str] | None = None) -> JavaRuntime:
    """The Java runtime to run Flink with: ``$JAVA_HOME``, else ``java`` on ``PATH``.

    Args:
        environ: environment to read (default: ``os.environ`` now).

    Raises:
        StackError: no Java, a JAVA_HOME without ``bin/java``, or a version Flink 2.0
            does not run on; the message says how to install Java 17.
    """
    env = os.environ if environ is None else environ
    java_home = env.get("JAVA_HOME", "").strip()
    if java_home:
        java = Path(java_home) / "bin" / "java"
        where = f"JAVA_HOME={java_home}"
        if not java.is_file():
            raise StackError(
                "JAVA_HOME does not point at a Java installation (no bin/java under it)",
                where=where, fix=INSTALL_JAVA,
            )
        command = str(java)
    else:
        command, where = "java", "PATH (JAVA_HOME is not set)"
    try:
        out = subprocess.run(
            [command, "-XshowSettings:properties", "-version"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**env, "JAVA_TOOL_OPTIONS": ""},
        )
    except FileNotFoundError as exc:
        raise StackError("no Java found: Flink needs Java 17", where=where,
                         fix=INSTALL_JAVA) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {command}: {exc}", where=where, fix=INSTALL_JAVA) from exc
    props = parse_java_properties(out.stderr + out.stdout)
    major = java_major(props.get("java.specification.version", ""))
    if out.returncode != 0 or major is None or "java.home" not in props:
        raise StackError(
            f"`{command} -version` did not report a Java version (exit code {out.returncode})",
            where=where, fix=INSTALL_JAVA,
        )
    if major not in SUPPORTED_JAVA:
        raise StackError(
            f"Java {major} ({props.get('java.version', '?')}) cannot run Flink 2.0 here; "
            f"supported: {', '.join(map(str, SUPPORTED_JAVA))}",
            where=where, fix=INSTALL_JAVA,
        )
    return JavaRuntime(Path(props["java.home"]), major, props.get("java.version", str(major)))
