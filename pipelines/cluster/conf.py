"""The private configuration directory of the local Flink cluster.

``livefeat cluster up`` never edits the wheel's ``conf/``: it copies it to
``<state_dir>/flink/conf`` (``FLINK_CONF_DIR``) and rewrites ``config.yaml``
there with the shipped values plus the cluster's own (ports, slots, memory,
Prometheus reporter, Python interpreter, checkpoint and savepoint
directories, restart strategy). The file is written with flat keys
(``rest.port: 8081``), a form Flink 2.0's ``config.yaml`` accepts beside the
nested one.

>>> opts = ClusterOptions(python="/venv/bin/python")
>>> conf = render_config({"rest": {"address": "localhost"}}, opts, ClusterPaths(Path("/s")))
>>> conf["rest.port"], conf["taskmanager.numberOfTaskSlots"], conf["rest.address"]
(8081, 2, '127.0.0.1')
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import pipelines
from pipelines.errors import ConfigError, StackError

PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
"""The factory class of Flink's Prometheus reporter (plugin ``metrics-prometheus``)."""

IDENT = "livefeat"
"""``FLINK_IDENT_STRING``: names the scripts' pid files and log files."""


@dataclass(frozen=True)
class ClusterOptions:
    """What ``livefeat cluster up`` asks for.

    The memory defaults suit a small machine (2 cores, 24 GB): a 1 GiB
    JobManager and 2.5 GiB per TaskManager (of which about 0.8 GiB is managed
    memory, which Python workers draw from in process mode) leave room for the
    broker, the S3 emulator, Python workers and the stores.

    Attributes:
        python: interpreter the Python workers and the client run with.
        pythonpath: directories put on ``PYTHONPATH`` of the cluster's processes.
        taskmanagers: how many TaskManagers to start.
        slots: task slots per TaskManager.
        host: address every endpoint binds to.
        rest_port: port of the REST API and web UI.
        rpc_port: port of the JobManager's RPC endpoint (TaskManagers connect to it).
        jobmanager_memory: ``jobmanager.memory.process.size``.
        taskmanager_memory: ``taskmanager.memory.process.size``.
        prometheus_ports: port range the Prometheus reporter picks one port from per process.
        restart_attempts: fixed-delay restart strategy: attempts before a job fails.
        restart_delay: fixed-delay restart strategy: pause between attempts.
        extra: any further Flink options (flat keys), applied last.
    """

    python: str
    pythonpath: tuple[str, ...] = ()
    taskmanagers: int = 2
    slots: int = 2
    host: str = "127.0.0.1"
    rest_port: int = 8081
    rpc_port: int = 6123
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "2560m"
    prometheus_ports: str = "9249-9260"
    restart_attempts: int = 10
    restart_delay: str = "2 s"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.taskmanagers <= 32:
            raise ConfigError(
                f"cannot start {self.taskmanagers} TaskManagers", where="--taskmanagers",
                fix="choose between 1 and 32",
            )
        if not 1 <= self.slots <= 64:
            raise ConfigError(f"{self.slots} slots per TaskManager", where="--slots",
                              fix="choose between 1 and 64")
        for name in ("rest_port", "rpc_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"port {port} is not a TCP port",
                                  where=f"--{name.replace('_', '-')}",
                                  fix="choose a port between 1024 and 65535")
        if self.rest_port == self.rpc_port:
            raise ConfigError(
                f"the REST port and the RPC port are both {self.rest_port}",
                where="--rest-port / --rpc-port", fix="give them different ports",
            )

    @property
    def rest_url(self) -> str:
        """Where the REST API answers."""
        return f"http://{self.host}:{self.rest_port}"


