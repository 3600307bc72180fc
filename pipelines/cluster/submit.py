"""Submit a PyFlink job to a running cluster with the ``flink`` client shipped in the wheel.

The client runs ``flink run -m HOST:PORT -pyexec PY -pyclientexec PY (-py FILE |
-pym MODULE) [-s SAVEPOINT] [--detached] [ARGS...]``: it executes the Python
program with ``PY``, which builds the job graph and sends it to the JobManager's
REST endpoint; the TaskManagers then start Python workers with ``PY`` too.
The job id is read from the client's output (``Job has been submitted with
JobID <32 hex digits>``).

A livefeat *pipeline name* (``marketplace``, a module of :mod:`pipelines.jobs`,
or ``package.module:ATTRIBUTE``) resolves to the entry module
:mod:`pipelines.runtime.entry` with ``--pipeline NAME [--config FILE]
[--bounded]`` (:func:`resolve_target`).

>>> pipeline_option("pipelines.cluster.probe")
['-pym', 'pipelines.cluster.probe']
>>> module, args = resolve_target("marketplace", config=Path("/etc/lf.yaml"), bounded=True)
>>> module, args
('pipelines.runtime.entry', ['--pipeline', 'marketplace', '--config', '/etc/lf.yaml', '--bounded'])
>>> parse_job_id("...\\nJob has been submitted with JobID 0123456789abcdef0123456789abcdef\\n")
'0123456789abcdef0123456789abcdef'
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.cluster.conf import default_pythonpath
from pipelines.cluster.distribution import FlinkDistribution, find_java, locate_distribution
from pipelines.errors import ConfigError, StackError

_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Submission:
    """The outcome of one ``flink run``.

    Attributes:
        job_id: the new job's id.
        argv: the client command line.
        output: everything the client printed.
    """

    job_id: str
    argv: tuple[str, ...]
    output: str


def parse_job_id(output: str) -> str | None:
    """The job id in the client's output, None when it printed none."""
    found = _JOB_ID.findall(output)
    return found[-1] if found else None


def pipeline_option(target: str) -> list[str]:
    """``["-py", FILE]`` for a Python file, ``["-pym", MODULE]`` for a dotted module name.

    Raises:
        ConfigError: ``target`` is neither an existing ``.py`` file nor a module name.
    """
    path = Path(target)
    if path.suffix == ".py" or os.sep in target:
        if not path.is_file():
            raise ConfigError(
                "no such pipeline file", where=target,
                fix="pass an existing .py file or a module name such as pipelines.cluster.probe",
            )
        return ["-py", str(path.resolve())]
    if not _MODULE.match(target):
        raise ConfigError(
            "neither a .py file nor a Python module name", where=target,
            fix="pass a pipeline file (job.py) or a dotted module (pipelines.cluster.probe)",
        )
    return ["-pym", target]


ENTRY_MODULE = "pipelines.runtime.entry"
"""The module ``flink run -pym`` runs for a livefeat pipeline name."""


def is_pipeline_name(target: str) -> bool:
    """Whether ``target`` names a livefeat pipeline rather than a file or module.

    ``NAME`` is a pipeline when ``pipelines.jobs.NAME`` exists; ``package.module:ATTRIBUTE``
    always is; dotted module names and ``.py`` files never are.
    """
    if ":" in target:
        return True
    if "." in target or os.sep in target or not _MODULE.match(target):
        return False
    return importlib.util.find_spec(f"pipelines.jobs.{target}") is not None


def resolve_target(target: str, *, config: Path | None = None,
                   bounded: bool = False) -> tuple[str, list[str]]:
    """``(file or module to run, its leading arguments)`` for ``target``.

    A pipeline name becomes the entry module with ``--pipeline NAME``, the
    absolute settings file (``--config``) when there is one, and ``--bounded``.
    A file or module is run as it is.

    Raises:
        ConfigError: ``--bounded`` for a file or module, or an unknown pipeline.
    """
    if not is_pipeline_name(target):
        if bounded:
            raise ConfigError(
                "--bounded applies to livefeat pipelines, not to a file or module",
                where=target,
                fix="submit a pipeline by name (marketplace), or pass the program's own "
                "arguments after `--`",
            )
        return target, []
    from pipelines.features.registry import load_pipeline

    load_pipeline(target)  # unknown names fail here, before Java starts
    args = ["--pipeline", target]
    if config is not None:
        args += ["--config", str(config.expanduser().resolve())]
    if bounded:
        args.append("--bounded")
    return ENTRY_MODULE, args


def check_jobmanager(address: str) -> str:
    """``HOST:PORT`` of the JobManager's REST endpoint (an ``http://`` prefix is dropped).

    Raises:
        ConfigError: not ``HOST:PORT``.
    """
    bare = re.sub(r"^https?://", "", address.strip()).rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{address!r} is not HOST:PORT", where="--jobmanager",
                          fix="write the REST address, e.g. 127.0.0.1:8081")
    return bare


