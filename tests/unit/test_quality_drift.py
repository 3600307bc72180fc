"""Drift gate: two hours of synthetic user_features rows, batched per minute.

Order amounts are raised 20 % for minutes 50-59; for minutes 90-99 each amount is
multiplied by its own random factor within +-3 % (noise within the 5 % threshold).
Exactly the ten +20 % batches must get the view's action; every other batch passes.
The test knows which minutes it spoiled; it does not ask the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.errors import DefinitionError, LivefeatError
from quality.batcher import MicroBatcher
from quality.config import GateConfig
from quality.gate import QualityGate
from quality.profile import build_profile
from quality.results import ResultStore
from quality.suites import SUITES_DIR
from quality.verdicts import DriftVerdict

START = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MINUTE = 60_000
ROWS_PER_MINUTE = 4000
DRIFT_MINUTES = set(range(50, 60))
NOISE_MINUTES = set(range(90, 100))
VIEW = "user_features"


def feature_rows(
    rng: np.random.Generator,
    minute: int,
    amount_factor: float = 1.0,
    n: int = ROWS_PER_MINUTE,
    high_risk: float = 0.05,
    null_avg: float = 0.5,
    jitter: float = 0.0,
) -> list[dict[str, Any]]:
    """``n`` changelog rows of one minute, event times ascending from the minute's start.

    ``amount_factor`` multiplies every order amount (a drift); ``jitter`` multiplies each
    one by its own random factor in [1 - jitter, 1 + jitter] (noise).
    """
    t0 = START + minute * MINUTE
    times = t0 + np.sort(np.concatenate([[0], rng.integers(0, MINUTE, n - 1)]))
    bids = np.minimum(rng.geometric(0.5, n) - 1, 30)
    avg = rng.lognormal(8.0, 0.5, n) * amount_factor * rng.uniform(1 - jitter, 1 + jitter, n)
    avg_null = rng.random(n) < null_avg
    tiers = rng.choice(["LOW", "MEDIUM", "HIGH"], n, p=[0.95 - high_risk, 0.05, high_risk])
    columns = {
        "user_id": [f"u-{i:06d}" for i in rng.integers(0, 50_000, n)],
        "event_timestamp": times.tolist(),
        "created_timestamp": (times + 250).tolist(),
        "user_bid_count_5m": bids.tolist(),
        "user_bid_amount_sum_1h": (bids * rng.integers(500, 5000, n)).tolist(),
        "user_order_count_24h": np.minimum(rng.geometric(0.7, n) - 1, 10).tolist(),
        "user_order_amount_avg_24h": [
            None if z else float(v) for v, z in zip(avg, avg_null, strict=True)
        ],
        "user_distinct_streams_1h": np.minimum(rng.geometric(0.6, n), 8).tolist(),
        "user_distinct_payment_methods_24h": np.minimum(rng.geometric(0.8, n) - 1, 4).tolist(),
        "user_account_created_at": (START - rng.integers(1, 900, n) * 86_400_000).tolist(),
        "user_is_verified": (rng.random(n) < 0.8).tolist(),
        "user_risk_tier": tiers.tolist(),
    }
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def quality_dir(base: Path, profile: Any, trim: bool) -> Path:
    """A quality dir with the shipped suites (optionally the user_features suite trimmed to the
    key check and three drift columns, to keep GX's per-call cost small) and ``profile``."""
    shutil.copytree(SUITES_DIR, base / "suites")
    if trim:
        path = base / "suites" / f"features.{VIEW}.json"
        suite = json.loads(path.read_text())
        keep = {"user_id", "user_order_amount_avg_24h", "user_bid_count_5m", "user_risk_tier"}
        suite["expectations"] = [
            e for e in suite["expectations"]
            if e["kwargs"]["column"] in keep
            and (e["meta"]["check"] == "drift" or e["kwargs"]["column"] == "user_id")
        ]
        path.write_text(json.dumps(suite))
    if profile is not None:
        profile.save(base / "profiles" / f"{VIEW}.json")
    return base


@pytest.fixture(scope="module")
def profile() -> Any:
    rng = np.random.default_rng(7)
    reference = [r for m in range(30) for r in feature_rows(rng, -1000 + m)]
    return build_profile(VIEW, reference)


@pytest.fixture(scope="module")
def two_hours() -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    rows = []
    for minute in range(120):
        factor = 1.2 if minute in DRIFT_MINUTES else 1.0
        jitter = 0.03 if minute in NOISE_MINUTES else 0.0
        rows += feature_rows(rng, minute, amount_factor=factor, jitter=jitter)
    return rows


def test_exactly_the_drifted_minutes_warn(
    tmp_path: Path, profile: Any, two_hours: list[dict[str, Any]]
) -> None:
    gate = QualityGate.load(
        quality_dir(tmp_path / "q", profile, trim=True), GateConfig(results_dir=tmp_path / "r")
    )
    alerts: list[DriftVerdict] = []
    gate.add_alert_handler(alerts.append)
    batcher = MicroBatcher(VIEW, max_rows=10 * ROWS_PER_MINUTE, max_span_ms=MINUTE)
    batches = [b for r in two_hours for b in batcher.add(r)] + batcher.flush()
    assert len(batches) == 120
    verdicts = {}
    for b in batches:
        minute = (b.first_ms - START) // MINUTE
        verdicts[minute] = gate.check_features(VIEW, b.rows, b.batch_id)
    warned = {m for m, v in verdicts.items() if v.action == "warn"}
    assert warned == DRIFT_MINUTES
    assert {m for m, v in verdicts.items() if v.action == "pass"} == set(range(120)) - DRIFT_MINUTES
    for m in DRIFT_MINUTES:
        v = verdicts[m]
        assert v.judged and v.threshold == 0.05
        assert v.drifted_columns == ["user_order_amount_avg_24h"]
        shift = v.columns["user_order_amount_avg_24h"].measures["quantile_shift"]
        assert 0.15 < shift.value < 0.25  # amounts x 1.2 move every quantile by 20 %
        assert shift.drifted and shift.limit < shift.value
    for m in NOISE_MINUTES:
        shift = verdicts[m].columns["user_order_amount_avg_24h"].measures["quantile_shift"]
        assert shift.value < 0.05  # +-3 % noise stays under the threshold
    assert sorted((int(a.event_time_min or 0) - START) // MINUTE for a in alerts) == sorted(
        DRIFT_MINUTES
    )
    assert ResultStore(tmp_path / "r").held() == []  # warn materializes: nothing is held
    stored = list(ResultStore(tmp_path / "r").results("features"))
    assert len(stored) == 120
    assert sum(1 for r in stored if r["action"] == "warn") == 10
    assert gate.counters()[(f"features.{VIEW}", "warn")] == 10
    assert gate.counters()[(f"features.{VIEW}", "pass")] == 110


def test_block_holds_the_batch_and_release_hands_it_back(
    tmp_path: Path, profile: Any, two_hours: list[dict[str, Any]]
) -> None:
    config = GateConfig.from_mapping({"results_dir": str(tmp_path / "r"),
                                      "views": {VIEW: {"action": "block"}}})
    gate = QualityGate.load(quality_dir(tmp_path / "q", profile, trim=False), config)
    clean = [r for r in two_hours if (r["event_timestamp"] - START) // MINUTE == 10]
    drifted = [r for r in two_hours if (r["event_timestamp"] - START) // MINUTE == 55]
    assert gate.check_features(VIEW, clean, "minute-10").action == "pass"
    verdict = gate.check_features(VIEW, drifted, "minute-55")
    assert verdict.action == "block"
    assert verdict.drifted_columns == ["user_order_amount_avg_24h"]
    assert verdict.failures == []  # the full suite's integrity checks pass
    store = ResultStore(tmp_path / "r")
    held = store.held()
    assert [(b.view, b.batch_id, b.result_id) for b in held] == [
        (VIEW, "minute-55", verdict.result_id)
    ]
    assert held[0].rows == drifted

    # the store's protocol; `livefeat quality release` (which also writes the rows to the
    # stores) is tested in tests/unit/test_quality_release.py
    released = store.release("minute-55", by="analyst")
    assert released.state == "released" and len(released.rows) == len(drifted)
    assert store.held() == []
    pending = store.pending_releases(VIEW)
    assert [b.batch_id for b in pending] == ["minute-55"]
    assert pending[0].rows == drifted
    assert pending[0].info["released_by"] == "analyst"
    releases = list(store.results("release"))
    assert [(r["batch_id"], r["rows"]) for r in releases] == [("minute-55", len(drifted))]

    with pytest.raises(LivefeatError, match="already released"):
        store.release("minute-55", by="analyst")

    done = store.mark_materialized(pending[0])
    assert done.exists() and store.pending_releases() == []


def test_small_batches_integrity_categorical_and_null_drift(tmp_path: Path, profile: Any) -> None:
    gate = QualityGate.load(
        quality_dir(tmp_path / "q", profile, trim=False), GateConfig(results_dir=tmp_path / "r")
    )
    rng = np.random.default_rng(3)

    small = gate.check_features(VIEW, feature_rows(rng, 0, amount_factor=1.5, n=500), "small")
    assert (small.action, small.judged, small.columns) == ("pass", False, {})
    assert "500 rows < min_rows 1000" in small.note

    broken = feature_rows(rng, 1)
    broken[3]["user_bid_count_5m"] = -2
    verdict = gate.check_features(VIEW, broken, "broken")
    assert verdict.action == "warn"
    assert [(f.expectation, f.sample) for f in verdict.failures] == [
        ("expect_column_min_to_be_between(user_bid_count_5m)", [-2])  # the observed minimum
    ]

    risky = gate.check_features(VIEW, feature_rows(rng, 2, high_risk=0.30), "risky")
    assert risky.drifted_columns == ["user_risk_tier"]
    tier = risky.columns["user_risk_tier"].measures["category_shift"]
    assert 0.2 < tier.value < 0.3  # 25 % of rows moved from LOW to HIGH

    nulls = gate.check_features(VIEW, feature_rows(rng, 3, null_avg=0.8), "nulls")
    assert nulls.drifted_columns == ["user_order_amount_avg_24h"]
    null_share = nulls.columns["user_order_amount_avg_24h"].measures["null_share"]
    assert null_share.drifted and 0.25 < null_share.value < 0.35

    assert gate.check_features(VIEW, [], "empty").action == "pass"
    with pytest.raises(DefinitionError, match="no feature suite"):
        gate.check_features("no_such_view", broken, "x")


def test_without_a_profile_drift_is_not_judged(tmp_path: Path) -> None:
    gate = QualityGate.load(
        quality_dir(tmp_path / "q", None, trim=False), GateConfig(results_dir=tmp_path / "r")
    )
    verdict = gate.check_features(VIEW, feature_rows(np.random.default_rng(5), 0, 3.0), "b")
    assert (verdict.action, verdict.judged) == ("pass", False)
    assert "no reference profile" in verdict.note
