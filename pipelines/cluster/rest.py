"""A small client of Flink's REST API (the JobManager's port 8081 by default).

Only the calls livefeat needs: cluster overview, TaskManagers, jobs, a job's
state and checkpoints, cancel, savepoints and stop-with-savepoint (trigger,
then poll until it is done). Standard library only (``urllib``); every failure becomes a
:class:`~pipelines.errors.StackError` that names the URL and what to do.

Typical use (needs a running cluster, so not run as a doctest)::

    rest = FlinkRest("http://127.0.0.1:8081")
    [job.jid for job in rest.jobs() if job.state == "RUNNING"]
    location = rest.savepoint(job_id, "file:///tmp/savepoints", cancel=True)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.errors import StackError

TRANSIENT_SAVEPOINT_FAILURES = (
    "Checkpoint was declined", "Task local checkpoint failure",
    "Not all required tasks are currently running", "is not being executed",
)
"""How Flink says that tasks could not take a savepoint just now: one was finishing
(``declined (task is closing)``, or asked after it had finished), or not yet running."""

SAVEPOINT_ATTEMPTS = 10
"""Tries of a savepoint that fails that way while the job keeps running."""

TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED", "SUSPENDED"})
"""Job states a job never leaves."""


@dataclass(frozen=True)
class JobSummary:
    """One row of ``GET /jobs/overview``.

    Attributes:
        jid: the 32-hex-digit job id.
        name: the job's name.
        state: ``RUNNING``, ``RESTARTING``, ``CANCELED``, ...
        start_time: start, epoch milliseconds.
        duration_ms: how long it has run (or ran).
        tasks: task counts by state (``running``, ``finished``, ...) plus ``total``.
    """

    jid: str
    name: str
    state: str
    start_time: int
    duration_ms: int
    tasks: dict[str, int]


@dataclass(frozen=True)
class TaskManagerInfo:
    """One row of ``GET /taskmanagers``.

    Attributes:
        id: the TaskManager's resource id (livefeat sets ``livefeat-tm-<n>``).
        slots: task slots it offers.
        free_slots: slots no job uses.
        address: its RPC address.
    """

    id: str
    slots: int
    free_slots: int
    address: str


def _problem_from_body(body: bytes) -> str:
    """The first line of Flink's ``{"errors": [...]}`` answer, or the raw text."""
    text = body.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty answer)"
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list) and errors:
        first = str(errors[0]).strip()
        # Flink puts a Java stack trace in the message: keep the summary lines.
        lines = [line.strip() for line in first.splitlines()
                 if line.strip() and not line.strip().startswith(("at ", "..."))]
        return " / ".join(lines[:3])[:500]
    return text[:300]