def savepoint_uri(location: str) -> str:
    """A savepoint location for ``-s``: URIs stay, local paths become absolute."""
    if _SCHEME.match(location):
        return location
    return str(Path(location).expanduser().resolve())


def flink_run_argv(
    dist: FlinkDistribution,
    target: str,
    jobmanager: str,
    *,
    python: str,
    savepoint: str | None = None,
    allow_non_restored_state: bool = False,
    detached: bool = True,
    pyfiles: Sequence[str] = (),
    job_args: Sequence[str] = (),
) -> list[str]:
    """The ``flink run`` command line (see the module docstring)."""
    argv = [str(dist.script("flink")), "run", "-m", check_jobmanager(jobmanager),
            "-pyexec", python, "-pyclientexec", python]
    if savepoint:
        argv += ["-s", savepoint_uri(savepoint)]
        if allow_non_restored_state:
            argv.append("--allowNonRestoredState")
    if detached:
        argv.append("--detached")
    if pyfiles:
        argv += ["-pyfs", ",".join(str(Path(p).resolve()) for p in pyfiles)]
    return [*argv, *pipeline_option(target), *job_args]


def client_environment(java_home: Path, *, conf_dir: Path | None, log_dir: Path,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The client's environment: Java, a configuration, a log directory, the project on
    ``PYTHONPATH`` (so ``-pym pipelines...`` imports)."""
    env = dict(os.environ if environ is None else environ)
    pythonpath = [*default_pythonpath(), *filter(None, env.get("PYTHONPATH", "").split(":"))]
    env.update({"JAVA_HOME": str(java_home), "FLINK_LOG_DIR": str(log_dir),
                "PYTHONPATH": ":".join(dict.fromkeys(pythonpath))})
    if conf_dir is not None:
        env["FLINK_CONF_DIR"] = str(conf_dir)
    else:
        env.pop("FLINK_CONF_DIR", None)
    return env


def _summary(output: str, lines: int = 25) -> str:
    kept = [ln for ln in output.splitlines() if ln.strip() and not ln.lstrip().startswith("at ")]
    return "\n".join(f"    {ln}" for ln in kept[-lines:]) or "    (no output)"


def submit(
    target: str,
    jobmanager: str,
    *,
    log_dir: Path,
    conf_dir: Path | None = None,
    python: str | None = None,
    savepoint: str | None = None,
    allow_non_restored_state: bool = False,
    detached: bool = True,
    pyfiles: Sequence[str] = (),
    job_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    distribution: FlinkDistribution | None = None,
) -> Submission:
    """Run ``flink run`` for ``target`` and return the submitted job's id.

    Args:
        target: a ``.py`` file or a dotted module name.
        jobmanager: ``HOST:PORT`` of the JobManager's REST endpoint.
        log_dir: where the client writes its log.
        conf_dir: the client's ``FLINK_CONF_DIR`` (the local cluster's, when there is one;
            None uses the distribution's).
        python: interpreter for the client and the workers (default: this one).
        savepoint: restore from this savepoint (``-s``).
        allow_non_restored_state: allow savepoint state no operator claims.
        detached: return once submitted (else wait until the job ends).
        pyfiles: extra Python files or directories shipped with the job (``-pyfs``).
        job_args: arguments passed to the program.
        environ: base environment (default: ``os.environ`` now).
        on_line: called with each output line as it arrives.
        distribution: the Flink distribution (default: the PyFlink wheel's).

    Raises:
        ConfigError: a bad target or address.
        StackError: no Java, or the client failed or printed no job id (the
            message shows the end of its output: Python tracebacks land there).
    """
    dist = distribution or locate_distribution()
    argv = flink_run_argv(
        dist, target, jobmanager, python=python or sys.executable, savepoint=savepoint,
        allow_non_restored_state=allow_non_restored_state, detached=detached, pyfiles=pyfiles,
        job_args=job_args,
    )
    java = find_java(environ)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = client_environment(java.home, conf_dir=conf_dir, log_dir=log_dir, environ=environ)
    collected: list[str] = []
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, bufsize=1)
    for line in proc.stdout or ():
        collected.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))
    code = proc.wait()
    output = "".join(collected)
    job_id = parse_job_id(output)
    if code != 0 or job_id is None:
        what = "failed" if code != 0 else "printed no job id"
        raise StackError(
            f"`flink run` {what} (exit code {code}); end of its output:\n{_summary(output)}",
            where=f"{target} -> {jobmanager}",
            fix="read the output above: a Python traceback is an error in the pipeline; "
            "'Connection refused' means no JobManager at that address (`livefeat cluster "
            "status`); a savepoint error means the state does not match the job",
        )
    return Submission(job_id=job_id, argv=tuple(argv), output=output)
