"""``livefeat cluster up|down|status``: a standalone Flink session cluster on this machine.

It runs the Flink distribution inside the PyFlink wheel: one JobManager and N
TaskManagers, each a JVM started by the distribution's own scripts with a
private configuration directory under ``<state_dir>/flink``. Each process
gets a pid file ``<state_dir>/pids/flink-jobmanager.json`` /
``flink-taskmanager-<n>.json`` written with the embedded stack's helpers, so
``down`` stops exactly these processes and never another Flink on the machine.

Typical use (starts JVMs, so not run as a doctest)::

    manager = ClusterManager(Path(".livefeat"))
    result = manager.up(ClusterOptions(python=sys.executable, taskmanagers=2))
    manager.status().taskmanagers   # pid, registered?, slots of each TaskManager
    manager.down()
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.cluster.conf import (
    IDENT,
    ClusterOptions,
    ClusterPaths,
    port_range,
    write_conf_dir,
    write_lib_dir,
)
from pipelines.cluster.daemons import (
    JOBMANAGER,
    TASKMANAGER,
    Daemon,
    end_leftovers,
    forget_script_pids,
    recorded_group,
    start_daemon,
)
from pipelines.cluster.distribution import FlinkDistribution, find_java, locate_distribution
from pipelines.cluster.rest import FlinkRest, JobSummary, TaskManagerInfo
from pipelines.errors import StackError
from pipelines.stack.process import (
    Liveness,
    PidFiles,
    ProcessRecord,
    StopOutcome,
    liveness,
    port_in_use,
    state_lock,
    stop,
    tail,
)

JM_SERVICE = "flink-jobmanager"
TM_PREFIX = "flink-taskmanager-"


def tm_service(index: int) -> str:
    """Pid-file service name of the ``index``-th TaskManager (from 1)."""
    return f"{TM_PREFIX}{index}"


@dataclass(frozen=True)
class _Start:
    """One daemon ``up`` starts."""

    service: str
    daemon: Daemon
    args: tuple[str, ...]
    endpoint: str
    info: str


@dataclass(frozen=True)
class ClusterUp:
    """What ``up`` did.

    Attributes:
        rest_url: where the REST API and web UI answer.
        started: services started by this call.
        already_running: services found running and left alone.
        taskmanagers: TaskManagers registered at the JobManager when ``up`` returned.
        slots: task slots those offer.
        seconds: how long ``up`` took.
        notes: things the user should know.
    """

    rest_url: str
    started: tuple[str, ...]
    already_running: tuple[str, ...]
    taskmanagers: int
    slots: int
    seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessState:
    """One cluster process as ``status`` sees it.

    Attributes:
        service: pid-file name (``flink-jobmanager``, ``flink-taskmanager-1``).
        state: ``running``, ``dead`` (pid file, no process) or ``stopped``.
        pid: its pid.
        log: its log file.
        uptime_s: seconds since start.
        registered: (TaskManagers) whether the JobManager lists it.
        slots: (TaskManagers) slots it offers, and free_slots of them unused.
        free_slots: see ``slots``.
        resource_id: (TaskManagers) its id at the JobManager.
    """

    service: str
    state: str
    pid: int | None = None
    log: Path | None = None
    uptime_s: float | None = None
    registered: bool | None = None
    slots: int | None = None
    free_slots: int | None = None
    resource_id: str = ""


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as ``status`` sees it.

    Attributes:
        rest_url: the REST URL from the JobManager's pid file (None when there is none).
        answering: whether the REST API answered.
        jobmanager: the JobManager process.
        taskmanagers: every TaskManager with a pid file.
        jobs: the cluster's jobs, newest first (empty when not answering).
        slots_total: slots of all registered TaskManagers.
        slots_available: of those, unused.
        problem: why the REST API did not answer.
    """

    rest_url: str | None
    answering: bool
    jobmanager: ProcessState
    taskmanagers: list[ProcessState]
    jobs: list[JobSummary] = field(default_factory=list)
    slots_total: int = 0
    slots_available: int = 0
    problem: str = ""


