"""The pipeline's metrics on a real local Flink cluster add up exactly to the run's summary.

Generated traffic (out-of-order, late and bad records included) goes to a private
embedded stack; ``livefeat submit marketplace --bounded`` sends the reference pipeline,
at parallelism 2, to the session's cluster (``tests/integration/flink_cluster.py``).
While it runs, the test scrapes every TaskManager's Prometheus endpoint, keeping the
last value of each ``flink_taskmanager_job_task_operator_livefeat_*`` series of the job
(one series per operator subtask and label value). Summed over subtasks and
TaskManagers, those last values must equal what the run's outputs say, computed
independently from the stores (:func:`pipelines.runtime.summary.summarize`): records
read per topic, accepted, quarantined per reason, late, changelog rows per view, gate
verdicts, and the rows the offline and online stores hold.

When the final values are visible. :class:`~pipelines.operators.metrics.PipelineMetrics`
pushes its last increments in the function's ``close()``, which PyFlink calls at the end
of the operator's input (``endInput``). Each task then tells the JobManager it reached
the end of its data; once every task has, the JobManager triggers a checkpoint, and the
tasks finish (and Flink unregisters their metrics) only when it completes, about a
second later here. So a scrape that starts after that checkpoint's trigger time, and
still finds a series, reads its final value. The run has no periodic checkpoint (the
interval is a day), so that checkpoint is the job's only one and no task can finish
earlier. Once every record is read the test scrapes ten times a second, and it checks that
every series was last read after the trigger time: a value read before it might miss
the last push, and the run would prove nothing.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli.cluster_cmd import submit
from pipelines.cluster.manager import ClusterManager
from pipelines.cluster.rest import TERMINAL_STATES, FlinkRest
from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.operators.routing import RoutingPlan
from pipelines.runtime.horizon import max_timestamp
from pipelines.runtime.summary import RunSummary, gate_results_dir, summarize
from pipelines.sinks.parquet import read_dataset
from pipelines.sources.offsets import kafka_python_config, true_end_offsets
from tests.integration.exact import fresh_stack, generate, read_changelog_rows, write_config
from tests.integration.flink_cluster import Sample, invoke, prometheus_urls, scrape

pytestmark = pytest.mark.integration

EVENTS = 3_000
PARALLELISM = 2
NO_PERIODIC_CHECKPOINT_MS = 86_400_000
"""A day: the only checkpoint of the run is the one Flink takes at the end of the input."""
JOB_TIMEOUT_S = 300.0
README = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "README.md"

PREFIX = "flink_taskmanager_job_task_operator_livefeat_"
EVENTS_IN = PREFIX + "topic_events_in"
ACCEPTED = PREFIX + "accepted"
QUARANTINED = PREFIX + "reason_quarantined"
LATE = PREFIX + "late"
CHANGELOG_ROWS = PREFIX + "view_changelog_rows"
OFFLINE_WRITES = PREFIX + "offline_writes"
ONLINE_WRITES = PREFIX + "online_writes"
GATE_BATCHES = PREFIX + "outcome_gate_batches"
GATE_ROWS = PREFIX + "outcome_gate_rows"
GATE_NOT_JUDGED = PREFIX + "gate_not_judged"
WATERMARK_LAG = PREFIX + "watermark_lag_ms"
FRESHNESS = PREFIX + "freshness_ms"
READ = (EVENTS_IN, ACCEPTED, QUARANTINED, LATE, CHANGELOG_ROWS, OFFLINE_WRITES, ONLINE_WRITES,
        GATE_BATCHES, GATE_ROWS, GATE_NOT_JUDGED, WATERMARK_LAG, FRESHNESS)
"""Every Prometheus name this test reads: each must be the one deploy/grafana/README.md gives."""

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Watched:
    """What the scrapes of one job saw.

    Attributes:
        last: per series (name, labels), when the last scrape that found it started
            (epoch seconds) and the value it read.
        progress: (scrape start, events_in summed) of the scrapes made while the job
            was RUNNING that found records read.
        scrapes: rounds of scrapes (every TaskManager once per round).
    """

    last: dict[SeriesKey, tuple[float, float]]
    progress: list[tuple[float, float]]
    scrapes: int


@dataclass(frozen=True)
class Run:
    """One bounded run on the cluster and what its outputs say."""

    settings: Settings
    job: str
    manifest: dict[str, Any]
    summary: RunSummary
    watched: Watched
    final_trigger_ms: int
    checkpoints: dict[str, Any]


def label(text: str) -> str:
    """A label value as Flink's Prometheus reporter writes it (``livestream.bid_placed`` ->
    ``livestream_bid_placed``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _scrape_job(urls: list[str], job: str) -> list[Sample]:
    """The livefeat samples of ``job`` on every TaskManager (one that does not answer in
    time contributes nothing to this round)."""
    found: list[Sample] = []
    for url in urls:
        with contextlib.suppress(urllib.error.URLError, TimeoutError, ConnectionError):
            found += [s for s in scrape(url, PREFIX, timeout=5.0) if s[1].get("job_id") == job]
    return found


