"""The quality gate in the stream: drift in generated traffic, verdicts per micro-batch, actions.

Two bounded runs of the reference pipeline through Kafka and Flink, with the gate on:

1. **reference run**: generated traffic without drift, judged against the profiles
   shipped in ``quality/profiles`` (built from 24 h-old traffic, so a fresh run's
   batches differ and draw ``warn`` verdicts). ``warn`` rows are materialized: the
   offline changelog equals the SQL reference (tests/reference.py) row for row.
   ``livefeat quality profile`` then builds the test's own profiles from this run.
2. **drift run**: the same traffic with order amounts multiplied by ``FACTOR`` from
   the start of a user batch of the reference run to the end, and by 1.03 before
   that (noise within the 5 % threshold). ``user_features`` is set to ``block``.

Then (3) the held batches are released with ``livefeat quality release`` (one by id,
one interrupted after writing and finished by ``--all``, the rest by ``--all``), on a copy
of the drift run's stores: the offline changelog must equal the SQL reference value for
value, the run's accounting balance, and the online store hold the reference's as-of
values at the horizon, as a run without the gate leaves it.

The expected verdicts are computed here, not by the gate: which views read the
drifted field (from the definitions), which batches' event-time ranges overlap the
drift period (from the stored batch ranges and the generator's drift window). Held
rows must be absent from the offline store and present in the held batch files, and
every changelog row the SQL reference expects is either materialized or held.

Why ``FACTOR`` is 5 and not 1.2: at this scale (9,000 events, one-minute batches of a
few hundred rows) the per-batch distance of ``user_order_amount_avg_24h`` from its own
reference period is 0.1-0.3 with a natural margin of 0.4-0.9; order amounts x1.2 move
it by about 0.05 (measured: 0.12-0.22 against a limit of 0.42), which no honest margin
can tell from noise. x2 is caught from the second drifted minute on, x3 and more from
the first (see docs/quality.md). The unit tests hold the gate to +20 % on steadier data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml
from click.testing import CliRunner

from pipelines import topics
from pipelines.cli.main import cli
from pipelines.config import Settings
from pipelines.features.registry import field_usage
from pipelines.jobs.marketplace import PIPELINE
from pipelines.operators.routing import RoutingPlan
from pipelines.runtime.backfill import load_events
from pipelines.runtime.streaming import run_pipeline
from pipelines.runtime.summary import RunSummary, run_key, summarize
from pipelines.sinks.parquet import read_dataset
from pipelines.sinks.release import ReleaseWriter
from pipelines.sources.offsets import true_end_offsets
from pipelines.stack import StackManager, override_stack
from quality.config import ViewPolicy
from quality.results import ResultStore
from quality.suites import QUALITY_DIR
from tests.conftest import free_port
from tests.integration.exact import assert_changelog_is_exact, assert_online_is_exact
from tests.reference import Reference

pytestmark = pytest.mark.integration

SEED = 1
EVENTS = 9_000
FACTOR = 5.0
NOISE = 1.03
DRIFT_BATCH = 3  # the drift starts where the reference run's 4th user_features batch starts
BLOCKED = "user_features"
DRIFTED = f"{topics.ORDER_PLACED}.amount_cents"
BOUNDS = {"batch_max_rows": 50_000, "batch_max_ms": 60_000, "min_rows": 200}
VIEWS = [v.name for v in PIPELINE.views]
ORDERS = topics.ORDER_PLACED
# the shipped events suite judges hour-long batches of orders; this traffic lasts minutes
ORDER_POLICY = ViewPolicy(batch_max_ms=60_000, min_rows=5)


def _views_reading(subject: str, field: str) -> set[str]:
    """Views with a feature that reads ``field`` of ``subject`` (from the definitions)."""
    features = set(field_usage(PIPELINE).get(subject, {}).get(field, []))
    return {v.name for v in PIPELINE.views if any(f.name in features for f in v.features)}


class Run:
    """One bounded run on a fresh stack, with the gate's results read back."""

    def __init__(self, root: Path, quality_dir: Path, views: dict[str, ViewPolicy],
                 online: bool = False) -> None:
        self.root = root
        base = Settings()
        base = base.model_copy(
            update={
                "flink": base.flink.model_copy(update={"checkpoint_dir": root / "ckpt"}),
                "offline_store": base.offline_store.model_copy(
                    update={"uri": str(root / "offline")}
                ),
                "online_store": base.online_store.model_copy(
                    update={"enabled": online, "sqlite_path": root / "online" / "online.db"}
                ),
                "quality": base.quality.model_copy(
                    update={
                        "enabled": True,
                        "dir": quality_dir,
                        "results_dir": root / "quality-results",
                        "views": views,
                        **BOUNDS,
                    }
                ),
            }
        )
        self.base = override_stack(
            base, broker_port=free_port(), s3_port=free_port(), state_dir=root / "state"
        )
        self.settings = self.base
        self.config = root / "livefeat.yaml"
        self.manifest: dict[str, Any] = {}
        self.summary = RunSummary()
        self.results: list[dict[str, Any]] = []
        self.ends: dict[tuple[str, int], int] = {}

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(cli, ["--config", str(self.config), *args])
        assert result.exit_code == 0, result.output
        return result.output

    def execute(self, drifts: list[str]) -> None:
        """Start a stack, publish the traffic, run the pipeline, read the results."""
        manager = StackManager(self.base)
        try:
            self.settings = manager.up().apply(self.base)
            dumped = self.settings.model_dump(mode="json", exclude={"source_file"})
            self.config.write_text(yaml.safe_dump(dumped))
            manifest = self.root / "manifest.json"
            args = ["generate", "--events", str(EVENTS), "--seed", str(SEED), "--quiet",
                    "--manifest", str(manifest)]
            for drift in drifts:
                args += ["--drift", drift]
            self.cli(*args)
            self.manifest = json.loads(manifest.read_text())
            run = run_pipeline(self.settings, "marketplace", bounded=True)
            assert run is not None and run.balanced
            ends = self.ends = true_end_offsets(self.settings.kafka,
                                                RoutingPlan(PIPELINE).topics)
        finally:
            manager.down()
        results_dir = self.settings.quality.results_in(self.settings.stack.state_dir)
        self.summary = summarize(
            PIPELINE, self.settings.offline_store.uri, ends, horizon_ms=run.horizon_ms,
            gate_results=results_dir,
        )
        key = run_key(PIPELINE.name, ends)
        self.results = [
            r for r in ResultStore(results_dir).results("features") if r.get("run") == key
        ]
        self.events = sorted(
            (r for r in ResultStore(results_dir).results("events") if r.get("run") == key),
            key=lambda r: r["event_time_min"],
        )
        self.store = ResultStore(results_dir)

    def batches(self, view: str) -> list[dict[str, Any]]:
        """The stored verdicts of ``view``, in event-time order."""
        return sorted(
            (r for r in self.results if r["view"] == view), key=lambda r: r["event_time_min"]
        )

    def offline_keys(self, view: str) -> list[tuple[str, int]]:
        """(entity key, event time) of every materialized changelog row (replays deduped)."""
        key = PIPELINE.view(view).entity.join_key
        table = read_dataset(self.settings.offline_store.uri, f"features/{view}",
                             columns=[key, "event_timestamp"])
        times = pc.cast(table.column("event_timestamp"), "int64").to_pylist()
        return sorted(set(zip(table.column(key).to_pylist(), times, strict=True)))

    def reference_keys(self, view: str) -> list[tuple[str, int]]:
        """(entity key, event time) of every row the SQL reference expects."""
        key = PIPELINE.view(view).entity.join_key
        events = load_events(self.settings.offline_store.uri, PIPELINE, None, None)
        rows = Reference(events).changelog(view, self.summary.horizon_ms or 0)
        return sorted((r[key], int(r["event_timestamp"])) for r in rows)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gate")
    quality_dir = root / "quality"
    shutil.copytree(QUALITY_DIR / "suites", quality_dir / "suites")
    shutil.copytree(QUALITY_DIR / "profiles", quality_dir / "profiles")

    reference = Run(root / "reference", quality_dir, views={ORDERS: ORDER_POLICY})
    reference.execute(drifts=[])
    start, end = reference.manifest["start_time_ms"], reference.manifest["end_time_ms"]
    # input drift: the orders' profile from the run's accepted-event log (policy bounds)
    reference.cli("quality", "profile", ORDERS, "--from", str(start), "--to", str(end + 1),
                  "--quality-dir", str(quality_dir))
    for view in VIEWS:  # the test's own profiles, from the run without drift
        reference.cli(
            "quality", "profile", view, "--from", str(start), "--to", str(end + 1),
            "--quality-dir", str(quality_dir),
            "--batch-max-rows", str(BOUNDS["batch_max_rows"]),
            "--batch-max-ms", str(BOUNDS["batch_max_ms"]), "--min-rows", str(BOUNDS["min_rows"]),
        )
    drift_from = reference.batches(BLOCKED)[DRIFT_BATCH]["event_time_min"]
    drift = Run(root / "drift", quality_dir,
                views={BLOCKED: ViewPolicy(action="block"), ORDERS: ORDER_POLICY}, online=True)
    drift.execute(drifts=[f"{DRIFTED}={NOISE}@{start}..{drift_from}",
                          f"{DRIFTED}={FACTOR}@{drift_from}.."])
    yield {"reference": reference, "drift": drift, "drift_from": drift_from}