@dataclass(frozen=True)
class ClusterPaths:
    """Where the cluster keeps its files, all under ``<state_dir>/flink``.

    Attributes:
        state_dir: the stack's state directory (``stack.state_dir``).
    """

    state_dir: Path

    @property
    def root(self) -> Path:
        """``<state_dir>/flink``."""
        return self.state_dir / "flink"

    @property
    def conf(self) -> Path:
        """``FLINK_CONF_DIR``."""
        return self.root / "conf"

    @property
    def lib(self) -> Path:
        """``FLINK_LIB_DIR``: links to the distribution's ``lib/`` jars plus ``flink-python``."""
        return self.root / "lib"

    @property
    def logs(self) -> Path:
        """``FLINK_LOG_DIR``: one ``.log`` and one ``.out`` file per process."""
        return self.root / "log"

    @property
    def script_pids(self) -> Path:
        """``FLINK_PID_DIR``: the pid files the Flink scripts append to."""
        return self.root / "script-pids"

    @property
    def tmp(self) -> Path:
        """``io.tmp.dirs``: spill files, Python worker files, blobs."""
        return self.root / "tmp"

    @property
    def checkpoints(self) -> Path:
        """Default checkpoint directory of jobs that set none."""
        return self.root / "checkpoints"

    @property
    def savepoints(self) -> Path:
        """Default savepoint directory (``livefeat jobs savepoint`` without ``--dir``)."""
        return self.root / "savepoints"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings as flat dotted keys.

    >>> flatten({"a": {"b": 1, "c": {"d": "x"}}, "e.f": True})
    {'a.b': 1, 'a.c.d': 'x', 'e.f': True}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cluster_values(options: ClusterOptions, paths: ClusterPaths) -> dict[str, Any]:
    """The options ``livefeat cluster up`` sets on top of the shipped configuration."""
    host = options.host
    values: dict[str, Any] = {
        "jobmanager.rpc.address": host,
        "jobmanager.rpc.port": options.rpc_port,
        "jobmanager.bind-host": host,
        "jobmanager.memory.process.size": options.jobmanager_memory,
        "taskmanager.host": host,
        "taskmanager.bind-host": host,
        "taskmanager.numberOfTaskSlots": options.slots,
        "taskmanager.memory.process.size": options.taskmanager_memory,
        "rest.address": host,
        "rest.bind-address": host,
        "rest.port": options.rest_port,
        "parallelism.default": 1,
        # Notice a killed TaskManager within seconds, not the default 50 s.
        "heartbeat.interval": 2000,
        "heartbeat.timeout": 20000,
        # Job metrics in the REST API and web UI at most 2 s old, not the default 10 s.
        "metrics.fetcher.update-interval": 2000,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": options.restart_attempts,
        "restart-strategy.fixed-delay.delay": options.restart_delay,
        "execution.checkpointing.dir": paths.checkpoints.resolve().as_uri(),
        "execution.checkpointing.savepoint-dir": paths.savepoints.resolve().as_uri(),
        "io.tmp.dirs": str(paths.tmp.resolve()),
        "env.log.dir": str(paths.logs.resolve()),
        # A JVM crash report goes next to the logs, not into the current directory.
        "env.java.opts.jobmanager": f"-XX:ErrorFile={paths.logs.resolve()}/hs_err_pid%p.log",
        "env.java.opts.taskmanager": f"-XX:ErrorFile={paths.logs.resolve()}/hs_err_pid%p.log",
        "env.pid.dir": str(paths.script_pids.resolve()),
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.port": options.prometheus_ports,
        "python.executable": options.python,
        "python.client.executable": options.python,
    }
    values.update(options.extra)
    return values


def render_config(shipped: Mapping[str, Any], options: ClusterOptions,
                  paths: ClusterPaths) -> dict[str, Any]:
    """The cluster's ``config.yaml`` content: shipped values, then the cluster's, as flat keys."""
    conf = flatten(shipped)
    conf.update(cluster_values(options, paths))
    return dict(sorted(conf.items()))


