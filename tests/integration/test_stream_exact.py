"""End to end: generated traffic -> Kafka -> PyFlink job -> offline store, checked exactly.

* every changelog row of every view equals plain SQL over the accepted events
  (tests/reference.py), and so does the as-of value at sampled times;
* the batch runtime (backfill) over the job's accepted-event log produces the
  identical changelog (parity of the two runtimes);
* every record read is accounted for, and the quarantine matches the
  generator's manifest record by record.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import backfill, load_events
from pipelines.runtime.streaming import run_pipeline
from pipelines.runtime.summary import RunSummary
from pipelines.sinks.parquet import read_dataset
from pipelines.stack import StackManager, override_stack
from tests.conftest import free_port
from tests.reference import Reference

pytestmark = pytest.mark.integration

EVENTS = 12_000
VIEWS = [v.name for v in PIPELINE.views]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh stack, generated traffic with every fault kind, one bounded run."""
    root = tmp_path_factory.mktemp("stream")
    base = Settings()
    base = base.model_copy(
        update={
            "flink": base.flink.model_copy(
                update={"checkpoint_dir": root / "ckpt", "checkpoint_interval_ms": 2000}
            ),
            "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
            # a private online store: the default one in the working directory may hold
            # newer rows for the same entity ids from another run
            "online_store": base.online_store.model_copy(
                update={"sqlite_path": root / "online.db"}
            ),
        }
    )
    base = override_stack(
        base, broker_port=free_port(), s3_port=free_port(), state_dir=root / "state"
    )
    manager = StackManager(base)
    try:
        settings = manager.up().apply(base)
        config = root / "livefeat.yaml"
        config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
        manifest_path = root / "manifest.json"
        result = CliRunner().invoke(
            cli,
            [
                "--config",
                str(config),
                "generate",
                "--events",
                str(EVENTS),
                "--seed",
                "42",
                "--out-of-order",
                "0.03",
                "--late",
                "0.01",
                "--bad-undecodable",
                "0.003",
                "--bad-unknown-fingerprint",
                "0.003",
                "--bad-invalid",
                "0.006",
                "--quiet",
                "--manifest",
                str(manifest_path),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        summary = run_pipeline(settings, "marketplace", bounded=True)
        assert summary is not None
        yield {
            "settings": settings,
            "summary": summary,
            "manifest": json.loads(manifest_path.read_text()),
            "root": root,
        }
    finally:
        manager.down()


def read_changelog_rows(uri: str, view: Any) -> list[dict[str, Any]]:
    """A view's changelog as dicts (times in epoch ms), deduplicated on (key, event_timestamp)
    keeping the earliest created_timestamp, sorted by key and time."""
    table = read_dataset(uri, f"features/{view.name}")
    for name in table.schema.names:
        if str(table.schema.field(name).type).startswith("timestamp"):
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(table.column(name), "int64")
            )
    key = view.entity.join_key
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in table.to_pylist():
        k = (row[key], row["event_timestamp"])
        if k not in best or row["created_timestamp"] < best[k]["created_timestamp"]:
            best[k] = row
    return [best[k] for k in sorted(best)]


def accepted_events(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return load_events(settings.offline_store.uri, PIPELINE, None, None)


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
    horizon = job["summary"].horizon_ms
    ref = Reference(accepted_events(settings))
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    got = read_changelog_rows(settings.offline_store.uri, PIPELINE.view(view))
    want = ref.changelog(view, horizon)
    assert len(want) > 50  # the data must exercise the view
    assert [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in got] == [
        (r[key], r["event_timestamp"], *(r[n] for n in names)) for r in want
    ]


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
    from pipelines.feast_repo import feature_store, read_online

    settings: Settings = job["settings"]
    horizon = job["summary"].horizon_ms
    definition = PIPELINE.view(view)
    ref = Reference(accepted_events(settings))
    keys = sorted(
        {
            r[definition.entity.join_key]
            for r in read_changelog_rows(settings.offline_store.uri, definition)
        }
    )
    keys = random.Random(3).sample(keys, min(150, len(keys)))
    want = {r[definition.entity.join_key]: r for r in ref.as_of(view, [(k, horizon) for k in keys])}
    got = read_online(feature_store(settings), definition, keys)
    for values in got:
        expected = want[values.key]
        for name in ref.feature_names(view):
            value = values.values[name] if values.found else None
            if name == "user_account_created_at" and value is not None:
                # Feast stores timestamps in whole seconds
                assert int(value.timestamp()) == expected[name] // 1000, (values.key, name)
            elif values.found or expected[name] not in (0, None):
                assert value == expected[name], (values.key, name, value, expected[name])
