"""End to end: generated traffic -> Kafka -> PyFlink job -> offline store, checked exactly.

* every changelog row of every view equals plain SQL over the accepted events
  (tests/reference.py), and so does the as-of value at sampled times;
* the batch runtime (backfill) over the job's accepted-event log produces the
  identical changelog (parity of the two runtimes);
* every record read is accounted for, and the quarantine matches the
  generator's manifest record by record.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import backfill
from pipelines.runtime.streaming import run_pipeline
from pipelines.runtime.summary import RunSummary
from pipelines.sinks.parquet import read_dataset
from tests.integration.exact import (
    accepted_events,
    assert_changelog_is_exact,
    assert_online_is_exact,
    fresh_stack,
    generate,
    read_changelog_rows,
    write_config,
)
from tests.reference import Reference

pytestmark = pytest.mark.integration

EVENTS = 12_000
VIEWS = [v.name for v in PIPELINE.views]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh stack, generated traffic with every fault kind, one bounded run."""
    root = tmp_path_factory.mktemp("stream")
    with fresh_stack(root, checkpoint_interval_ms=2000) as settings:
        manifest = generate(write_config(settings, root / "livefeat.yaml"),
                            root / "manifest.json", EVENTS, 42)
        summary = run_pipeline(settings, "marketplace", bounded=True)
        assert summary is not None
        yield {"settings": settings, "summary": summary, "manifest": manifest, "root": root}


def test_every_record_is_accounted_for(job: dict[str, Any]) -> None:
    summary: RunSummary = job["summary"]
    manifest = job["manifest"]
    assert (
        summary.total_read
        == manifest["records"]
        == sum(sum(kinds.values()) for kinds in manifest["counts"]["by_topic"].values())
    )
    assert summary.balanced
    by_reason = manifest["counts"]["by_reason"]
    expected_bad = Counter(
        {
            "undecodable": manifest["counts"]["by_kind"]["undecodable"],
            "unknown_fingerprint": manifest["counts"]["by_kind"]["unknown_fingerprint"],
            **by_reason["invalid"],
        }
    )
    got_bad = Counter({k: v for k, v in summary.quarantined.items() if k != "late"})
    assert got_bad == +expected_bad


def test_quarantine_holds_exactly_the_bad_records_and_only_late_ones_as_late(
    job: dict[str, Any],
) -> None:
    settings: Settings = job["settings"]
    table = read_dataset(
        settings.offline_store.uri, "quarantine", columns=["topic", "partition", "offset", "reason"]
    )
    held = {
        (t, p, o): r
        for t, p, o, r in zip(
            *(table.column(c).to_pylist() for c in ("topic", "partition", "offset", "reason")),
            strict=True,
        )
    }
    kinds = {
        (r["topic"], r["partition"], r["offset"]): r["kind"]
        for r in job["manifest"]["records_of_interest"]
    }
    bad = {
        pos
        for pos, kind in kinds.items()
        if kind in ("undecodable", "unknown_fingerprint", "invalid")
    }
    assert bad <= set(held)
    # nothing valid is lost: a record is quarantined only if it is bad, or late by the
    # generator's own account (an in-bound out-of-order record is never judged late)
    for pos, reason in held.items():
        if reason == "late":
            assert kinds.get(pos) == "late", pos
        else:
            assert pos in bad, (pos, reason)
    assert sum(1 for r in held.values() if r == "late") > 0


@pytest.mark.parametrize("view", VIEWS)
def test_changelog_equals_sql_reference(job: dict[str, Any], view: str) -> None:
    settings: Settings = job["settings"]
    ref = Reference(accepted_events(settings))
    assert_changelog_is_exact(settings, view, job["summary"].horizon_ms, ref)


@pytest.mark.parametrize("view", VIEWS)
def test_as_of_values_at_sampled_times(job: dict[str, Any], view: str) -> None:
    settings: Settings = job["settings"]
    horizon = job["summary"].horizon_ms
    ref = Reference(accepted_events(settings))
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    rows = read_changelog_rows(settings.offline_store.uri, PIPELINE.view(view))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r[key], []).append(r)
    rnd = random.Random(5)
    keys = sorted(by_key)
    start = min(r["event_timestamp"] for r in rows)
    points = [(rnd.choice(keys), rnd.randrange(start - 1000, horizon + 1)) for _ in range(300)]
    empty = Reference({}).as_of(view, [("nobody", start)])[0]
    want = {(r[key], r["event_timestamp"]): r for r in ref.as_of(view, points)}
    for k, t in points:
        history = [r for r in by_key[k] if r["event_timestamp"] <= t]
        got = history[-1] if history else empty
        assert [got[n] for n in names] == [want[(k, t)][n] for n in names], (k, t)


def test_batch_runtime_reproduces_the_streaming_changelog(
    job: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = job["settings"]
    backfill(
        PIPELINE,
        settings.offline_store.uri,
        None,
        job["summary"].horizon_ms,
        output_uri=str(tmp_path),
    )
    for view in PIPELINE.views:
        streamed = read_changelog_rows(settings.offline_store.uri, view)
        batched = read_changelog_rows(str(tmp_path), view)
        strip = [view.entity.join_key, "event_timestamp", *view.feature_names]
        assert [[r[c] for c in strip] for r in streamed] == [
            [r[c] for c in strip] for r in batched
        ], view.name


def test_every_accepted_event_was_written_once_per_position(job: dict[str, Any]) -> None:
    settings: Settings = job["settings"]
    for topic, n in job["summary"].accepted.items():
        table = read_dataset(
            settings.offline_store.uri, f"events/{topic}", columns=["_partition", "_offset"]
        )
        positions = set(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
        assert len(positions) == n
        assert pc.max(table.column(1)).as_py() is not None


@pytest.mark.parametrize("view", VIEWS)
def test_online_store_holds_the_as_of_value_at_the_horizon(job: dict[str, Any], view: str) -> None:
    settings: Settings = job["settings"]
    definition = PIPELINE.view(view)
    ref = Reference(accepted_events(settings))
    keys = sorted(
        {
            r[definition.entity.join_key]
            for r in read_changelog_rows(settings.offline_store.uri, definition)
        }
    )
    keys = random.Random(3).sample(keys, min(150, len(keys)))
    assert_online_is_exact(settings, view, job["summary"].horizon_ms, ref, keys)
