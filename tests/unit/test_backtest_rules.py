"""Rules: checked against the feature types before any data is read; null semantics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipelines.backtest import Rule, compile_rules, load_rules
from pipelines.backtest.predicate import parse_predicate
from pipelines.cli.backtest_cmd import backtest
from pipelines.errors import ConfigError, DefinitionError, UserCodeError
from pipelines.jobs.marketplace import PIPELINE

KINDS = {
    "n": "number",
    "m": "number",
    "b": "bool",
    "s": "string",
    "ts": "timestamp",
    "ts2": "timestamp",
}


def test_reference_rules_load_and_read_known_features() -> None:
    ruleset = load_rules("marketplace_rules")
    assert len(ruleset.rules) >= 2
    assert ruleset.pipeline is PIPELINE
    assert {r.name for r in ruleset.features} >= {
        "user_account_age_days",
        "user_distinct_payment_methods_24h",
        "user_risk_tier",
    }
    # The read-time feature fetches its stored source, once.
    assert ruleset.stored_by_view()["user_features"].count("user_account_created_at") == 1


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("user_bid_count_5min > 20", "unknown feature 'user_bid_count_5min'; did you mean"),
        ("user_risk_tier > 3", "cannot compare a string with a number"),
        ("user_risk_tier < 'HIGH'", "strings can only be compared with == and !="),
        ("user_is_verified + 1 > 0", "cannot compute bool + number"),
        ("user_bid_count_5m + 1", "is a number, not a condition"),
        ("len(user_risk_tier) > 2", "function calls are not allowed"),
        ("user_risk_tier.lower() == 'high'", "function calls are not allowed"),
        ("user_risk_tier == None", "use `is None`"),
        ("user_bid_count_5m > 1 and user_bid_count_5m", "need conditions on both sides"),
        ("user_risk_tier in ('HIGH', 3)", "every item of the `in` tuple must be a string"),
        ("user_bid_count_5m is 3", "only test for None"),
        ("user_bid_count_5m > ", "not a Python expression"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("user_bid_count_5m > 1 if True else False", "conditional expressions are not allowed"),
        ("user_account_created_at > 5", "cannot compare a timestamp with a number"),
    ],
)
def test_invalid_rule_fails_naming_the_rule(expr: str, message: str) -> None:
    rules = [Rule("fine", "user_bid_count_5m > 1"), Rule("broken_rule", expr)]
    with pytest.raises(DefinitionError) as info:
        compile_rules(rules, PIPELINE, "rules.py")
    text = str(info.value)
    assert "rules.py, rule 'broken_rule'" in text
    assert message in text
    assert "'fine'" not in text


def test_every_invalid_rule_is_listed() -> None:
    rules = [Rule("a", "nope > 1"), Rule("a", "user_bid_count_5m > 1"), Rule("c", "1")]
    with pytest.raises(DefinitionError) as info:
        compile_rules(rules, PIPELINE, "rules.py")
    text = str(info.value)
    assert "3 invalid rules" in text
    assert "rule 'a': unknown feature 'nope'" in text
    assert "rule 'a': the name is used twice" in text
    assert "rule 'c': the expression is a number" in text


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Rule("bad name", "user_bid_count_5m > 1"), "the name must be"),
        (Rule("lam", lambda f: f["x"] > 1), "must be a string, got function"),  # type: ignore[arg-type]
        ("user_bid_count_5m > 1", "RULES[0]: is a str, not a Rule"),
    ],
)
def test_malformed_rule_objects(rule: object, message: str) -> None:
    with pytest.raises(DefinitionError, match=r"rules\.py") as info:
        compile_rules([rule], PIPELINE, "rules.py")
    assert message in str(info.value)


def test_rules_file_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(DefinitionError, match="no RULES list"):
        load_rules(str(empty))
    syntax = tmp_path / "syntax.py"
    syntax.write_text("RULES = [\n")
    with pytest.raises(DefinitionError, match=r"syntax.py, line"):
        load_rules(str(syntax))
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserCodeError, match="boom"):
        load_rules(str(raising))
    with pytest.raises(ConfigError, match="not found"):
        load_rules(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match=r"pipelines\.jobs\.no_such_rules"):
        load_rules("no_such_rules")
    named = tmp_path / "named.py"
    named.write_text(
        "from pipelines.backtest import Rule\n"
        "PIPELINE = 'marketplace'\n"
        "RULES = [Rule('ok', 'stream_bids_1m >= 10')]\n"
    )
    assert [r.name for r in load_rules(str(named)).rules] == ["ok"]


def test_invalid_rule_fails_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels and offline store do not exist: the error is still about the rule."""
    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "my_rules.py"
    rules.write_text(
        "from pipelines.backtest import Rule\nRULES = [Rule('typo', 'user_order_count_1h > 3')]\n"
    )
    result = CliRunner().invoke(
        backtest,
        [str(rules), "--labels", "missing.parquet", "--offline-store", "no/such/store"],
        obj={},
    )
    assert isinstance(result.exception, DefinitionError)
    assert "rule 'typo'" in str(result.exception)
    assert "unknown feature 'user_order_count_1h'" in str(result.exception)


