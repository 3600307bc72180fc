"""`livefeat quality release`: held batches reach the offline and online stores, once, exactly.

The scenario: the batch runtime computes the changelogs of random traffic (the SQL
reference checks those in test_features_exact.py). The rows are cut by event time in
three parts, as the gate's micro-batches would be: the first and last parts are written
by the stream's own sinks (offline Parquet, online SQLite), the middle part of
``user_features`` is held, as a ``block`` verdict holds it. Releasing it through the CLI
must make the offline changelog equal to the SQL reference again, and the online store
hold the reference's as-of values at the horizon: released rows that are older than what
the stream wrote later must not overwrite it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml
from click.testing import CliRunner, Result

from pipelines.cli.main import cli
from pipelines.config import OfflineStoreSettings, OnlineStoreSettings, QualitySettings, Settings
from pipelines.errors import DefinitionError, LivefeatError
from pipelines.feast_repo import apply
from pipelines.features.definitions import Pipeline
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.online import OnlineSink
from pipelines.sinks.parquet import ParquetSink, read_dataset
from pipelines.sinks.release import ReleaseWriter
from pipelines.sinks.tables import changelog_schema
from quality.results import ResultStore
from tests.reference import Reference
from tests.unit.test_features_exact import random_events
from tests.unit.test_online_sqlite import assert_online_is

VIEW = "user_features"
CREATED = 1_800_000_000_000
SEED = 7


def _settings(root: Path, online: bool = True) -> Settings:
    return Settings(
        offline_store=OfflineStoreSettings(uri=str(root / "offline")),
        online_store=OnlineStoreSettings(enabled=online, type="sqlite",
                                         sqlite_path=root / "online.db"),
        quality=QualitySettings(results_dir=root / "results"),
    )


def _config(settings: Settings, root: Path) -> Path:
    path = root / "livefeat.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
    return path


def _cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "quality", "release", *args])


def _offline_rows(settings: Settings, view: str) -> list[dict[str, Any]]:
    """Every stored changelog row of ``view`` (no deduplication), times as epoch ms."""
    table = read_dataset(settings.offline_store.uri, f"features/{view}")
    for name in ("event_timestamp", "created_timestamp", "user_account_created_at"):
        if name in table.schema.names:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pc.cast(table.column(name), "int64"))
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _deduped(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Readers' deduplication: one row per (key, event time), the earliest written."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        k = (row[key], row["event_timestamp"])
        if k not in best or row["created_timestamp"] < best[k]["created_timestamp"]:
            best[k] = row
    return [best[k] for k in sorted(best)]


class Scenario:
    """Changelogs of random traffic; everything but the held middle part already stored."""

    def __init__(self, root: Path, online: bool = True) -> None:
        self.root = root
        self.settings = _settings(root, online)
        self.config = _config(self.settings, root)
        self.events = random_events(SEED)
        horizon = max_event_time(PIPELINE, self.events)
        assert horizon is not None
        self.horizon = horizon
        self.changelogs = {v: c.rows for v, c in
                           run_pipeline(PIPELINE, self.events, horizon, created_ms=CREATED).items()}
        self.ref = Reference(self.events)
        self.store = ResultStore(root / "results")
        rows = sorted(self.changelogs[VIEW], key=lambda r: r["event_timestamp"])
        times = sorted({r["event_timestamp"] for r in rows})
        # by event time: stored, held (b1), stored, held (b2, to the end)
        a, b, c = (times[len(times) * i // 8] for i in (3, 5, 7))
        self.held = {
            f"{VIEW}-b1": [r for r in rows if a <= r["event_timestamp"] < b],
            f"{VIEW}-b2": [r for r in rows if c <= r["event_timestamp"]],
        }
        stored = [r for r in rows if not (a <= r["event_timestamp"] < b or
                                          c <= r["event_timestamp"])]
        for batch_id, batch in self.held.items():
            assert len(batch) >= 20
            self.store.hold(VIEW, batch_id, f"verdict-{batch_id}", batch)
        offline = ParquetSink(self.settings.offline_store.uri, "stream")
        online_sink = OnlineSink(self.settings) if online else None
        for view, changelog in self.changelogs.items():
            part = stored if view == VIEW else changelog
            schema = changelog_schema(PIPELINE.view(view))
            offline.write(f"features/{view}", schema, part)
            if online_sink is not None:
                online_sink.write(f"features/{view}", schema, part)
        if online_sink is not None:
            online_sink.close()

    def expected_online(self) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
        """The reference's as-of values at the horizon and the time each became true."""
        key = PIPELINE.view(VIEW).entity.join_key
        keys = sorted({r[key] for r in self.changelogs[VIEW]})
        values = {r[key]: r for r in self.ref.as_of(VIEW, [(k, self.horizon) for k in keys])}
        since = {k: max(r["event_timestamp"] for r in self.changelogs[VIEW] if r[key] == k)
                 for k in keys}
        return values, dict(since)

    def assert_offline_is_exact(self) -> list[dict[str, Any]]:
        """The deduplicated changelog of every view equals the SQL reference's."""
        for view in self.changelogs:
            key = PIPELINE.view(view).entity.join_key
            names = self.ref.feature_names(view)
            got = [(r[key], r["event_timestamp"], *(r[n] for n in names))
                   for r in _deduped(_offline_rows(self.settings, view), key)]
            want = [(r[key], r["event_timestamp"], *(r[n] for n in names))
                    for r in self.ref.changelog(view, self.horizon)]
            assert got == want, view
        return _offline_rows(self.settings, VIEW)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