class FlinkRest:
    """Client of one Flink REST endpoint.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8081`` (``host:port`` is accepted too).
        timeout: seconds per request.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/")
        self.timeout = timeout

    # --- transport ----------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request and return the decoded JSON answer (None when empty).

        Raises:
            StackError: the endpoint is unreachable, or answered with an error status.
        """
        url = f"{self.url}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            problem = _problem_from_body(exc.read())
            if exc.code == 404:
                raise StackError(
                    f"Flink answered 404 Not Found: {problem}", where=f"{method} {url}",
                    fix="check the job id with `livefeat jobs list`",
                ) from exc
            fix = "read the JobManager log (`livefeat cluster status` shows where it is)"
            if exc.code == 409:
                fix = "the job is not in a state that allows this; see `livefeat jobs list --all`"
            raise StackError(
                f"Flink answered {exc.code} {exc.reason}: {problem}", where=f"{method} {url}",
                fix=fix,
            ) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StackError(
                f"cannot reach the Flink REST API: {reason}", where=url,
                fix="start a local cluster with `livefeat cluster up`, or pass the right "
                "--jobmanager HOST:PORT",
            ) from exc
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StackError(
                f"the Flink REST API answered something that is not JSON: {raw[:200]!r}",
                where=url, fix="check that HOST:PORT is a Flink JobManager's REST port",
            ) from exc

    def _get(self, path: str) -> dict[str, Any]:
        data = self.request("GET", path)
        if not isinstance(data, dict):
            raise StackError(f"unexpected answer to GET {path}: {data!r}"[:300],
                             where=self.url, fix="check that this is a Flink 2.x REST API")
        return data

    # --- cluster ------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """``GET /overview``: TaskManagers, slots (total/available), job counts, version."""
        return self._get("/overview")

    def taskmanagers(self) -> list[TaskManagerInfo]:
        """``GET /taskmanagers``: the registered TaskManagers."""
        rows = self._get("/taskmanagers").get("taskmanagers", [])
        return [
            TaskManagerInfo(
                id=str(row.get("id", "")), slots=int(row.get("slotsNumber", 0)),
                free_slots=int(row.get("freeSlots", 0)), address=str(row.get("path", "")),
            )
            for row in rows
        ]

    # --- jobs ---------------------------------------------------------------

    def jobs(self) -> list[JobSummary]:
        """``GET /jobs/overview``: every job the cluster knows, newest first."""
        rows = self._get("/jobs/overview").get("jobs", [])
        jobs = [
            JobSummary(
                jid=str(row["jid"]), name=str(row.get("name", "")), state=str(row.get("state")),
                start_time=int(row.get("start-time", 0)), duration_ms=int(row.get("duration", 0)),
                tasks={str(k): int(v) for k, v in (row.get("tasks") or {}).items()},
            )
            for row in rows
        ]
        return sorted(jobs, key=lambda job: job.start_time, reverse=True)

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/<id>``: the job's details (``state``, ``vertices``, ...)."""
        return self._get(f"/jobs/{job_id}")

    def job_state(self, job_id: str) -> str:
        """The job's state (``RUNNING``, ``RESTARTING``, ``CANCELED``, ...)."""
        return str(self.job(job_id).get("state"))

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/<id>/checkpoints``: counts, latest completed and restored checkpoint."""
        return self._get(f"/jobs/{job_id}/checkpoints")

    def cancel(self, job_id: str) -> None:
        """Cancel a job (``PATCH /jobs/<id>?mode=cancel``); returns once Flink accepted it."""
        self.request("PATCH", f"/jobs/{job_id}?mode=cancel")

    def wait_for_state(self, job_id: str, states: set[str] | frozenset[str], *,
                       timeout: float = 120.0, poll: float = 0.5) -> str:
        """Poll until the job is in one of ``states``; return that state.

        Raises:
            StackError: the job reached another terminal state, or ``timeout`` passed.
        """
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while True:
            state = self.job_state(job_id)
            if state in states:
                return state
            if state in TERMINAL_STATES:
                raise StackError(
                    f"job {job_id} ended {state} while waiting for {'/'.join(sorted(states))}",
                    where=self.url,
                    fix=f"see why with `curl {self.url}/jobs/{job_id}/exceptions` or in the "
                    "JobManager log",
                )
            if time.monotonic() >= deadline:
                raise StackError(
                    f"job {job_id} is still {state} after {timeout:.0f} s "
                    f"(waited for {'/'.join(sorted(states))})",
                    where=self.url, fix="check the TaskManagers' logs and free slots",
                )
            time.sleep(poll)

    # --- savepoints ---------------------------------------------------------

    def trigger_savepoint(self, job_id: str, target_dir: str | None = None, *,
                          cancel: bool = False) -> str:
        """``POST /jobs/<id>/savepoints``; returns the trigger id to poll.

        Args:
            job_id: the job.
            target_dir: where to write it (a URI such as ``file:///...`` or ``s3://...``);
                None uses the cluster's ``execution.checkpointing.savepoint-dir``.
            cancel: cancel the job once the savepoint is complete.
        """
        body: dict[str, Any] = {"cancel-job": cancel, "formatType": "CANONICAL"}
        if target_dir:
            body["target-directory"] = target_dir
        answer = self.request("POST", f"/jobs/{job_id}/savepoints", body)
        trigger = answer.get("request-id") if isinstance(answer, dict) else None
        if not trigger:
            raise StackError(f"Flink did not return a savepoint trigger id: {answer!r}"[:300],
                             where=self.url, fix="retry; check the JobManager log")
        return str(trigger)

    def savepoint_status(self, job_id: str, trigger_id: str) -> tuple[str, str | None]:
        """(``IN_PROGRESS`` or ``COMPLETED``, the location once completed).

        Raises:
            StackError: the savepoint failed (the message carries Flink's cause).
        """
        answer = self._get(f"/jobs/{job_id}/savepoints/{trigger_id}")
        status = str((answer.get("status") or {}).get("id", "IN_PROGRESS"))
        if status != "COMPLETED":
            return status, None
        operation = answer.get("operation") or {}
        if "location" in operation:
            return status, str(operation["location"])
        cause = operation.get("failure-cause") or {}
        trace = str(cause.get("stack-trace", cause))
        summary = " / ".join(
            line.strip() for line in trace.splitlines()[:12]
            if line.strip() and not line.strip().startswith("at ")
        )
        raise StackError(
            f"the savepoint of job {job_id} failed: {summary[:600]}", where=self.url,
            fix="check that the job is RUNNING with all tasks deployed and that the target "
            "directory is writable by the cluster",
        )

    def trigger_stop(self, job_id: str, target_dir: str | None = None, *,
                     drain: bool = False) -> str:
        """``POST /jobs/<id>/stop``: stop with a savepoint; returns the trigger id to poll.

        Args:
            job_id: the job.
            target_dir: where to write the savepoint (None: the cluster's savepoint dir).
            drain: first advance event time to the end (``MAX_WATERMARK``), so every
                event-time timer fires and the job ends ``FINISHED`` as if its input had
                ended; without it the job ends ``FINISHED`` with timers still pending in
                the savepoint, to be resumed.
        """
        body: dict[str, Any] = {"drain": drain, "formatType": "CANONICAL"}
        if target_dir:
            body["targetDirectory"] = target_dir
        answer = self.request("POST", f"/jobs/{job_id}/stop", body)
        trigger = answer.get("request-id") if isinstance(answer, dict) else None
        if not trigger:
            raise StackError(f"Flink did not return a stop trigger id: {answer!r}"[:300],
                             where=self.url, fix="retry; check the JobManager log")
        return str(trigger)

    def stop(self, job_id: str, target_dir: str | None = None, *, drain: bool = False,
             timeout: float = 300.0, poll: float = 0.5) -> str:
        """Stop a job with a savepoint (see :meth:`trigger_stop`) and wait; returns its location.

        A savepoint the tasks decline while the job runs on (a task is just
        finishing, or not yet running) is tried again until ``timeout``.

        Raises:
            StackError: it failed, or did not complete within ``timeout`` seconds.
        """
        return self._with_retries(
            job_id, lambda: self.trigger_stop(job_id, target_dir, drain=drain), timeout, poll)

    def savepoint(self, job_id: str, target_dir: str | None = None, *, cancel: bool = False,
                  timeout: float = 300.0, poll: float = 0.5) -> str:
        """Trigger a savepoint and wait for it; returns its location.

        A savepoint the tasks decline while the job runs on (a task is just
        finishing, or not yet running) is tried again until ``timeout``; the job
        is only cancelled (``cancel``) after one succeeded.

        Raises:
            StackError: it failed, or did not complete within ``timeout`` seconds.
        """
        return self._with_retries(
            job_id, lambda: self.trigger_savepoint(job_id, target_dir, cancel=cancel), timeout,
            poll)

    def _with_retries(self, job_id: str, trigger: Callable[[], str], timeout: float,
                      poll: float) -> str:
        deadline = time.monotonic() + timeout
        for attempt in range(1, SAVEPOINT_ATTEMPTS + 1):
            try:
                return self._await_savepoint(job_id, trigger(), deadline, poll, timeout)
            except StackError as exc:
                if attempt == SAVEPOINT_ATTEMPTS or not self._worth_retrying(job_id, exc,
                                                                             deadline):
                    raise
            time.sleep(poll)
        raise AssertionError("unreachable")  # pragma: no cover

    def _worth_retrying(self, job_id: str, exc: StackError, deadline: float) -> bool:
        """Whether a failed savepoint may succeed if tried again: a transient refusal by
        the tasks while the job is still RUNNING."""
        transient = any(text in exc.problem for text in TRANSIENT_SAVEPOINT_FAILURES)
        if not transient or time.monotonic() >= deadline:
            return False
        try:
            return self.job_state(job_id) == "RUNNING"
        except StackError:
            return False

    def _await_savepoint(self, job_id: str, trigger: str, deadline: float, poll: float,
                         timeout: float) -> str:
        while True:
            status, location = self.savepoint_status(job_id, trigger)
            if location is not None:
                return location
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the savepoint of job {job_id} is still {status} after {timeout:.0f} s",
                    where=self.url,
                    fix="a backpressured job takes long to align; retry with a longer "
                    "--timeout, or check the job's checkpoint tab in the web UI",
                )
            time.sleep(poll)
