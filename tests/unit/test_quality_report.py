"""``livefeat quality report`` and ``held``, and the gate's configuration errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines import topics
from pipelines.cli.quality_cmd import quality
from pipelines.errors import ConfigError
from quality.config import GateConfig
from quality.gate import QualityGate
from quality.profile import build_profile
from tests.unit.test_quality_drift import VIEW, feature_rows, quality_dir


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(4)
    profile = build_profile(VIEW, [r for m in range(8) for r in feature_rows(rng, -100 + m)])
    config = GateConfig.from_mapping({"results_dir": str(base / "results"),
                                      "views": {VIEW: {"action": "block"}}})
    gate = QualityGate.load(quality_dir(base / "q", profile, trim=True), config)
    order = {"event_id": "e", "event_time": 1, "stream_id": "s", "seller_id": "x",
             "order_id": "o", "user_id": "u", "amount_cents": 5, "currency": "USD",
             "payment_method_id": "p", "shipping_country": "US"}
    gate.check_rows(topics.ORDER_PLACED, [order, {**order, "amount_cents": -1},
                                          {**order, "currency": "EUR"}], 10)
    gate.check_rows(topics.ORDER_PLACED, [order, order], 10)
    verdicts = [
        gate.check_features(VIEW, feature_rows(rng, m, amount_factor=f), f"minute-{m}")
        for m, f in ((0, 1.0), (1, 1.0), (2, 1.5), (3, 1.0))
    ]
    return {"base": base, "verdicts": verdicts}


def test_report_prints_a_summary_and_writes_a_self_contained_page(
    results: dict[str, Any],
) -> None:
    assert [v.action for v in results["verdicts"]] == ["pass", "pass", "block", "pass"]
    out = results["base"] / "report.html"
    run = CliRunner().invoke(
        quality, ["report", "--results-dir", str(results["base"] / "results"),
                  "--out", str(out)], obj={}, env={"COLUMNS": "200"},
    )
    assert run.exit_code == 0, run.output
    text = run.output
    assert "rows.livestream.order_placed" in text
    assert "non_positive_amount 1, unsupported_currency 1" in text
    assert re.search(r"user_features\s*│\s*4\s*│\s*16000\s*│\s*3\s*│\s*0\s*│\s*1\s*│", text)
    page = out.read_text()
    assert "<script" not in page and "src=" not in page and "<link" not in page
    # one chart per measured column and measure of the trimmed suite (never-null columns
    # have no null-share chart)
    assert re.findall(r"<div><div>([^<]+)</div><svg", page) == [
        "user_bid_count_5m: quantile_shift",
        "user_order_amount_avg_24h: null_share",
        "user_order_amount_avg_24h: quantile_shift",
        "user_risk_tier: category_shift",
    ]
    assert "livefeat quality release minute-2" in page
    assert "user_order_amount_avg_24h (0." in page  # the failed batch names its drifted column


def test_held_lists_blocked_batches(results: dict[str, Any]) -> None:
    run = CliRunner().invoke(
        quality, ["held", "--results-dir", str(results["base"] / "results")], obj={}
    )
    assert run.exit_code == 0, run.output
    assert "minute-2" in run.output and "4000" in run.output


def test_report_without_results_says_what_to_do(tmp_path: Path) -> None:
    run = CliRunner().invoke(quality, ["report", "--results-dir", str(tmp_path / "none")], obj={})
    assert isinstance(run.exception, ConfigError)
    assert "no validation results here yet" in str(run.exception)


@pytest.mark.parametrize(
    ("data", "key", "fix"),
    [
        ({"views": {"user_features": {"action": "stop"}}}, "quality.views.user_features.action",
         "warn or block"),
        ({"drift_threshhold": 0.1}, "quality.drift_threshhold", "remove or rename"),
        ({"drift_threshold": 5}, "quality.drift_threshold", "correct"),
        ({"currencies": ["usd"]}, "quality.currencies", "correct"),
    ],
)
def test_invalid_config_names_key_and_fix(data: dict[str, Any], key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        GateConfig.from_mapping(data, where="livefeat.yaml, key quality")
    assert err.value.where == f"livefeat.yaml, key {key}"
    assert err.value.fix is not None and fix in err.value.fix


def test_policy_overrides_and_row_rules() -> None:
    cfg = GateConfig.from_mapping(
        {"drift_threshold": 0.1, "min_rows": 200, "currencies": ["USD", "EUR"],
         "views": {"seller_features": {"action": "block", "batch_max_ms": 600_000}}}
    )
    seller, user = cfg.policy("seller_features"), cfg.policy("user_features")
    assert (seller.action, seller.threshold, seller.batch_max_ms, seller.min_rows) == (
        "block", 0.1, 600_000, 200)
    assert (user.action, user.batch_max_ms) == ("warn", 60_000)
    assert cfg.row_rules().currencies == frozenset({"USD", "EUR"})


def test_report_held_and_release_do_not_import_great_expectations(
    results: dict[str, Any],
) -> None:
    """Reading results must stay fast: GX takes seconds to import."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from pipelines.cli.quality_cmd import quality\n"
        f"args = ['held', '--results-dir', {str(results['base'] / 'results')!r}]\n"
        "r = CliRunner().invoke(quality, args, obj={})\n"
        "assert r.exit_code == 0, r.output\n"
        "print('great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