def evaluate(expr: str, **columns: Sequence[object]) -> list[bool]:
    typed = {
        "n": pa.int64(),
        "m": pa.float64(),
        "b": pa.bool_(),
        "s": pa.string(),
        "ts": pa.int64(),
        "ts2": pa.int64(),
    }
    arrays = {k: pa.array(v, typed[k]) for k, v in columns.items()}
    size = len(next(iter(columns.values())))
    kinds = {k: KINDS[k] for k in columns}
    return parse_predicate(expr, kinds).evaluate(arrays, size).tolist()


def test_comparisons_with_null_are_false() -> None:
    n = [1, 5, None]
    assert evaluate("n > 2", n=n) == [False, True, False]
    assert evaluate("n <= 2", n=n) == [True, False, False]
    assert evaluate("n != 5", n=n) == [True, False, False]
    assert evaluate("n == 5", n=n) == [False, True, False]
    assert evaluate("not n > 2", n=n) == [True, False, True]  # not (false) is true
    assert evaluate("n is None", n=n) == [False, False, True]
    assert evaluate("n is not None and n > 0", n=n) == [True, True, False]
    assert evaluate("n + 1 > 2 or n is None", n=n) == [False, True, True]


def test_booleans_strings_membership_and_chains() -> None:
    b = [True, False, None]
    assert evaluate("b", b=b) == [True, False, False]
    assert evaluate("not b", b=b) == [False, True, True]
    assert evaluate("b == False", b=b) == [False, True, False]
    s = ["HIGH", "LOW", None]
    assert evaluate("s in ('HIGH', 'MEDIUM')", s=s) == [True, False, False]
    assert evaluate("s not in ('HIGH',)", s=s) == [False, True, False]
    assert evaluate("s != 'LOW'", s=s) == [True, False, False]
    n = [0, 3, 7, None]
    assert evaluate("1 <= n < 5", n=n) == [False, True, False, False]
    assert evaluate("n in (0, 7)", n=n) == [True, False, True, False]


def test_arithmetic_division_by_zero_and_timestamps() -> None:
    n, m = [10, 10, 10, None], [4.0, 0.0, None, 2.0]
    assert evaluate("n / m > 2", n=n, m=m) == [True, False, False, False]
    assert evaluate("n / m is None", n=n, m=m) == [False, True, True, True]
    assert evaluate("-n * 2 + m < 0", n=n, m=m) == [True, True, False, False]
    ts, ts2 = [1_000, 90_000_000, None], [0, 0, 0]
    assert evaluate("ts - ts2 > 86_400_000", ts=ts, ts2=ts2) == [False, True, False]
    assert evaluate("ts > ts2", ts=ts, ts2=ts2) == [True, True, False]
    assert evaluate("True", n=[1, 2]) == [True, True]


def test_overflow_is_reported_as_the_rules_error() -> None:
    from pipelines.backtest.run import _evaluate

    ruleset = compile_rules([Rule("huge", "user_bid_amount_sum_1h * 4 > 0")], PIPELINE, "r.py")
    columns = {"user_bid_amount_sum_1h": pa.array([2**62], pa.int64())}
    with pytest.raises(UserCodeError, match="rule 'huge'"):
        _evaluate(ruleset.rules[0], columns, 1)
