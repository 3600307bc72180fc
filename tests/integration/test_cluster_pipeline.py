"""The reference pipeline on a real local Flink cluster: savepoint + resume, and TaskManager loss.

Generated traffic (out-of-order, late and bad records included) goes to a
private embedded stack; ``livefeat submit marketplace --bounded`` sends the
reference pipeline to the session's cluster (``tests/integration/flink_cluster.py``).

* One run is stopped with a savepoint (``jobs savepoint --cancel``) once it
  has written events and completed a checkpoint, then resumed from it
  (``jobs resume``) and left to finish.
* Another run loses the TaskManager it runs on (``kill -9``) at the same point;
  Flink restarts it from its last checkpoint on the other TaskManager, and it
  finishes.

Then every changelog row of every view (read back deduplicated) must equal
plain SQL over the accepted events (``tests/reference.py``), and every record
read must be accounted for exactly once. The interruptions are triggered by
observed progress, never by time; a run that finishes before it could be
interrupted fails the test: raise ``EVENTS`` then.

A bounded Kafka source restored from a savepoint reads to its end offsets but
never finishes (FLINK-31006 / FLINK-33466, Kafka connector 4.0.1-2.0: the
restored enumerator never tells the readers that no more splits come), and its
watermark stays at its minimum. So once every record of the input has been
written (accepted or quarantined) and the resumed run's sources have gone quiet,
the test stops it with ``jobs stop --drain``, which ends event time as the end
of input does; a connector that finishes by itself skips that.

Both runs must end exactly at the reference. That holds across a restore because
admission decides lateness from the partition's largest timestamp, kept in
checkpointed state, not from the live watermark alone (which a restored job
starts again from nothing); see AdmitFunction.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli.cluster_cmd import jobs, submit
from pipelines.cluster.manager import ClusterManager
from pipelines.cluster.rest import TERMINAL_STATES, FlinkRest
from pipelines.config import Settings
from pipelines.errors import StackError
from pipelines.jobs.marketplace import PIPELINE
from pipelines.operators.routing import RoutingPlan
from pipelines.runtime.horizon import max_timestamp
from pipelines.runtime.summary import summarize
from pipelines.sinks.parquet import read_dataset
from pipelines.sources.offsets import kafka_python_config, true_end_offsets
from tests.integration.exact import (
    accepted_events,
    assert_changelog_is_exact,
    fresh_stack,
    generate,
    write_config,
)
from tests.integration.flink_cluster import invoke, wait_for
from tests.reference import Reference

pytestmark = pytest.mark.integration

EVENTS = 10_000
"""Generated records. The runs must still be going when the test interrupts them."""
CHECKPOINT_MS = 1_000
JOB_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Traffic:
    """What the module's stack holds."""

    settings: Settings
    manifest: dict[str, Any]
    end_offsets: dict[tuple[str, int], int]
    horizon_ms: int


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """A private stack with generated traffic of every fault kind."""
    root = tmp_path_factory.mktemp("cluster-pipeline")
    with fresh_stack(root) as stack:
        # Off here: the online store has its own tests; this one is about the offline changelog.
        settings = stack.model_copy(update={
            "online_store": stack.online_store.model_copy(update={"enabled": False})})
        manifest = generate(write_config(settings, root / "generate.yaml"),
                            root / "manifest.json", EVENTS, seed=11)
        ends = true_end_offsets(settings.kafka, RoutingPlan(PIPELINE).topics)
        horizon = max_timestamp(ends, **kafka_python_config(settings.kafka))
        assert horizon is not None
        yield Traffic(settings, manifest, ends, horizon)


def _run_settings(traffic: Traffic, root: Path) -> tuple[Settings, Path]:
    """Settings of one run: its own offline store and checkpoints, on paths every process sees."""
    base = traffic.settings
    settings = base.model_copy(update={
        "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
        "flink": base.flink.model_copy(update={"checkpoint_dir": root / "checkpoints",
                                               "checkpoint_interval_ms": CHECKPOINT_MS}),
    })
    return settings, write_config(settings, root / "livefeat.yaml")