def dump_config(conf: Mapping[str, Any]) -> str:
    """``conf`` as YAML text with a header saying where it comes from."""
    header = (
        "# Written by `livefeat cluster up` from the Flink distribution's conf/config.yaml.\n"
        "# Edits are overwritten on the next `livefeat cluster up`.\n"
    )
    return header + yaml.safe_dump(dict(conf), default_flow_style=False, sort_keys=False)


def read_shipped(conf_dir: Path) -> dict[str, Any]:
    """The distribution's ``config.yaml`` as a mapping.

    Raises:
        StackError: the file is unreadable or not a YAML mapping.
    """
    path = conf_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read the shipped Flink configuration: {exc}", where=str(path),
                         fix="reinstall the apache-flink wheel (deploy/local/setup.sh)") from exc
    if not isinstance(data, dict):
        raise StackError("the shipped Flink configuration is not a YAML mapping",
                         where=str(path), fix="reinstall the apache-flink wheel")
    return data


def write_conf_dir(shipped_conf: Path, options: ClusterOptions, paths: ClusterPaths) -> Path:
    """Copy ``shipped_conf`` to ``paths.conf`` and write the cluster's ``config.yaml`` there.

    Returns:
        the written ``config.yaml``.
    """
    shipped = read_shipped(shipped_conf)
    paths.conf.mkdir(parents=True, exist_ok=True)
    shutil.copytree(shipped_conf, paths.conf, dirs_exist_ok=True)
    for directory in (paths.logs, paths.script_pids, paths.tmp, paths.checkpoints,
                      paths.savepoints):
        directory.mkdir(parents=True, exist_ok=True)
    target = paths.conf / "config.yaml"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(dump_config(render_config(shipped, options, paths)))
    tmp.replace(target)
    return target


def write_lib_dir(home: Path, paths: ClusterPaths) -> Path:
    """Fill ``paths.lib`` with links to ``home/lib/*.jar`` and ``home/opt/flink-python*.jar``.

    With ``flink-python`` on the cluster's own class path, the native Python
    interpreter of thread mode (pemja) is loaded once per TaskManager by the
    system class loader. Loaded from a job's class loader instead, the second
    job, or the first job after a restart, on the same TaskManager fails with
    ``UnsatisfiedLinkError: ... PythonInterpreter$MainInterpreter.initialize()``.

    Raises:
        StackError: the distribution has no ``flink-python`` jar.
    """
    python_jars = sorted((home / "opt").glob("flink-python*.jar"))
    if not python_jars:
        raise StackError("the Flink distribution has no opt/flink-python*.jar", where=str(home),
                         fix="reinstall the apache-flink wheel (deploy/local/setup.sh)")
    if paths.lib.exists():
        shutil.rmtree(paths.lib)
    paths.lib.mkdir(parents=True)
    for jar in [*sorted((home / "lib").glob("*.jar")), python_jars[-1]]:
        (paths.lib / jar.name).symlink_to(jar.resolve())
    return paths.lib


def default_pythonpath() -> tuple[str, ...]:
    """The project root (so workers import ``pipelines``) and this environment's site-packages
    (thread mode embeds Python in the TaskManager, which needs them on ``PYTHONPATH``)."""
    root = Path(pipelines.__file__).resolve().parent.parent
    purelib = sysconfig.get_paths()["purelib"]
    return tuple(dict.fromkeys([str(root), purelib]))


def default_options(**values: Any) -> ClusterOptions:
    """:class:`ClusterOptions` for this Python environment (its interpreter, its paths).

    Args:
        values: any other :class:`ClusterOptions` field (``taskmanagers=3``, ...).
    """
    return ClusterOptions(python=sys.executable, pythonpath=default_pythonpath(), **values)


def port_range(spec: str) -> range:
    """Ports of a Flink port spec: ``9249`` or ``9249-9260`` (empty when malformed).

    >>> list(port_range("9249-9251")), list(port_range("x"))
    ([9249, 9250, 9251], [])
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", spec)
    if not match:
        return range(0)
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return range(low, high + 1)
