"""Events suites (input drift): loading, policies, and the gate's verdicts on event batches."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError
from quality.config import GateConfig, ViewPolicy
from quality.profile import BatchBounds, build_profile
from quality.results import ResultStore
from quality.suites import QUALITY_DIR, batch_suites, event_suite_name, load_suite_files

TOPIC = "livestream.order_placed"
SHIPPED = QUALITY_DIR / "suites" / f"{event_suite_name(TOPIC)}.json"


def _write(directory: Path, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return path


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SHIPPED.read_text())
    return data


def test_the_shipped_events_suite_loads_with_its_topic_time_field_and_bounds() -> None:
    suite = load_suite_files()[event_suite_name(TOPIC)]
    assert suite.level == "events" and suite.batch_of == TOPIC
    assert suite.time_field == "event_time"
    assert suite.drift_columns == {"amount_cents": "numeric", "shipping_country": "categorical"}
    assert suite.batch_defaults == {"batch_max_ms": 3_600_000, "min_rows": 1_000}
    assert TOPIC in batch_suites(load_suite_files())


@pytest.mark.parametrize(("meta", "key"), [
    ({"time_field": None}, "meta.time_field"),
    ({"subject": ""}, "meta.subject"),
    ({"min_rows": 0}, "meta.min_rows"),
    ({"batch_max_ms": "1h"}, "meta.batch_max_ms"),
])
def test_a_bad_events_suite_names_the_file_and_key(
    tmp_path: Path, meta: dict[str, Any], key: str,
) -> None:
    data = _shipped()
    data["meta"] = {k: v for k, v in {**data["meta"], **meta}.items() if v is not None}
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_suite_files(tmp_path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_a_view_and_a_topic_of_the_same_name_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, _shipped())
    features = json.loads((QUALITY_DIR / "suites" / "features.user_features.json").read_text())
    features["name"] = f"features.{TOPIC}"
    features["meta"]["view"] = TOPIC
    _write(tmp_path, features)
    with pytest.raises(ConfigError, match="one batch suite per view or topic"):
        batch_suites(load_suite_files(tmp_path))


def test_events_are_never_blocked_and_bounds_resolve_config_then_suite_then_gate() -> None:
    defaults = {"batch_max_ms": 3_600_000, "min_rows": 1_000}
    gate_wide_block = GateConfig(action="block", batch_max_rows=7)
    policy = gate_wide_block.input_policy(TOPIC, defaults)
    assert policy.action == "warn"  # a gate-wide block does not reach events
    assert (policy.batch_max_ms, policy.min_rows, policy.batch_max_rows) == (3_600_000, 1_000, 7)
    own = GateConfig(views={TOPIC: ViewPolicy(batch_max_ms=60_000)})
    assert own.input_policy(TOPIC, defaults).batch_max_ms == 60_000
    with pytest.raises(ConfigError) as err:
        GateConfig(views={TOPIC: ViewPolicy(action="block")}).input_policy(TOPIC, defaults)
    assert f"quality.views.{TOPIC}.action" in str(err.value) and "warn" in str(err.value)


def _orders(n: int, first_ms: int, factor: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"event_time": first_ms + i * 100, "amount_cents": round(rng.lognormvariate(8, 0.9)
                                                                     * factor),
             "shipping_country": rng.choice(["US", "US", "US", "CA", "GB"])} for i in range(n)]


@pytest.fixture
def quality_dir(tmp_path: Path) -> Path:
    base = tmp_path / "quality"
    (base / "suites").mkdir(parents=True)
    shutil.copy(SHIPPED, base / "suites")
    reference = [row for k in range(12) for row in _orders(2_000, k * 600_000, 1.0, k)]
    kinds = load_suite_files(base / "suites")[event_suite_name(TOPIC)].drift_columns
    bounds = BatchBounds(20_000, 600_000, 1_000, aligned=True)
    build_profile(TOPIC, reference, kinds=kinds, bounds=bounds,
                  time_field="event_time").save(base / "profiles" / f"{TOPIC}.json")
    return base


def test_an_events_batch_is_judged_stored_as_events_and_only_warns(
    quality_dir: Path, tmp_path: Path,
) -> None:
    from quality.gate import QualityGate

    config = GateConfig(action="block", results_dir=tmp_path / "results",
                        views={TOPIC: ViewPolicy(batch_max_ms=600_000)})
    gate = QualityGate.load(quality_dir, config)
    alerts: list[Any] = []
    gate.add_alert_handler(alerts.append)
    same = gate.check_features(TOPIC, _orders(2_000, 10**9, 1.0, 99), "b1")
    raised = gate.check_features(TOPIC, _orders(2_000, 10**9, 1.3, 98), "b2")
    assert same.judged and same.action == "pass"
    assert raised.action == "warn" and raised.columns["amount_cents"].drifted
    assert not raised.columns["shipping_country"].drifted
    assert raised.event_time_min == 10**9 and raised.event_time_max == 10**9 + 199_900
    assert [a.batch_id for a in alerts] == ["b2"]
    store = ResultStore(config.results_path)
    stored = list(store.results("events"))
    assert [r["batch_id"] for r in stored] == ["b1", "b2"]
    assert {r["configured_action"] for r in stored} == {"warn"}
    assert not list(store.results("features")) and not store.held()