def _submit(cluster_dir: Path, config: Path, *, savepoint: str | None = None) -> str:
    state = ["--state-dir", str(cluster_dir)]
    if savepoint is None:
        out = invoke(submit, ["marketplace", "--config", str(config), "--bounded", *state])
    else:
        out = invoke(jobs, ["resume", savepoint, "marketplace", "--config", str(config),
                            "--bounded", *state])
    job = out.strip()
    assert len(job) == 32, out
    return job


def _finished_too_early(job: str, before: str) -> str:
    return (f"job {job} FINISHED before {before}: the pipeline got faster than this test "
            f"expects; raise EVENTS ({EVENTS}) in {__name__} so the run lasts long enough")


def _await_progress(rest: FlinkRest, job: str, offline: Path, before: str) -> int:
    """Wait until the job has written accepted events, then completed a checkpoint after that.

    Returns the id of that checkpoint. Fails at once (not a timeout) when the job ends first.
    """
    def running() -> bool:
        state = rest.job_state(job)
        if state == "FINISHED":
            pytest.fail(_finished_too_early(job, before))
        if state in TERMINAL_STATES:
            pytest.fail(f"job {job} ended {state} before {before}; see "
                        f"{rest.url}/jobs/{job}/exceptions")
        return state == "RUNNING"

    def completed() -> int:
        latest = rest.checkpoints(job)["latest"]["completed"]
        return int(latest["id"]) if latest else 0

    wait_for(f"job {job} to write accepted events",
             lambda: running() and any((offline / "events").rglob("*.parquet")),
             timeout=JOB_TIMEOUT_S, poll=0.2)
    seen = completed()
    return wait_for(f"job {job} to complete a checkpoint after it wrote events",
                    lambda: running() and (latest := completed()) > seen and latest,
                    timeout=JOB_TIMEOUT_S, poll=0.2)


def _source_records(rest: FlinkRest, job: str) -> int:
    """Records the job's Kafka sources emitted (Flink's own task I/O counters)."""
    return sum(int(v["metrics"]["write-records"]) for v in rest.job(job)["vertices"]
               if str(v["name"]).startswith("Source: read_"))


