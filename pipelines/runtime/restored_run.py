"""Finish a bounded run that was resumed from a checkpoint or savepoint.

Flink's Kafka connector (4.0.1 here; still so in 5.0, see FLINK-31006 and
FLINK-33466) never tells the sources of a *restored* bounded job that no more
partitions will come: the restored split enumerator finds no partition change and
returns before the only code that sends "no more splits". The sources read every
partition to its end offset (kept in the checkpoint) and then wait forever, so
the end of input, with its final watermark, never arrives and the job never ends.

:func:`pipelines.runtime.streaming.run_pipeline` works around it from the client:
it starts a restored bounded job asynchronously, with its REST endpoint on a known
local port (:data:`DRAIN_CONF`), and :func:`finish_restored_bounded` waits until both

* every source task has been idle for two looks in a row (Flink's
  ``idleTimeMsPerSecond``: a source that has read all its splits waits, idle, for
  the signal that never comes; one still reading, or held back by a busy step
  downstream, is busy or back-pressured), and
* every Kafka record below the run's end offsets is in the offline store as an
  accepted event or a quarantine row (nothing is lost; records the crashed job
  wrote after its last checkpoint count too, which is why the sources are asked);

then it stops the job with drain (stop-with-savepoint ``--drain``): Flink emits
the final watermark exactly as at the end of bounded input, every event-time timer
up to the horizon fires, the sinks flush, and the job finishes. The savepoint this
takes is deleted afterwards. Flink refreshes task metrics every few seconds, so
this adds some seconds to a resumed run.

The end offsets are read again when the run resumes, so the topics must hold what
they held when the crashed run started (the restored sources stop at the offsets
in the checkpoint). A run that gains no record for ``stall_s`` seconds fails with
a :class:`~pipelines.errors.JobError` that says so, instead of waiting forever.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.cluster.rest import FlinkRest
from pipelines.config import Settings
from pipelines.errors import JobError, StackError
from pipelines.sinks.parquet import read_dataset

_TERMINAL = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}

IDLE_MS_PER_S = 900.0
"""A source task idle at least this many ms per second has nothing left to read."""


def unaccounted(
    uri: str,
    end_offsets: Mapping[tuple[str, int], int],
    s3_options: dict[str, Any] | None = None,
) -> int:
    """How many records below ``end_offsets`` are neither an accepted event nor quarantined.

    Positions are counted once however often a replay wrote them.
    """
    written: set[tuple[str, int, int]] = set()
    for topic in sorted({t for t, _ in end_offsets}):
        try:
            table = read_dataset(uri, f"events/{topic}", s3_options,
                                 columns=["_partition", "_offset"])
        except FileNotFoundError:
            continue
        written.update(
            (topic, p, o) for p, o in zip(table.column(0).to_pylist(),
                                          table.column(1).to_pylist(), strict=True)
        )
    try:
        held = read_dataset(uri, "quarantine", s3_options, columns=["topic", "partition", "offset"])
        written.update(zip(*(held.column(i).to_pylist() for i in range(3)), strict=True))
    except FileNotFoundError:
        pass
    total = sum(end_offsets.values())
    done = sum(1 for t, p, o in written if o < end_offsets.get((t, p), 0))
    return total - done


def sources_idle(rest: FlinkRest, job_id: str) -> bool:
    """True when every source task of the job is idle (``idleTimeMsPerSecond``, all subtasks).

    False while a metric is not reported yet, or the endpoint does not answer.
    """
    try:
        vertices = rest.job(job_id).get("vertices", [])
        sources = [v for v in vertices if str(v.get("name", "")).startswith("Source:")]
        if not sources:
            return False
        for vertex in sources:
            answer = rest.request(
                "GET", f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
                "?get=idleTimeMsPerSecond")
            values = [m for m in answer or [] if m.get("id") == "idleTimeMsPerSecond"]
            if not values or float(values[0].get("min", 0.0)) < IDLE_MS_PER_S:
                return False
    except StackError:
        return False
    return True


def _savepoint_target(checkpoint_dir: str | os.PathLike[str]) -> str:
    text = str(checkpoint_dir)
    if "://" in text:
        return f"{text.rstrip('/')}/drain-savepoints"
    return (Path(checkpoint_dir).resolve() / "drain-savepoints").as_uri()


DRAIN_CONF = {
    "rest.bind-address": "127.0.0.1",
    "rest.address": "127.0.0.1",
    # the REST API caches task metrics for 10 s by default; the drain waits on them
    "metrics.fetcher.update-interval": "1 s",
}
"""Flink configuration of a restored bounded run (plus ``rest.port``)."""


def _status(client: Any) -> str:
    return str(client.get_job_status().result()).rsplit(".", 1)[-1]


_NOT_YET = ("Not all required tasks are currently running", "is not being executed")
"""Why Flink refuses a savepoint while some task of the job is still starting."""


def _stop_with_drain(client: Any, savepoint_uri: str, *, patience_s: float = 300.0,
                     pause_s: float = 2.0) -> str:
    """stop-with-savepoint --drain; returns the savepoint's location.

    Flink refuses while a task is still starting (a Python step opening), which can
    outlast the moment every record is admitted; ask again until ``patience_s``.
    """
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    canonical = jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    deadline = time.monotonic() + patience_s
    while True:
        try:
            future = client._j_job_client.stopWithSavepoint(True, savepoint_uri, canonical)
            return str(future.get())
        except Exception as exc:  # Py4J: the Java ExecutionException, as text
            if not any(s in str(exc) for s in _NOT_YET) or time.monotonic() > deadline:
                raise
        time.sleep(pause_s)


def finish_restored_bounded(
    client: Any,
    settings: Settings,
    end_offsets: Mapping[tuple[str, int], int],
    rest: FlinkRest,
    *,
    progress: Callable[[str], None] | None = None,
    poll_s: float = 2.0,
    stall_s: float = 600.0,
) -> None:
    """Wait until a restored bounded job has read and admitted everything, then drain it.

    Args:
        client: the PyFlink ``JobClient`` of the running job.
        settings: ``offline_store`` and ``flink.checkpoint_dir`` are used.
        end_offsets: the run's end offsets.
        rest: the job's REST endpoint (task metrics).
        progress: called with one-line messages.
        poll_s: seconds between looks.
        stall_s: fail when no further record is written for this long.

    Raises:
        JobError: the job failed, or made no progress for ``stall_s`` seconds.
    """
    from pipelines.sinks.s3 import s3_options_for

    say = progress or (lambda _m: None)
    s3 = s3_options_for(settings)
    uri = settings.offline_store.uri
    job_id = str(client.get_job_id())
    left = sum(end_offsets.values())
    changed = time.monotonic()
    idle_looks = 0
    shown: tuple[bool, bool] | None = None
    while True:
        status = _status(client)
        if status in _TERMINAL:
            break  # ended on its own (a connector that signals the end) or failed
        idle_looks = idle_looks + 1 if status == "RUNNING" and sources_idle(rest, job_id) else 0
        now_left = unaccounted(uri, end_offsets, s3)
        state = (now_left == 0, idle_looks > 0)
        if state != shown:
            say(f"restored job: {now_left:,} records not yet written; sources "
                + ("idle" if idle_looks else "reading"))
            shown = state
        if now_left == 0 and idle_looks >= 2:
            say("every record read and admitted; draining the restored job (final watermark, "
                "flush)")
            location = _stop_with_drain(client, _savepoint_target(settings.flink.checkpoint_dir))
            _remove_local(location)
            break
        if now_left < left:
            left, changed = now_left, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            client.cancel().result()
            why = (f"{left:,} records below the end offsets are still unaccounted for" if left
                   else "every record is written but its sources never went idle")
            raise JobError(
                f"the restored job made no progress for {stall_s:.0f} s: {why}",
                where=f"offline store {uri}",
                fix="resume only over the topics as they were when the crashed run started "
                "(its sources stop at the end offsets kept in the checkpoint), and check the "
                f"Flink log in {settings.stack.state_dir}/flink-logs",
            )
        time.sleep(poll_s)
    client.get_job_execution_result().result()  # raises if the job failed


def _remove_local(location: str) -> None:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        shutil.rmtree(Path(parsed.path), ignore_errors=True)
