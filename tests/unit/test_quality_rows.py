"""Row-level GX suites: each rule on hand-made rows, and agreement with quality/rows.py.

The agreement test generates a few thousand good and bad records per topic from the
Avro schemas and asserts that the GX suites reject exactly the rows quality/rows.py
rejects, with the same reason code and the same detail text.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from pipelines import topics
from pipelines.errors import ConfigError, DefinitionError
from pipelines.jobs.marketplace import PIPELINE
from quality.config import GateConfig
from quality.gate import QualityGate
from quality.results import ResultStore
from quality.rows import RowRules
from quality.suites import expectation_columns, load_suite_files
from schemas.store import SchemaStore

REF = 1_700_000_000_000
HOUR = 3_600_000


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> QualityGate:
    return QualityGate.load(config=GateConfig(results_dir=tmp_path_factory.mktemp("rows")))


def order(**changes: Any) -> dict[str, Any]:
    base = {
        "event_id": "evt-1",
        "event_time": REF - 1000,
        "stream_id": "stream-1",
        "seller_id": "seller-1",
        "order_id": "order-1",
        "user_id": "user-1",
        "amount_cents": 2500,
        "currency": "USD",
        "payment_method_id": "pm-1",
        "shipping_country": "US",
    }
    base.update(changes)
    return base


def only_failure(gate: QualityGate, subject: str, row: dict[str, Any]) -> Any:
    verdict = gate.check_rows(subject, [row], REF)
    assert verdict.valid_indices == []
    assert len(verdict.failures) == 1
    return verdict.failures[0]


@pytest.mark.parametrize(
    ("changes", "reason", "expectation", "values", "detail"),
    [
        ({"order_id": ""}, "empty_id",
         "expect_multicolumn_values_to_not_be_blank(order_id)", {"order_id": ""},
         "order_id is empty"),
        ({"user_id": " \t"}, "empty_id",
         "expect_multicolumn_values_to_not_be_blank(user_id)", {"user_id": " \t"},
         "user_id is empty"),
        ({"amount_cents": 0}, "non_positive_amount",
         "expect_column_values_to_be_between(amount_cents)", {"amount_cents": 0},
         "amount_cents = 0"),
        ({"amount_cents": -300}, "non_positive_amount",
         "expect_column_values_to_be_between(amount_cents)", {"amount_cents": -300},
         "amount_cents = -300"),
        ({"currency": "EUR"}, "unsupported_currency",
         "expect_column_values_to_be_in_set(currency)", {"currency": "EUR"},
         "currency = 'EUR'"),
        ({"event_time": REF + HOUR + 1}, "future_event_time",
         "expect_column_values_to_be_between(event_time)", {"event_time": REF + HOUR + 1},
         "event_time is 1.0 h ahead of the watermark"),
    ],
)
def test_each_rule_names_reason_expectation_and_values(
    gate: QualityGate,
    changes: dict[str, Any],
    reason: str,
    expectation: str,
    values: dict[str, Any],
    detail: str,
) -> None:
    failure = only_failure(gate, topics.ORDER_PLACED, order(**changes))
    assert (failure.index, failure.reason, failure.expectation) == (0, reason, expectation)
    assert failure.values == values
    assert failure.detail == detail


def test_boundaries_pass(gate: QualityGate) -> None:
    rows = [
        order(amount_cents=1),
        order(event_time=REF + HOUR),  # exactly 1 h ahead is allowed
        order(user_id=None),  # a null id is not an empty string (rows.py ignores it too)
        order(order_id="x"),
    ]
    verdict = gate.check_rows(topics.ORDER_PLACED, rows, REF)
    assert verdict.valid_indices == [0, 1, 2, 3]
    assert verdict.failures == []


def test_valid_rows_keep_their_order_and_each_bad_row_fails_once(gate: QualityGate) -> None:
    rows = [
        order(event_id="a"),
        order(user_id="", amount_cents=-1, currency="GBP"),  # empty_id wins
        order(event_id="c"),
        order(amount_cents=0, currency="GBP", event_time=REF + 5 * HOUR),  # amount wins
        order(currency="GBP", event_time=REF + 5 * HOUR),  # currency wins
        order(event_id="f"),
        order(payment_method_id="", amount_cents=-5),  # an id after amount in the schema
    ]
    verdict = gate.check_rows(topics.ORDER_PLACED, rows, REF)
    assert verdict.valid_indices == [0, 2, 5]
    assert [(f.index, f.reason) for f in verdict.failures] == [
        (1, "empty_id"),
        (3, "non_positive_amount"),
        (4, "unsupported_currency"),
        (6, "empty_id"),
    ]
    assert verdict.failed_by_reason == {"empty_id": 2, "non_positive_amount": 1,
                                        "unsupported_currency": 1}


def test_unknown_enum_and_profile_time_field(gate: QualityGate) -> None:
    viewer = {"event_id": "e", "event_time": REF, "stream_id": "s", "seller_id": "x",
              "user_id": "u", "device": "SMART_TV"}
    failure = only_failure(gate, topics.VIEWER_JOINED, viewer)
    assert failure.reason == "unknown_enum"
    assert failure.values == {"device": "SMART_TV"}
    profile = {"user_id": "u", "updated_at": REF + 3 * HOUR, "account_created_at": REF,
               "country": "US", "is_verified": True, "risk_tier": "LOW"}
    failure = only_failure(gate, topics.USER_PROFILE, profile)
    assert failure.reason == "future_event_time"
    assert failure.expectation == "expect_column_values_to_be_between(updated_at)"
    # the future rule outranks unknown_enum
    failure = only_failure(gate, topics.USER_PROFILE, {**profile, "risk_tier": "EXTREME"})
    assert failure.reason == "future_event_time"


def test_configured_currencies(tmp_path: Path) -> None:
    gate = QualityGate.load(
        config=GateConfig(results_dir=tmp_path, currencies=frozenset({"USD", "EUR"}))
    )
    verdict = gate.check_rows(
        topics.ORDER_PLACED, [order(currency="EUR"), order(currency="GBP")], REF
    )
    assert verdict.valid_indices == [0]
    assert [f.reason for f in verdict.failures] == ["unsupported_currency"]


def test_empty_batch_unknown_subject_results_and_counters(gate: QualityGate) -> None:
    assert gate.check_rows(topics.BID_PLACED, [], REF).valid_indices == []
    with pytest.raises(DefinitionError, match="no row suite"):
        gate.check_rows("livestream.unknown", [order()], REF)
    before = gate.counters().get(("rows.livestream.order_placed", "rows_failed.empty_id"), 0)
    verdict = gate.check_rows(topics.ORDER_PLACED, [order(), order(event_id="")], REF)
    after = gate.counters()[("rows.livestream.order_placed", "rows_failed.empty_id")]
    assert after == before + 1
    stored = [r for r in ResultStore(gate.config.results_dir).results("rows")
              if r["result_id"] == verdict.result_id]
    assert len(stored) == 1
    assert (stored[0]["rows"], stored[0]["passed"], stored[0]["by_reason"]) == (
        2, 1, {"empty_id": 1})


def test_a_batch_gx_cannot_evaluate_is_quarantined_not_lost(gate: QualityGate) -> None:
    rows = [order(), order(amount_cents="12"), order(user_id="")]
    verdict = gate.check_rows(topics.ORDER_PLACED, rows, REF)
    assert verdict.valid_indices == []
    assert [(f.index, f.reason) for f in verdict.failures] == [
        (0, "gate_error"), (1, "gate_error"), (2, "empty_id")  # empty_id ranks first
    ]
    assert "could not be evaluated" in verdict.failures[0].detail


def test_suites_follow_the_schemas() -> None:
    """Every topic's suite checks each string *_id field in schema order, its time field and
    its enum symbols, so a schema change cannot silently leave the suites behind."""
    store = SchemaStore.load()
    suites = load_suite_files()
    time_field = {s.topic: s.timestamp_field for s in PIPELINE.event_sources}
    time_field.update({c.topic: c.timestamp_field for c in PIPELINE.changelogs})
    for subject in topics.REFERENCE_TOPICS:
        suite = suites[f"rows.{subject}"]
        fields = store.latest(subject).schema["fields"]
        ids = [f["name"] for f in fields if f["name"].endswith("_id") and f["type"] == "string"]
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for e in suite.expectations:
            by_reason.setdefault(e["meta"]["reason"], []).append(e)
        assert [expectation_columns(e) for e in by_reason["empty_id"]] == [ids]
        assert suite.meta["time_field"] == time_field[subject]
        enums = {f["name"]: f["type"]["symbols"] for f in fields
                 if isinstance(f["type"], dict) and f["type"].get("type") == "enum"}
        assert {e["kwargs"]["column"]: e["kwargs"]["value_set"]
                for e in by_reason.get("unknown_enum", [])} == enums


def test_a_suite_with_an_unknown_reason_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "rows.t.json").write_text(
        '{"name": "rows.t", "meta": {"level": "rows", "subject": "t", "time_field": "ts"},'
        ' "expectations": [{"type": "expect_column_values_to_not_be_null",'
        ' "kwargs": {"column": "a"}, "meta": {"reason": "broken"}}]}'
    )
    with pytest.raises(ConfigError, match=r"rows\.t\.json, key expectations\[0\]\.meta\.reason"):
        QualityGate.load(tmp_path, GateConfig(results_dir=tmp_path / "r"))


# -- agreement with quality/rows.py -------------------------------------------------------
_BLANKS = ["", " ", "\t", "  \n", "\u00a0", "\u2003 "]


def _good(rng: random.Random, schema: dict[str, Any], time_field: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in schema["fields"]:
        name, t = f["name"], f["type"]
        if name == time_field:
            row[name] = REF - rng.randint(0, 10 * HOUR)
        elif isinstance(t, dict) and t.get("type") == "enum":
            row[name] = rng.choice(t["symbols"])
        elif isinstance(t, dict):  # another timestamp-millis
            row[name] = REF - rng.randint(0, 1000 * HOUR)
        elif t == "string":
            row[name] = "USD" if name == "currency" else f"{name[:3]}-{rng.randint(0, 10**6)}"
        elif t == "boolean":
            row[name] = rng.random() < 0.5
        elif name == "amount_cents":
            row[name] = rng.randint(1, 500_000)
        else:
            row[name] = rng.randint(0, 1000)
    return row


def _spoil(rng: random.Random, row: dict[str, Any], time_field: str) -> None:
    ids = [k for k, v in row.items() if k.endswith("_id") and isinstance(v, str)]
    kinds = ["id", "future"] + (["amount", "currency"] if "amount_cents" in row else [])
    for kind in rng.sample(kinds, rng.randint(1, len(kinds))):
        if kind == "id":
            row[rng.choice(ids)] = rng.choice(_BLANKS)
        elif kind == "amount":
            row["amount_cents"] = rng.choice([0, -1, -rng.randint(1, 10**6)])
        elif kind == "currency":
            row["currency"] = rng.choice(["EUR", "usd", "", "GBP", "US D"])
        else:
            row[time_field] = REF + HOUR + rng.choice([1, 2, rng.randint(1, 100 * HOUR)])


def test_gx_suites_agree_with_rows_py(gate: QualityGate) -> None:
    store = SchemaStore.load()
    rules = RowRules()
    rng = random.Random(20240501)
    seen: dict[str, int] = {}
    for subject in topics.REFERENCE_TOPICS:
        time_field = load_suite_files()[f"rows.{subject}"].meta["time_field"]
        schema = store.latest(subject).schema
        rows = []
        for _ in range(1500):
            row = _good(rng, schema, time_field)
            if rng.random() < 0.5:
                _spoil(rng, row, time_field)
            elif rng.random() < 0.1:
                row[time_field] = REF + HOUR  # on the boundary: still valid
            rows.append(row)
        verdict = gate.check_rows(subject, rows, REF)
        expected = {i: rules.violation(r, time_field, REF) for i, r in enumerate(rows)}
        assert verdict.valid_indices == [i for i, v in expected.items() if v is None]
        got = {f.index: (f.reason, f.detail) for f in verdict.failures}
        assert got == {i: v for i, v in expected.items() if v is not None}
        for reason, _ in got.values():
            seen[reason] = seen.get(reason, 0) + 1
    # the generated traffic exercised every rule of rows.py many times
    assert set(seen) == {"empty_id", "non_positive_amount", "unsupported_currency",
                         "future_event_time"}
    assert min(seen.values()) > 100