def _written_positions(settings: Settings) -> set[tuple[str, int, int]]:
    """Kafka positions the run wrote as an accepted event or a quarantine row."""
    uri = settings.offline_store.uri
    written: set[tuple[str, int, int]] = set()
    for topic in RoutingPlan(PIPELINE).topics:
        with contextlib.suppress(FileNotFoundError):
            table = read_dataset(uri, f"events/{topic}", columns=["_partition", "_offset"])
            written.update((topic, p, o) for p, o in zip(
                table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    with contextlib.suppress(FileNotFoundError):
        held = read_dataset(uri, "quarantine", columns=["topic", "partition", "offset"])
        written.update(zip(*(held.column(i).to_pylist() for i in range(3)), strict=True))
    return written


def _finish(rest: FlinkRest, job: str, traffic: Traffic, settings: Settings, cluster_dir: Path,
            savepoints: Path) -> None:
    """Let a resumed bounded run finish: by itself, or drained once it has read everything.

    "Read everything": every Kafka position below the end offsets is written (as an
    accepted event or a quarantine row) and the job's sources emitted nothing more for
    a while (so the positions are not only those the cancelled run wrote).
    """
    everything = {(t, p, o) for (t, p), end in traffic.end_offsets.items() for o in range(end)}
    last: list[int] = []

    def done() -> str | None:
        if rest.job_state(job) == "FINISHED":
            return "FINISHED"
        last.append(_source_records(rest, job))
        quiet = len(last) >= 3 and last[-1] == last[-3]
        return "READ" if quiet and everything <= _written_positions(settings) else None

    state = wait_for(f"job {job} to finish or read its input to the end", done,
                     timeout=JOB_TIMEOUT_S, poll=2.0)
    if state == "READ":
        invoke(jobs, ["stop", job, "--drain", "--dir", savepoints.as_uri(),
                      "--state-dir", str(cluster_dir)])
    assert rest.wait_for_state(job, {"FINISHED"}, timeout=JOB_TIMEOUT_S) == "FINISHED"


def _assert_bad_records_quarantined(traffic: Traffic, settings: Settings) -> None:
    """Every bad record is in the quarantine with the generator's reason (lateness aside)."""
    summary = summarize(PIPELINE, settings.offline_store.uri, traffic.end_offsets,
                        horizon_ms=traffic.horizon_ms)
    assert summary.total_read == traffic.manifest["records"]
    counts = traffic.manifest["counts"]
    expected_bad = Counter({"undecodable": counts["by_kind"]["undecodable"],
                            "unknown_fingerprint": counts["by_kind"]["unknown_fingerprint"],
                            **counts["by_reason"]["invalid"]})
    assert Counter({k: v for k, v in summary.quarantined.items() if k != "late"}) == +expected_bad


def _assert_nothing_valid_lost(traffic: Traffic, settings: Settings) -> None:
    """Every good record is accepted, and only records the generator made late are held as
    late (lateness itself depends on when records arrive, so it is not pinned down)."""
    events = accepted_events(settings)
    accepted = {(topic, r["_partition"], r["_offset"]) for topic, rows in events.items()
                for r in rows}
    held = read_dataset(settings.offline_store.uri, "quarantine",
                        columns=["topic", "partition", "offset", "reason"])
    late = {(t, p, o) for t, p, o, reason in zip(
        *(held.column(c).to_pylist() for c in ("topic", "partition", "offset", "reason")),
        strict=True) if reason == "late"}
    kinds = {(r["topic"], r["partition"], r["offset"]): r["kind"]
             for r in traffic.manifest["records_of_interest"]}
    assert {pos for pos in late if kinds.get(pos) != "late"} == set()
    good = {(t, p, o) for (t, p), end in traffic.end_offsets.items() for o in range(end)
            if kinds.get((t, p, o)) in (None, "out_of_order")}
    assert good - accepted == set()


def _assert_exact(traffic: Traffic, settings: Settings) -> None:
    """Every record decided once, and every view equal to the SQL reference."""
    summary = summarize(PIPELINE, settings.offline_store.uri, traffic.end_offsets,
                        horizon_ms=traffic.horizon_ms)
    assert summary.balanced, summary.as_dict()  # none both accepted and quarantined
    ref = Reference(accepted_events(settings))
    for view in PIPELINE.views:
        assert_changelog_is_exact(settings, view.name, traffic.horizon_ms, ref)


@dataclass(frozen=True)
class Run:
    """One interrupted run.

    Attributes:
        settings: its settings (offline store, checkpoints).
        restored: what Flink reports it restored from (``/jobs/<id>/checkpoints``).
        read: records its Kafka sources emitted, per job it took.
        savepoint: the savepoint it was resumed from.
        progress_checkpoint: the first checkpoint completed after it wrote events.
    """

    settings: Settings
    restored: dict[str, Any]
    read: tuple[int, ...]
    savepoint: str = ""
    progress_checkpoint: int = 0


@pytest.fixture(scope="module")
def resumed(cluster_dir: Path, traffic: Traffic,
            tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A bounded run stopped with a savepoint (and cancelled) mid-run, resumed, finished."""
    root = tmp_path_factory.mktemp("resumed")
    rest = FlinkRest(ClusterManager(cluster_dir).rest_url() or "")
    settings, config = _run_settings(traffic, root)

    job1 = _submit(cluster_dir, config)
    _await_progress(rest, job1, root / "offline", "the savepoint")
    try:
        location = invoke(jobs, ["savepoint", job1, "--dir", (root / "savepoints").as_uri(),
                                 "--cancel", "--state-dir", str(cluster_dir)]).strip()
    except StackError:
        if rest.job_state(job1) == "FINISHED":
            pytest.fail(_finished_too_early(job1, "the savepoint completed"))
        raise
    assert rest.wait_for_state(job1, {"CANCELED"}) == "CANCELED"
    read_before = _source_records(rest, job1)

    job2 = _submit(cluster_dir, config, savepoint=location)
    _finish(rest, job2, traffic, settings, cluster_dir, root / "savepoints")
    restored = rest.checkpoints(job2)["latest"]["restored"]
    return Run(settings, restored, (read_before, _source_records(rest, job2)),
               savepoint=location)


@pytest.fixture(scope="module")
def failed_over(cluster_dir: Path, traffic: Traffic,
                tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A bounded run whose TaskManager was killed (-9) mid-run, restarted by Flink, finished."""
    root = tmp_path_factory.mktemp("failed-over")
    manager = ClusterManager(cluster_dir)
    rest = FlinkRest(manager.rest_url() or "")
    settings, config = _run_settings(traffic, root)

    job = _submit(cluster_dir, config)
    checkpoint = _await_progress(rest, job, root / "offline", "the TaskManager was killed")
    running_on = {tm["taskmanager-id"]
                  for vertex in rest.job(job)["vertices"]
                  for tm in rest.request("GET", f"/jobs/{job}/vertices/{vertex['id']}"
                                                "/taskmanagers")["taskmanagers"]}
    assert len(running_on) == 1, running_on  # parallelism 1: one slot on one TaskManager
    victim = next(p for p in manager.status().taskmanagers if p.resource_id in running_on)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> bool:
        if int(rest.job(job)["timestamps"].get("RESTARTING", 0)) > 0:
            return True
        if rest.job_state(job) == "FINISHED":  # it ended before the kill took effect
            pytest.fail(_finished_too_early(job, "the TaskManager was killed"))
        return False

    wait_for(f"job {job} to restart", restarted, timeout=JOB_TIMEOUT_S, poll=0.2)
    assert rest.wait_for_state(job, {"FINISHED"}, timeout=JOB_TIMEOUT_S) == "FINISHED"
    # The next module that asks for the cluster gets the killed TaskManager replaced.
    return Run(settings, rest.checkpoints(job)["latest"]["restored"],
               (_source_records(rest, job),), progress_checkpoint=checkpoint)


def test_resumed_run_continues_from_the_savepoint(resumed: Run, traffic: Traffic) -> None:
    assert resumed.restored["is_savepoint"] is True
    assert resumed.restored["external_path"] == resumed.savepoint
    # The resumed run went on from the savepoint's offsets: it read the rest of the input,
    # not all of it, and the two runs together read all of it.
    before, after = resumed.read
    total = traffic.manifest["records"]
    assert after < total and before + after >= total, (before, after, total)
    _assert_bad_records_quarantined(traffic, resumed.settings)
    _assert_nothing_valid_lost(traffic, resumed.settings)


def test_resumed_run_gives_exactly_the_reference(resumed: Run, traffic: Traffic) -> None:
    _assert_exact(traffic, resumed.settings)


def test_failover_restarts_from_a_checkpoint_taken_after_progress(
    failed_over: Run, traffic: Traffic
) -> None:
    restored = failed_over.restored
    assert restored is not None and restored["is_savepoint"] is False
    assert int(restored["id"]) >= failed_over.progress_checkpoint
    _assert_bad_records_quarantined(traffic, failed_over.settings)
    _assert_nothing_valid_lost(traffic, failed_over.settings)


def test_failed_over_run_gives_exactly_the_reference(failed_over: Run, traffic: Traffic) -> None:
    _assert_exact(traffic, failed_over.settings)