class ClusterManager:
    """Starts, stops and inspects the local Flink session cluster of one state directory.

    Args:
        state_dir: the stack's state directory (``stack.state_dir``).
        distribution: the Flink distribution (default: the PyFlink wheel's).
        environ: environment to start the processes with (default: ``os.environ`` now).
        ready_timeout: seconds to wait for the TaskManagers to register.
        stop_timeout: seconds between SIGTERM and SIGKILL when stopping a process.
    """

    def __init__(self, state_dir: Path, *, distribution: FlinkDistribution | None = None,
                 environ: Mapping[str, str] | None = None, ready_timeout: float = 120.0,
                 stop_timeout: float = 15.0) -> None:
        self.state_dir = state_dir.expanduser().resolve()
        self.paths = ClusterPaths(self.state_dir)
        self.pid_files = PidFiles(self.state_dir)
        self.distribution = distribution
        self.environ = environ
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout

    # --- records --------------------------------------------------------------

    def _tm_records(self) -> dict[int, ProcessRecord]:
        found: dict[int, ProcessRecord] = {}
        for path in sorted(self.pid_files.dir.glob(f"{TM_PREFIX}*.json")):
            index = path.stem.removeprefix(TM_PREFIX)
            if index.isdigit():
                record = self.pid_files.read(path.stem)
                if record is not None:
                    found[int(index)] = record
        return dict(sorted(found.items()))

    def _saved_options(self) -> dict[str, object]:
        try:
            data = json.loads((self.paths.root / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def rest_url(self) -> str | None:
        """The REST URL of this state directory's JobManager, if it has a pid file."""
        record = self.pid_files.read(JM_SERVICE)
        return None if record is None else record.endpoint

    def environment(self, options: ClusterOptions, java_home: Path) -> dict[str, str]:
        """The environment the Flink scripts (and so the JVMs and Python workers) get."""
        env = dict(os.environ if self.environ is None else self.environ)
        dist = self.distribution or locate_distribution()
        pythonpath = [*options.pythonpath, *filter(None, env.get("PYTHONPATH", "").split(":"))]
        env.update({
            "JAVA_HOME": str(java_home),
            "FLINK_HOME": str(dist.home),
            "FLINK_CONF_DIR": str(self.paths.conf),
            "FLINK_LIB_DIR": str(self.paths.lib),
            "FLINK_LOG_DIR": str(self.paths.logs),
            "FLINK_PID_DIR": str(self.paths.script_pids),
            "FLINK_IDENT_STRING": IDENT,
            "PYTHONPATH": ":".join(dict.fromkeys(pythonpath)),
        })
        return env

    # --- up -------------------------------------------------------------------

    def up(self, options: ClusterOptions) -> ClusterUp:
        """Start the JobManager and the TaskManagers that are not running; wait for them.

        Processes already running are left alone. The missing ones start at
        once (each start script spends seconds in Java reading the
        configuration). When something fails, the processes this call started
        are stopped again.

        Raises:
            StackError: no suitable Java, a port in use, a process died, or the
                TaskManagers did not register within ``ready_timeout``.
        """
        began = time.monotonic()
        java = find_java(self.environ)
        dist = self.distribution or locate_distribution()
        notes: list[str] = []
        started: list[str] = []
        with state_lock(self.paths.root):
            try:
                jm = self._live(JM_SERVICE, notes)
                plans: list[_Start] = []
                if jm is None:
                    self._prepare_jobmanager(options, dist, notes)
                    plans.append(_Start(JM_SERVICE, JOBMANAGER, (), options.rest_url,
                                        f"rpc port {options.rpc_port}"))
                else:
                    self._note_drift(options, notes)
                tms: dict[int, ProcessRecord] = {}
                for index in range(1, options.taskmanagers + 1):
                    record = self._live(tm_service(index), notes)
                    if record is not None:
                        tms[index] = record
                        continue
                    resource_id = f"livefeat-tm-{index}-{uuid.uuid4().hex[:6]}"
                    plans.append(_Start(tm_service(index), TASKMANAGER,
                                        ("-D", f"taskmanager.resource-id={resource_id}"),
                                        resource_id, ""))
                running = [JM_SERVICE] if jm is not None else []
                running += [tm_service(i) for i in tms]
                records = self._start_all(plans, dist, self.environment(options, java.home),
                                          started)
                jm = jm or records[JM_SERVICE]
                tms.update({i: records[tm_service(i)] for i in range(1, options.taskmanagers + 1)
                            if tm_service(i) in records})
                extra = sorted(set(self._tm_records()) - set(tms))
                if extra:
                    notes.append(f"TaskManagers {', '.join(map(str, extra))} from an earlier "
                                 "`cluster up` still run; `livefeat cluster down` stops them")
                rest = FlinkRest(jm.endpoint, timeout=5.0)
                registered = self._wait_registered(rest, jm, list(tms.values()))
            except BaseException:
                self._stop_services(reversed(started))
                raise
        return ClusterUp(
            rest_url=jm.endpoint, started=tuple(started), already_running=tuple(running),
            taskmanagers=len(registered), slots=sum(tm.slots for tm in registered),
            seconds=time.monotonic() - began, notes=tuple(notes),
        )

    def _start_all(self, plans: list[_Start], dist: FlinkDistribution, env: Mapping[str, str],
                   started: list[str]) -> dict[str, ProcessRecord]:
        """Run the start scripts of ``plans`` concurrently; write each pid file as it succeeds."""
        def run(plan: _Start) -> ProcessRecord:
            return start_daemon(
                plan.daemon, service=plan.service, bin_dir=dist.bin,
                args=plan.args, env=env, pid_dir=self.paths.script_pids,
                log_dir=self.paths.logs, ident=IDENT, endpoint=plan.endpoint, info=plan.info,
            )

        records: dict[str, ProcessRecord] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
            futures = {pool.submit(run, plan): plan for plan in plans}
            for future in as_completed(futures):
                try:
                    record = future.result()
                except BaseException as exc:  # collected: the others may have started
                    errors.append(exc)
                    continue
                self.pid_files.write(record)
                started.append(record.service)
                records[record.service] = record
        if errors:
            raise errors[0]
        return records

    def _live(self, service: str, notes: list[str]) -> ProcessRecord | None:
        record = self.pid_files.read(service)
        if record is None:
            return None
        state = liveness(record)
        if state is Liveness.RUNNING:
            return record
        self._end_leftovers(record)
        self.pid_files.remove(service)
        why = "had exited" if state is Liveness.GONE else "is gone (its pid was reused)"
        notes.append(f"the previous {service} (pid {record.pid}) {why}; log: {record.log}")
        return None

    def _note_drift(self, options: ClusterOptions, notes: list[str]) -> None:
        saved = self._saved_options()
        asked = {"rest_url": options.rest_url, "slots": options.slots,
                 "rpc_port": options.rpc_port}
        changed = [f"{key} {saved.get(key)} (asked {value})" for key, value in asked.items()
                   if key in saved and saved[key] != value]
        if changed:
            notes.append("the cluster already runs with " + ", ".join(changed)
                         + "; run `livefeat cluster down` first to change them")

    def _prepare_jobmanager(self, options: ClusterOptions, dist: FlinkDistribution,
                            notes: list[str]) -> None:
        """Stop orphaned TaskManagers, check the ports, write the configuration."""
        orphans = self._tm_records()
        if orphans:
            self._stop_services(tm_service(i) for i in orphans)
            notes.append(f"stopped {len(orphans)} TaskManager(s) left without a JobManager")
        for port, flag in ((options.rest_port, "--rest-port"), (options.rpc_port, "--rpc-port")):
            if port_in_use(options.host, port):
                raise StackError(
                    f"port {port} on {options.host} is already in use by another program, so "
                    "the Flink JobManager cannot listen there",
                    where=flag,
                    fix=f"stop the program holding it (find it with `ss -ltnp 'sport = :{port}'`"
                    f" or `lsof -iTCP:{port} -sTCP:LISTEN`; if it is a livefeat cluster of "
                    f"another directory, run `livefeat cluster down` there), or pass "
                    f"{flag} with a free port",
                )
        if not any(not port_in_use(options.host, p) for p in port_range(options.prometheus_ports)):
            notes.append(f"every port in {options.prometheus_ports} is in use: Prometheus "
                         "metrics will not be exported")
        write_conf_dir(dist.conf, options, self.paths)
        write_lib_dir(dist.home, self.paths)
        (self.paths.root / "cluster.json").write_text(json.dumps({
            "rest_url": options.rest_url, "slots": options.slots, "rpc_port": options.rpc_port,
            "taskmanagers": options.taskmanagers, "python": options.python,
        }, indent=2) + "\n")

    def _wait_registered(self, rest: FlinkRest, jm: ProcessRecord,
                         tms: list[ProcessRecord]) -> list[TaskManagerInfo]:
        deadline = time.monotonic() + self.ready_timeout
        wanted = {tm.endpoint for tm in tms}
        last = "no answer yet"
        while True:
            for record in (jm, *tms):
                if liveness(record) is not Liveness.RUNNING:
                    raise StackError(
                        f"the {record.service} (pid {record.pid}) exited while the cluster "
                        f"started; last lines of its log:\n{tail(record.log)}",
                        where=str(record.log),
                        fix="read the log; `livefeat cluster down` cleans up",
                    )
            try:
                infos = rest.taskmanagers()
                found = [info for info in infos if info.id in wanted]
                # a TaskManager is listed a moment before its slot report arrives (0 slots)
                if len(found) == len(wanted) and all(info.slots > 0 for info in found):
                    return found
                last = (f"{len(found)} of {len(wanted)} TaskManagers registered, "
                        f"{sum(info.slots > 0 for info in found)} with their slots")
            except StackError as exc:
                last = exc.problem
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the cluster was not ready within {self.ready_timeout:.0f} s ({last}); "
                    f"last lines of the JobManager log:\n{tail(jm.log)}",
                    where=str(jm.log), fix="read the logs under " + str(self.paths.logs),
                )
            time.sleep(0.25)

    # --- down -----------------------------------------------------------------

    def down(self) -> list[tuple[str, int | None, str]]:
        """Stop every TaskManager, then the JobManager, of this state directory.

        Returns:
            (service, pid, outcome) per process with a pid file.

        Raises:
            StackError: a process survived SIGKILL.
        """
        with state_lock(self.paths.root):
            services = [tm_service(i) for i in self._tm_records()]
            if self.pid_files.read(JM_SERVICE) is not None:
                services.append(JM_SERVICE)
            return self._stop_services(services)

    def _stop_services(self, services: Iterable[str]) -> list[tuple[str, int | None, str]]:
        results: list[tuple[str, int | None, str]] = []
        stopped: set[int] = set()
        for service in services:
            record = self.pid_files.read(service)
            if record is None:
                continue
            outcome = stop(record, self.stop_timeout)
            self._end_leftovers(record)
            self.pid_files.remove(service)
            stopped.add(record.pid)
            text = outcome.value
            if outcome is StopOutcome.NOT_RUNNING:
                text = "had already exited; removed its pid file"
            results.append((service, record.pid, text))
        forget_script_pids(self.paths.script_pids, IDENT, stopped)
        return results

    def _end_leftovers(self, record: ProcessRecord) -> None:
        """End Python workers a stopped or killed process left in its process group."""
        pgid = recorded_group(record)
        if pgid is not None:
            end_leftovers(pgid, ("pyflink", str(self.paths.root)))

    # --- status ---------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """The JobManager, each TaskManager (registered? slots?) and the jobs."""
        jm_record = self.pid_files.read(JM_SERVICE)
        jm = self._process_state(JM_SERVICE, jm_record)
        tm_records = self._tm_records()
        infos: dict[str, TaskManagerInfo] = {}
        jobs: list[JobSummary] = []
        answering, problem = False, ""
        if jm_record is not None and jm.state == "running":
            rest = FlinkRest(jm_record.endpoint, timeout=5.0)
            try:
                infos = {info.id: info for info in rest.taskmanagers()}
                jobs = rest.jobs()
                answering = True
            except StackError as exc:
                problem = exc.problem
        tms = []
        for index, record in tm_records.items():
            base = self._process_state(tm_service(index), record)
            info = infos.get(record.endpoint)
            tms.append(ProcessState(
                **{**asdict(base), "registered": info is not None if answering else None,
                   "slots": info.slots if info else None,
                   "free_slots": info.free_slots if info else None,
                   "resource_id": record.endpoint}))
        return ClusterStatus(
            rest_url=None if jm_record is None else jm_record.endpoint, answering=answering,
            jobmanager=jm, taskmanagers=tms, jobs=jobs,
            slots_total=sum(i.slots for i in infos.values()),
            slots_available=sum(i.free_slots for i in infos.values()), problem=problem,
        )

    @staticmethod
    def _process_state(service: str, record: ProcessRecord | None) -> ProcessState:
        if record is None:
            return ProcessState(service, "stopped")
        alive = liveness(record) is Liveness.RUNNING
        return ProcessState(
            service, "running" if alive else "dead", pid=record.pid, log=record.log,
            uptime_s=max(0.0, time.time() - record.started_at) if alive else None,
        )