def _drifted(result: dict[str, Any]) -> bool:
    return any(c["drifted"] for c in result["columns"].values())


def test_the_generator_drifted_exactly_the_order_amounts_it_was_asked_to(
    runs: dict[str, Any],
) -> None:
    reference, drift = runs["reference"], runs["drift"]
    noise, raised = drift.manifest["drifted"]
    assert noise["factor"] == NOISE and raised["factor"] == FACTOR
    assert raised["start_ms"] == runs["drift_from"] and raised["end_ms"] is None
    assert noise["events"] > 20 and raised["events"] > 20
    # the simulation itself is unchanged: same records, same times, same kinds
    assert drift.manifest["records"] == reference.manifest["records"]
    assert drift.manifest["counts"] == reference.manifest["counts"]
    events = load_events(drift.settings.offline_store.uri, PIPELINE, None, None)
    orders = events[topics.ORDER_PLACED]
    before = {o["order_id"]: o["amount_cents"] for o in
              load_events(reference.settings.offline_store.uri, PIPELINE, None, None)[
                  topics.ORDER_PLACED]}
    for order in orders:
        factor = FACTOR if order["event_time"] >= runs["drift_from"] else NOISE
        assert order["amount_cents"] == round(before[order["order_id"]] * factor)


def test_warn_verdicts_materialize_every_row(runs: dict[str, Any]) -> None:
    reference: Run = runs["reference"]
    warned = [r for r in reference.results if r["action"] == "warn"]
    assert warned, "a fresh run judged against 24 h-old profiles should draw warnings"
    assert not [r for r in reference.results if r["action"] == "block"]
    assert not reference.store.held()
    for view in VIEWS:
        materialized = reference.offline_keys(view)
        assert materialized == reference.reference_keys(view), view
        produced = sum(r["rows"] for r in reference.batches(view))
        assert produced == len(materialized), view
    assert reference.summary.gate_balanced