def _watch(rest: FlinkRest, job: str, urls: list[str], total_read: int) -> Watched:
    """Scrape until the job ends: every half second while records remain to be read, then
    every tenth of a second (the end of the run, when the last pushes come, is short)."""
    watched = Watched({}, [], 0)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        started = time.time()
        state = rest.job_state(job)
        samples = _scrape_job(urls, job)
        watched.scrapes += 1
        for name, labels, value in samples:
            watched.last[(name, tuple(sorted(labels.items())))] = (started, value)
        events_in = sum(value for name, _, value in samples if name == EVENTS_IN)
        if state == "RUNNING" and events_in > 0:
            watched.progress.append((started, events_in))
        if state in TERMINAL_STATES:
            assert state == "FINISHED", f"job {job} ended {state}; see {rest.url}/jobs/{job}"
            return watched
        if time.monotonic() >= deadline:
            pytest.fail(f"job {job} still {state} after {JOB_TIMEOUT_S:.0f} s")
        time.sleep(0.5 if events_in < total_read else 0.1)


@pytest.fixture(scope="module")
def run(cluster_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A bounded run at parallelism 2, scraped throughout, with its summary."""
    root = tmp_path_factory.mktemp("cluster-metrics")
    with fresh_stack(root, parallelism=PARALLELISM,
                     checkpoint_interval_ms=NO_PERIODIC_CHECKPOINT_MS) as settings:
        config = write_config(settings, root / "livefeat.yaml")
        manifest = generate(config, root / "manifest.json", EVENTS, seed=23)
        ends = true_end_offsets(settings.kafka, RoutingPlan(PIPELINE).topics)
        horizon = max_timestamp(ends, **kafka_python_config(settings.kafka))
        assert horizon is not None
        rest = FlinkRest(ClusterManager(cluster_dir).rest_url() or "")
        urls = prometheus_urls(cluster_dir)
        out = invoke(submit, ["marketplace", "--config", str(config), "--bounded",
                              "--state-dir", str(cluster_dir)])
        job = out.strip()
        assert len(job) == 32, out
        watched = _watch(rest, job, urls, sum(ends.values()))
        assert int(rest.job(job)["timestamps"].get("RESTARTING", 0)) == 0, (
            f"job {job} restarted: its counters started again from 0")
        checkpoints = rest.checkpoints(job)
        final = checkpoints["latest"]["completed"]
        assert final is not None, checkpoints
        summary = summarize(PIPELINE, settings.offline_store.uri, ends, horizon_ms=horizon,
                            gate_results=gate_results_dir(settings))
        yield Run(settings, job, manifest, summary, watched, int(final["trigger_timestamp"]),
                  checkpoints)


def _total(run: Run, name: str) -> int:
    """Last values of ``name`` summed over every series (subtasks, TaskManagers, labels)."""
    return int(sum(v for (n, _), (_, v) in run.watched.last.items() if n == name))


def _by_label(run: Run, name: str, key: str) -> dict[str, int]:
    """Last values of ``name`` summed per value of label ``key`` (zeros left out)."""
    sums: Counter[str] = Counter()
    for (n, labels), (_, value) in run.watched.last.items():
        if n == name:
            sums[dict(labels)[key]] += int(value)
    return dict(+sums)


def test_every_metric_read_is_documented_for_the_dashboard() -> None:
    documented = set(re.findall(r"`(flink_[A-Za-z0-9_]+)`", README.read_text()))
    assert set(READ) - documented == set()


def test_the_final_values_were_scraped_after_every_task_ended_its_input(run: Run) -> None:
    # The end-of-input checkpoint is the run's only one: no task finished before it.
    assert run.checkpoints["counts"]["completed"] == 1, run.checkpoints["counts"]
    seen_before = {key: at for key, (at, _) in run.watched.last.items()
                   if at * 1000 < run.final_trigger_ms}
    assert seen_before == {}, (
        f"{len(seen_before)} series were last scraped before every task had ended its input "
        f"(checkpoint triggered at {run.final_trigger_ms} ms); their values may miss the "
        f"final push: {sorted(seen_before.items())[:3]}")
    found = {name for name, _ in run.watched.last}
    assert {EVENTS_IN, ACCEPTED, QUARANTINED, LATE, CHANGELOG_ROWS, OFFLINE_WRITES,
            ONLINE_WRITES, GATE_BATCHES, GATE_ROWS} <= found, sorted(found)


def test_a_scrape_during_the_run_shows_progress(run: Run) -> None:
    during = [(at, n) for at, n in run.watched.progress if at * 1000 < run.final_trigger_ms]
    assert during, "no scrape found records read while the job was RUNNING"
    # Both gauges are exported (pushed distributions in thread mode), with positive values.
    for gauge in (WATERMARK_LAG, FRESHNESS):
        values = [v for (n, _), (_, v) in run.watched.last.items() if n == gauge]
        assert values and max(values) > 0, gauge


def test_records_read_per_topic_equal_the_metric(run: Run) -> None:
    summary = run.summary
    assert summary.total_read == run.manifest["records"] == EVENTS
    assert summary.balanced, summary.as_dict()
    assert _by_label(run, EVENTS_IN, "topic") == {
        label(topic): n for topic, n in summary.read.items() if n}


def test_accepted_quarantined_and_late_equal_the_metrics(run: Run) -> None:
    summary = run.summary
    # The traffic exercises every path: late records and several kinds of bad ones.
    assert summary.quarantined.get("late", 0) > 0 and len(summary.quarantined) >= 3
    assert _total(run, ACCEPTED) == sum(summary.accepted.values())
    assert _by_label(run, QUARANTINED, "reason") == {
        label(reason): n for reason, n in summary.quarantined.items()}
    assert _total(run, LATE) == summary.quarantined["late"]


def test_changelog_rows_and_gate_verdicts_equal_the_metrics(run: Run) -> None:
    summary = run.summary
    assert summary.gate, "the quality gate stored no verdict for this run"
    assert summary.gate_balanced, summary.gate_unaccounted()
    # Rows the views step produced: those stored plus those the gate holds.
    produced = {view: rows + (summary.gate[view].held if view in summary.gate else 0)
                for view, rows in summary.changelog_rows.items()}
    assert _by_label(run, CHANGELOG_ROWS, "view") == {
        label(view): n for view, n in produced.items() if n}
    for name, field in ((GATE_BATCHES, "batches"), (GATE_ROWS, "rows")):
        want: Counter[str] = Counter()
        for outcome in summary.gate.values():
            want.update(getattr(outcome, field))
        assert _by_label(run, name, "outcome") == dict(+want), name
    assert _total(run, GATE_NOT_JUDGED) == sum(g.not_judged for g in summary.gate.values())


def test_offline_writes_equal_the_rows_the_offline_store_holds(run: Run) -> None:
    summary = run.summary
    uri = run.settings.offline_store.uri
    stored = sum(read_dataset(uri, f"events/{topic}", columns=["_offset"]).num_rows
                 for topic in summary.read)
    stored += read_dataset(uri, "quarantine", columns=["offset"]).num_rows
    stored += sum(read_dataset(uri, f"features/{view}", columns=["event_timestamp"]).num_rows
                  for view, rows in summary.changelog_rows.items() if rows)
    # Every row written once (no replay): the stored rows are the distinct ones.
    distinct = (sum(summary.accepted.values()) + sum(summary.quarantined.values())
                + sum(summary.changelog_rows.values()))
    assert _total(run, OFFLINE_WRITES) == stored == distinct


def test_online_writes_equal_the_changelog_and_the_store_holds_its_last_rows(run: Run) -> None:
    from pipelines.feast_repo import feature_store, read_online

    summary = run.summary
    assert _total(run, ONLINE_WRITES) == sum(summary.changelog_rows.values())
    store = feature_store(run.settings)
    for view in PIPELINE.views:
        key = view.entity.join_key
        latest: dict[str, int] = {}
        for row in read_changelog_rows(run.settings.offline_store.uri, view):
            latest[row[key]] = row["event_timestamp"]  # rows come sorted by key, then time
        assert latest, view.name
        held = {v.key: v.event_time_ms for v in read_online(store, view, sorted(latest))}
        assert held == latest, view.name