def test_release_writes_offline_and_only_newer_values_online(scenario: Scenario) -> None:
    key = PIPELINE.view(VIEW).entity.join_key
    feast = apply(scenario.settings)
    values, since = scenario.expected_online()
    stale = [k for k in values if since[k] != max(
        (r["event_timestamp"] for r in scenario.changelogs[VIEW]
         if r[key] == k and r not in scenario.held[f"{VIEW}-b1"]
         and r not in scenario.held[f"{VIEW}-b2"]), default=None)]
    assert stale, "some entities' latest values must be in the held batches"
    with pytest.raises(AssertionError):  # the test can fail: before the release it does
        assert_online_is(feast, VIEW, values, since)
    with pytest.raises(AssertionError):
        scenario.assert_offline_is_exact()

    # the later batch first: the earlier one then carries rows older than the stored values
    started = int(time.time() * 1000)
    out = _cli(scenario.config, f"{VIEW}-b2", "--by", "analyst")
    assert out.exit_code == 0, out.output
    n = len(scenario.held[f"{VIEW}-b2"])
    assert f"released {VIEW} batch {VIEW}-b2: {n:,} rows" in out.output
    out = _cli(scenario.config, f"{VIEW}-b1")
    assert out.exit_code == 0, out.output

    assert_online_is(feast, VIEW, values, since)
    stored = scenario.assert_offline_is_exact()
    held_rows = {(r[key], r["event_timestamp"]) for b in scenario.held.values() for r in b}
    released = [r for r in stored if (r[key], r["event_timestamp"]) in held_rows]
    assert len(released) == len(held_rows)  # written once each
    assert all(r["created_timestamp"] >= started for r in released)  # when written
    assert all(r["created_timestamp"] == CREATED for r in stored if r not in released)
    records = {r["batch_id"]: r for r in scenario.store.results("materialize")}
    assert set(records) == set(scenario.held)
    early = records[f"{VIEW}-b1"]
    # entities of the earlier batch that the stream or the later batch (released first)
    # updated since were sent but not applied: older values never replace newer ones
    b1 = scenario.held[f"{VIEW}-b1"]
    last_b1 = {r[key]: r["event_timestamp"] for r in sorted(b1, key=lambda r: r["event_timestamp"])}
    superseded = {k for k, t in last_b1.items() if since[k] > t}
    assert superseded
    assert early["online_entities"] == len(last_b1)
    assert early["online_applied"] == len(last_b1) - len(superseded) < early["online_entities"]
    assert scenario.store.held() == [] and scenario.store.pending_releases() == []
    assert len(scenario.store.materialized(VIEW)) == 2