def test_drift_verdicts_for_exactly_the_batches_overlapping_the_drift(
    runs: dict[str, Any],
) -> None:
    drift: Run = runs["drift"]
    drift_from = runs["drift_from"]
    affected_views = _views_reading(topics.ORDER_PLACED, "amount_cents")
    assert BLOCKED in affected_views and "stream_features" not in affected_views
    for view in VIEWS:
        batches = drift.batches(view)
        assert batches, view
        flagged = [r["batch_id"] for r in batches if _drifted(r)]
        if view not in affected_views:
            assert flagged == [], view
            continue
        # judged batches (enough rows for a drift measure) whose event-time range
        # reaches into the drift period, which lasts to the end of the traffic
        expected = [
            r["batch_id"] for r in batches
            if r["rows"] >= BOUNDS["min_rows"] and r["event_time_max"] >= drift_from
        ]
        assert flagged == expected, view
    user = drift.batches(BLOCKED)
    before = [r for r in user if r["event_time_max"] < drift_from]
    assert len(before) == DRIFT_BATCH and all(r["action"] == "pass" for r in before)
    assert all(r["judged"] for r in before)  # x1.03 noise was judged, and passed
    flagged = [r for r in user if _drifted(r)]
    assert len(flagged) >= 2
    for r in flagged:
        assert r["columns"]["user_order_amount_avg_24h"]["drifted"], r["batch_id"]
        assert r["action"] == "block"


