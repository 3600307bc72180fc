"""The ``quality`` section of livefeat.yaml, and the run summary's gate accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.runtime.summary import RunSummary, gate_outcomes, gate_results_dir, run_key
from quality.results import ResultStore


def _load(tmp_path: Path, quality: Any, **extra: Any) -> Any:
    path = tmp_path / "livefeat.yaml"
    path.write_text(yaml.safe_dump({"quality": quality, **extra}))
    return load_config(path)


def test_defaults_gate_on_results_under_the_state_dir(tmp_path: Path) -> None:
    settings = _load(tmp_path, {}, stack={"state_dir": str(tmp_path / "state")})
    assert settings.quality.enabled and settings.quality.dir is None
    config = settings.quality.gate_config(settings.stack.state_dir)
    assert config.results_dir == (tmp_path / "state" / "quality").absolute()
    assert gate_results_dir(settings) == config.results_dir
    off = _load(tmp_path, {"enabled": False})
    assert gate_results_dir(off) is None


def test_the_section_takes_every_gate_key(tmp_path: Path) -> None:
    (tmp_path / "q" / "suites").mkdir(parents=True)
    settings = _load(tmp_path, {
        "dir": str(tmp_path / "q"), "results_dir": str(tmp_path / "r"),
        "batch_max_rows": 2_000, "batch_max_ms": 120_000, "min_rows": 300,
        "drift_threshold": 0.1, "views": {"user_features": {"action": "block"}},
    })
    config = settings.quality.gate_config(settings.stack.state_dir)
    assert config.results_dir == (tmp_path / "r").absolute()
    policy = config.policy("user_features")
    assert (policy.action, policy.batch_max_rows, policy.batch_max_ms, policy.min_rows) == (
        "block", 2_000, 120_000, 300)
    assert config.policy("stream_features").action == "warn"
    assert settings.quality.quality_dir() == (tmp_path / "q").absolute()


@pytest.mark.parametrize(
    ("quality", "key", "fix"),
    [
        ({"batch_max_rows": 0}, "quality.batch_max_rows", "docs/quality.md"),
        ({"batch_max_ms": -5}, "quality.batch_max_ms", "docs/quality.md"),
        ({"enabled": "maybe"}, "quality.enabled", "docs/quality.md"),
        ({"views": {"user_features": {"action": "stop"}}}, "quality.views.user_features.action",
         "one of the values"),
        ({"dir": "no/such/dir"}, "quality.dir", "docs/quality.md"),
        ({"batches": 3}, "quality.batches", "remove or rename"),
    ],
)
def test_bad_values_name_file_key_and_fix(
    tmp_path: Path, quality: dict[str, Any], key: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, quality)
    where = err.value.where or ""
    assert str(tmp_path / "livefeat.yaml") in where and key in where
    assert fix in (err.value.fix or "")


def _verdict(run: str, view: str, batch: str, action: str, rows: int,
             drifted: bool = False) -> dict[str, Any]:
    return {"run": run, "kind": "features", "view": view, "batch_id": batch, "action": action,
            "rows": rows, "judged": True, "columns": {"c": {"drifted": drifted}}}


def test_gate_outcomes_of_one_run_count_each_batch_once(tmp_path: Path) -> None:
    run = run_key("marketplace", {("t", 0): 10})
    store = ResultStore(tmp_path)
    store.append(_verdict(run, "v", "v-1", "pass", 5))
    store.append(_verdict(run, "v", "v-2", "block", 3, drifted=True))
    store.append(_verdict(run, "v", "v-2", "block", 3, drifted=True))  # replayed batch
    store.append(_verdict("other-run", "v", "v-9", "warn", 100))
    store.hold("v", "v-2", "r", [{"k": i, "event_timestamp": i} for i in range(3)])
    got = gate_outcomes(tmp_path, run)["v"]
    assert got.batches == {"pass": 1, "warn": 0, "block": 1}
    assert (got.produced, got.held, got.held_now, got.drifted) == (8, 3, 3, 1)
    summary = RunSummary(changelog_rows={"v": 5}, gate={"v": got})
    assert summary.gate_balanced and summary.gate_unaccounted() == {"v": 0}
    assert not RunSummary(changelog_rows={"v": 4}, gate={"v": got}).gate_balanced
    assert run != run_key("marketplace", {("t", 0): 11})
