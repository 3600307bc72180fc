"""``livefeat offline compact|stats`` on a local offline store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli.offline_cmd import offline
from pipelines.jobs.marketplace import PIPELINE
from pipelines.offline import read_changelog
from pipelines.runtime.batch import max_event_time
from tests.reference import HOUR
from tests.unit.test_features_exact import T0, random_events
from tests.unit.test_offline_changelog import write_changelogs


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, int]]:
    uri = str(tmp_path / "offline")
    config = tmp_path / "livefeat.yaml"
    config.write_text(yaml.safe_dump({"offline_store": {"uri": uri}}))
    monkeypatch.setenv("LIVEFEAT_CONFIG", str(config))
    events = random_events(41)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    rows = write_changelogs(uri, events, horizon, created=T0 + HOUR, chunk=30)
    return uri, {name: len(r) for name, r in rows.items()}


def test_stats_then_compact_then_stats(store: tuple[str, dict[str, int]]) -> None:
    uri, counts = store
    before = CliRunner().invoke(offline, ["stats", "--json", "--duplicates"])
    assert before.exit_code == 0, before.output
    doc = json.loads(before.output)
    assert doc["uri"] == uri
    by_name = {d["dataset"]: d for d in doc["datasets"]}
    assert {n: d["rows"] for n, d in by_name.items()} == {f"features/{v}": n
                                                         for v, n in counts.items()}
    assert all(d["duplicates"] == 0 for d in by_name.values())
    files_before = {n: d["files"] for n, d in by_name.items()}
    assert all(files_before[n] > by_name[n]["partitions"] for n in files_before)
    tables = {v: read_changelog(uri, v) for v in counts}

    out = CliRunner().invoke(offline, ["compact"])
    assert out.exit_code == 0, out.output
    for name in by_name:
        assert (f"{name}: {by_name[name]['partitions']} partitions compacted, files "
                f"{files_before[name]} -> {by_name[name]['partitions']}") in out.output

    after = json.loads(CliRunner().invoke(offline, ["stats", "--json"]).output)
    assert {d["dataset"]: d["files"] for d in after["datasets"]} == {
        n: d["partitions"] for n, d in by_name.items()}
    assert all(read_changelog(uri, v).equals(t) for v, t in tables.items())
    text = CliRunner().invoke(offline, ["stats"])
    assert "features/user_features" in text.output and "rows" in text.output


def test_compact_one_dataset(store: tuple[str, dict[str, int]]) -> None:
    out = CliRunner().invoke(offline, ["compact", "features/seller_features"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("features/seller_features:")
    assert "user_features" not in out.output