def test_order_events_are_judged_in_the_stream_and_only_warn(runs: dict[str, Any]) -> None:
    """The events suite sees every accepted order once; the drift is flagged, never held."""
    drift: Run = runs["drift"]
    drift_from = runs["drift_from"]
    batches = drift.events
    assert batches and {r["view"] for r in batches} == {ORDERS}
    assert sum(r["rows"] for r in batches) == drift.summary.accepted[ORDERS]
    assert {r["action"] for r in batches} <= {"pass", "warn"}
    assert not [b for b in drift.store.held() if b.view == ORDERS]
    judged = [r for r in batches if r["judged"]]
    before = [r for r in judged if r["event_time_max"] < drift_from]  # x1.03
    after = [r for r in judged if r["event_time_min"] >= drift_from]  # x5
    assert before and after
    assert all(r["action"] == "pass" for r in before), [r["columns"] for r in before]
    for r in after:
        assert r["action"] == "warn" and r["columns"]["amount_cents"]["drifted"], r["batch_id"]


def test_blocked_rows_are_held_not_materialized_and_every_row_is_accounted_for(
    runs: dict[str, Any],
) -> None:
    drift: Run = runs["drift"]
    key = PIPELINE.view(BLOCKED).entity.join_key
    blocked = {r["batch_id"]: r for r in drift.results if r["action"] == "block"}
    held = {b.batch_id: b for b in drift.store.held(BLOCKED)}
    assert set(held) == set(blocked) and held
    held_keys: list[tuple[str, int]] = []
    for batch_id, batch in held.items():
        assert len(batch.rows) == blocked[batch_id]["rows"]
        times = [int(r["event_timestamp"]) for r in batch.rows]
        assert min(times) == blocked[batch_id]["event_time_min"]
        assert max(times) == blocked[batch_id]["event_time_max"]
        held_keys += [(r[key], int(r["event_timestamp"])) for r in batch.rows]
    for view in VIEWS:
        materialized = set(drift.offline_keys(view))
        expected = drift.reference_keys(view)
        kept = held_keys if view == BLOCKED else []
        assert not materialized & set(kept), view  # held rows never reached the store
        assert sorted(materialized | set(kept)) == expected, view
        assert len(materialized) + len(kept) == len(expected), view
    summary = drift.summary
    gate = summary.gate[BLOCKED]
    assert gate.held == gate.held_now == len(held_keys)
    assert gate.batches["block"] == len(held)
    for view, outcome in summary.gate.items():
        assert outcome.produced == summary.changelog_rows[view] + outcome.held, view
    assert summary.gate_balanced


