"""``livefeat features get|apply|config`` on the embedded SQLite store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli.features_cmd import features
from pipelines.config import load_config
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from pipelines.sinks.online import OnlineSink
from pipelines.sinks.tables import changelog_schema
from tests.reference import Reference
from tests.unit.test_features_exact import random_events


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "livefeat.yaml"
    path.write_text(yaml.safe_dump({
        "online_store": {"type": "sqlite", "sqlite_path": str(tmp_path / "online.db")},
        "offline_store": {"uri": str(tmp_path / "offline")},
    }))
    monkeypatch.setenv("LIVEFEAT_CONFIG", str(path))
    return path


def _fill(config: Path) -> tuple[dict[str, Any], int]:
    events = random_events(3)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    rows = run_pipeline(PIPELINE, events, horizon)["user_features"].rows
    sink = OnlineSink(load_config(config))
    sink.write("features/user_features", changelog_schema(PIPELINE.view("user_features")), rows)
    sink.close()
    keys = sorted({r["user_id"] for r in rows})
    want = {r["user_id"]: r for r in Reference(events).as_of("user_features",
                                                              [(k, horizon) for k in keys])}
    return want, horizon


def test_get_prints_values_age_and_account_age(config: Path) -> None:
    want, _ = _fill(config)
    with_profile = next(k for k, r in sorted(want.items()) if r["user_account_created_at"])
    before = time.time()
    out = CliRunner().invoke(features, ["get", "user_features", "-e", f"user_id={with_profile}",
                                        "-e", "user_id=nobody", "--json"])
    after = time.time()
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output[out.output.index("["):])
    first, unknown = doc
    assert first["user_id"] == with_profile and first["found"] is True
    expected = want[with_profile]
    for f in PIPELINE.view("user_features").features:
        if f.value_type != "timestamp":
            assert first["values"][f.name] == expected[f.name], f.name
    created_s = expected["user_account_created_at"] // 1000  # online timestamps are seconds
    age = first["values"]["user_account_age_days"]
    assert (before - created_s) / 86400 <= age <= (after - created_s) / 86400
    assert unknown == {"user_id": "nobody", "found": False, "event_time": None, "age_s": None,
                       "values": unknown["values"]}
    assert set(unknown["values"].values()) == {None}

    text = CliRunner().invoke(features, ["get", "user_features", "-e", f"user_id={with_profile}",
                                         "-e", "user_id=nobody"])
    assert text.exit_code == 0, text.output
    assert "values as of" in text.output and " ago)" in text.output
    assert "not in the online store" in text.output
    assert "user_account_age_days" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "user_features", "-e", "seller_id=s1"], "keyed by user_id"),
        (["get", "user_features", "-e", "u1"], "is not KEY=VALUE"),
        (["get", "no_such_view", "-e", "user_id=u1"], "no view 'no_such_view'"),
    ],
)
def test_get_rejects_bad_arguments(config: Path, args: list[str], message: str) -> None:
    out = CliRunner().invoke(features, args)
    assert out.exit_code == 2
    assert message in out.output


def test_apply_and_config(config: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(features, ["apply"])
    assert out.exit_code == 0, out.output
    assert f"source {tmp_path / 'offline' / 'features' / 'user_features'}" in out.output
    target = tmp_path / "repo" / "feature_store.yaml"
    target.parent.mkdir()
    out = CliRunner().invoke(features, ["config", "--output", str(target)])
    assert out.exit_code == 0, out.output
    doc = yaml.safe_load(target.read_text())
    assert doc["online_store"] == {"type": "pipelines.feast_stores.LivefeatSqliteOnlineStore",
                                   "path": "../online.db"}
    assert doc["registry"] == "../registry.db"