def test_an_interrupted_release_is_finished_by_running_it_again(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, online=False)
    batch_id = f"{VIEW}-b1"
    n = len(scenario.held[batch_id])
    # a release that crashed after writing the rows, before marking the batch
    with ReleaseWriter(scenario.settings) as writer:
        batch = scenario.store.release(batch_id, by="analyst")
        first = writer.write(batch, mark=False)
    assert first.rows == n and [b.batch_id for b in scenario.store.pending_releases()] == [
        batch_id]
    before = len(_offline_rows(scenario.settings, VIEW))

    out = _cli(scenario.config, batch_id)
    assert out.exit_code == 0, out.output
    assert f"finished the interrupted release of {VIEW} batch {batch_id}: {n:,} rows" in out.output
    rows = _offline_rows(scenario.settings, VIEW)
    assert len(rows) == before + n  # written twice: duplicates ...
    key = PIPELINE.view(VIEW).entity.join_key
    mine = {(r[key], r["event_timestamp"]) for r in scenario.held[batch_id]}
    copies: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if (r[key], r["event_timestamp"]) in mine:
            copies.setdefault((r[key], r["event_timestamp"]), []).append(r)
    assert len(copies) == n and all(len(c) == 2 and c[0] == c[1] for c in copies.values())
    assert {c[0]["created_timestamp"] for c in copies.values()} == {first.created_ms}
    # ... of identical rows, created_timestamp included
    assert scenario.store.pending_releases() == []

    again = _cli(scenario.config, batch_id)
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert len(_offline_rows(scenario.settings, VIEW)) == before + n

    # the other batch, its release stopped between released/ and held/: --all finishes it
    other = f"{VIEW}-b2"
    released = scenario.store.release(other)
    held_again = scenario.store.root / "held" / VIEW / released.path.name
    held_again.write_text(released.path.read_text())
    out = _cli(scenario.config, "--all")
    assert out.exit_code == 0, out.output
    assert "[1/1]" in out.output and "1 batches" in out.output
    assert scenario.store.held() == [] and scenario.store.pending_releases() == []
    rows = _offline_rows(scenario.settings, VIEW)
    assert len(rows) == before + n + len(scenario.held[other])
    scenario.assert_offline_is_exact()


def test_release_all_by_view_with_progress_and_clear_errors(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path, online=False)
    stream_rows = sorted(scenario.changelogs["stream_features"],
                         key=lambda r: r["event_timestamp"])[:30]
    scenario.store.hold("stream_features", "stream_features-x", "v-x", stream_rows)

    unknown = _cli(scenario.config, "no-such-batch")
    assert unknown.exit_code != 0
    message = str(unknown.exception)
    assert isinstance(unknown.exception, LivefeatError)
    assert "no held or released batch has this id" in message
    assert f"{VIEW}-b1" in message and "stream_features-x" in message  # what is held

    both = _cli(scenario.config, f"{VIEW}-b1", "--all")
    assert both.exit_code != 0 and "give one BATCH_ID, or --all" in both.output

    out = _cli(scenario.config, "--all", "--view", VIEW)
    assert out.exit_code == 0, out.output
    assert "[1/2]" in out.output and "[2/2]" in out.output
    assert out.output.index(f"{VIEW}-b1") < out.output.index(f"{VIEW}-b2")  # oldest first
    assert "offline store only" in out.output
    assert [b.batch_id for b in scenario.store.held()] == ["stream_features-x"]

    out = _cli(scenario.config, "--all")
    assert out.exit_code == 0, out.output
    assert "1 batches, 30 rows written" in out.output
    again = _cli(scenario.config, "--all")
    assert again.exit_code == 0 and "no held or released batches" in again.output


def test_a_batch_of_a_view_the_pipeline_lacks_stays_held(tmp_path: Path) -> None:
    settings = _settings(tmp_path, online=False)
    store = ResultStore(tmp_path / "results")
    store.hold("other_view", "other-1", "v", [{"k": "a", "event_timestamp": 1}])
    small = Pipeline(name="small", views=(PIPELINE.view(VIEW),))
    with ReleaseWriter(settings, small) as writer, pytest.raises(DefinitionError) as err:
        writer.release("other-1")
    assert "pass the pipeline that produced it with --pipeline" in str(err.value)
    assert [b.batch_id for b in store.held()] == ["other-1"]