@pytest.fixture(scope="module")
def released(runs: dict[str, Any]) -> dict[str, Any]:
    """The drift run's stores copied, then every held batch released with the CLI.

    One batch by id (the newest, so that older ones released later carry rows older than
    what the online store then holds), one released and written but not marked (a release
    interrupted), then ``--all``, which finishes that one and releases the rest.
    """
    drift: Run = runs["drift"]
    root = drift.root.parent / "released"
    for name in ("offline", "quality-results", "online"):
        shutil.copytree(drift.root / name, root / name)
    settings = drift.settings.model_copy(update={
        "offline_store": drift.settings.offline_store.model_copy(
            update={"uri": str(root / "offline")}),
        "online_store": drift.settings.online_store.model_copy(
            update={"sqlite_path": root / "online" / "online.db"}),
        "quality": drift.settings.quality.model_copy(
            update={"results_dir": root / "quality-results"}),
    })
    config = root / "livefeat.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
    store = ResultStore(root / "quality-results")
    held = sorted(store.held(BLOCKED), key=lambda b: min(r["event_timestamp"] for r in b.rows))
    assert len(held) >= 2

    def release(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--config", str(config), "quality", "release", *args])
        assert result.exit_code == 0, result.output
        return result.output

    outputs = [release(held[-1].batch_id, "--by", "tester")]
    with ReleaseWriter(settings) as writer:
        writer.write(store.release(held[0].batch_id, by="tester"), mark=False)
    outputs.append(release("--all", "--by", "tester"))
    return {"settings": settings, "store": store, "held": held, "outputs": outputs}


def test_released_batches_make_the_offline_changelog_exact_and_the_run_balance(
    runs: dict[str, Any], released: dict[str, Any],
) -> None:
    drift: Run = runs["drift"]
    settings: Settings = released["settings"]
    store: ResultStore = released["store"]
    held = released["held"]
    first, rest = released["outputs"]
    assert f"released {BLOCKED} batch {held[-1].batch_id}" in first
    assert f"finished the interrupted release of {BLOCKED} batch {held[0].batch_id}" in rest
    assert f"[{len(held) - 1}/{len(held) - 1}]" in rest
    assert store.held() == [] and store.pending_releases() == []
    assert {b.batch_id for b in store.materialized(BLOCKED)} == {b.batch_id for b in held}
    records = list(store.results("materialize"))
    assert sorted(r["batch_id"] for r in records) == sorted(b.batch_id for b in held)

    horizon = drift.summary.horizon_ms
    assert horizon is not None
    ref = Reference(load_events(settings.offline_store.uri, PIPELINE, None, None))
    for view in VIEWS:  # every view, value for value: stored + held -> stored
        assert_changelog_is_exact(settings, view, horizon, ref)

    summary = summarize(PIPELINE, settings.offline_store.uri, drift.ends, horizon_ms=horizon,
                        gate_results=store.root)
    gate = summary.gate[BLOCKED]
    held_rows = sum(len(b.rows) for b in held)
    assert gate.held == gate.released_written == held_rows and gate.held_now == 0
    assert summary.changelog_rows[BLOCKED] == gate.produced
    for view, outcome in summary.gate.items():
        assert outcome.produced == summary.changelog_rows[view], view
    assert summary.gate_balanced and summary.balanced


def test_released_batches_reach_the_online_store_without_replacing_newer_values(
    runs: dict[str, Any], released: dict[str, Any],
) -> None:
    drift: Run = runs["drift"]
    settings: Settings = released["settings"]
    key = PIPELINE.view(BLOCKED).entity.join_key
    affected = sorted({r[key] for b in released["held"] for r in b.rows})
    horizon = drift.summary.horizon_ms
    assert horizon is not None
    ref = Reference(load_events(settings.offline_store.uri, PIPELINE, None, None))
    with pytest.raises(AssertionError):  # before the release the gate's run left them stale
        assert_online_is_exact(drift.settings, BLOCKED, horizon, ref, affected)
    # after it: what a run without the gate writes, the as-of value at the horizon
    assert_online_is_exact(settings, BLOCKED, horizon, ref, affected)
    records = list(released["store"].results("materialize"))
    sent = sum(r["online_entities"] for r in records)
    applied = sum(r["online_applied"] for r in records)
    assert 0 < applied < sent  # older released rows did not replace newer released ones
