"""Which features a schema change breaks (schemas.impact and its use in the check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import DefinitionError
from schemas import impact
from schemas.check import check_repository
from schemas.impact import FieldUsage, check_usage, feature_impact, field_changes

TS = {"type": "long", "logicalType": "timestamp-millis"}


def bid(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "BidPlaced", "namespace": "t", "fields": list(fields)}


def fd(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


V1 = bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "int"),
         fd("currency", "string"))
USAGE = {"shop.bids": {"amount_cents": ["user_bid_amount_sum_1h"],
                       "user_id": ["user_bid_count_5m", "user_bid_amount_sum_1h"],
                       "event_time": ["user_bid_count_5m"]}}


@pytest.mark.parametrize(("new", "expected"), [
    (bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "int"),
         fd("currency", "string", doc="ISO 4217")), []),
    (bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "int")),
     [("currency", "removed")]),
    (bid(fd("event_time", TS), fd("buyer_id", "string", aliases=["user_id"]),
         fd("amount_cents", "int"), fd("currency", "string")), [("user_id", "renamed")]),
    (bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "long"),
         fd("currency", "string")), [("amount_cents", "widened")]),
    (bid(fd("event_time", TS), fd("user_id", ["null", "string"], default=None),
         fd("amount_cents", "int"), fd("currency", "string")), [("user_id", "retyped")]),
    (bid(fd("event_time", {"type": "long", "logicalType": "timestamp-micros"}),
         fd("user_id", "string"), fd("amount_cents", "int"), fd("currency", "string")),
     [("event_time", "retyped")]),
    (bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "string"),
         fd("currency", "string"), fd("channel", "string", default="web")),
     [("amount_cents", "retyped")]),
    (bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "int"),
         fd("currency", {"type": "enum", "name": "Cur", "symbols": ["USD", "EUR"]})),
     [("currency", "retyped")]),
], ids=["doc only", "removed", "renamed with alias", "widened int to long",
        "made nullable", "logical type changed", "retyped, field added", "string to enum"])
def test_field_changes(new: Any, expected: list[tuple[str, str]]) -> None:
    assert [(c.field, c.change) for c in field_changes(V1, new)] == expected


def test_enum_symbol_changes_are_reported_not_breaking() -> None:
    def tier(*symbols: str) -> dict[str, Any]:
        return bid(fd("tier", {"type": "enum", "name": "Tier", "symbols": list(symbols)}))

    (change,) = field_changes(tier("LOW", "HIGH"), tier("LOW", "HIGH", "BLOCKED"))
    assert (change.change, change.breaking) == ("symbols", False)
    assert change.new_type == "enum t.Tier [LOW, HIGH, BLOCKED]"
    renamed_enum = bid(fd("tier", {"type": "enum", "name": "Level", "symbols": ["LOW"]}))
    (change,) = field_changes(tier("LOW"), renamed_enum)
    assert (change.change, change.breaking) == ("retyped", True)


def test_feature_impact_names_features_and_breaking() -> None:
    new = bid(fd("event_time", TS), fd("amount_cents", "long"), fd("currency", "string"))
    impacts = feature_impact("shop.bids", V1, new, USAGE)
    assert [(i.field, i.change, i.breaking) for i in impacts] == [
        ("user_id", "removed", True), ("amount_cents", "widened", False)]
    assert impacts[0].features == ("user_bid_amount_sum_1h", "user_bid_count_5m")
    assert "user_bid_count_5m" in impacts[0].message
    assert "add a new field" in impacts[0].fix


def test_unused_changed_field_is_no_impact() -> None:
    new = bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "int"))
    assert feature_impact("shop.bids", V1, new, USAGE) == []


def write(root: Path, *versions: Any) -> None:
    folder = root / "schemas" / "avro" / "shop.bids"
    folder.mkdir(parents=True)
    for n, schema in enumerate(versions, 1):
        (folder / f"v{n}.avsc").write_text(json.dumps(schema))


def test_check_fails_when_a_feature_would_break(tmp_path: Path) -> None:
    # Removing amount_cents is BACKWARD compatible (writer-only field), yet a feature reads it.
    v2 = bid(fd("event_time", TS), fd("user_id", "string"), fd("currency", "string"))
    write(tmp_path, V1, v2)
    report = check_repository(tmp_path, usage=USAGE)
    assert all(c.result.compatible for s in report.subjects for c in s.comparisons)
    (problem,) = report.problems
    assert (problem.kind, problem.rule) == ("feature_break", "field.removed")
    assert "user_bid_amount_sum_1h" in problem.message and "`amount_cents`" in problem.message
    assert "(from v1 to v2)" in problem.message


def test_check_flags_features_reading_a_field_the_schema_lacks(tmp_path: Path) -> None:
    write(tmp_path, V1)
    usage = {"shop.bids": {"seller_id": ["seller_gmv_1h"]}, "shop.gone": {"x": ["f"]}}
    report = check_repository(tmp_path, usage=usage)
    (problem,) = report.problems
    assert problem.rule == "field.missing" and "seller_gmv_1h" in problem.message
    assert report.notes == ["field usage names subject 'shop.gone', which has no schemas"]


def test_check_widening_is_reported_but_passes(tmp_path: Path) -> None:
    v2 = bid(fd("event_time", TS), fd("user_id", "string"), fd("amount_cents", "long"),
             fd("currency", "string"))
    write(tmp_path, V1, v2)
    report = check_repository(tmp_path, usage=USAGE)
    assert report.ok
    assert [(i.field, i.change) for i in report.subjects[0].impacts] == [
        ("amount_cents", "widened")]


def test_provider_note_when_registry_module_is_missing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impact, "REGISTRY_MODULE", "pipelines.features.no_such_registry")
    result = impact.load_field_usage()
    assert result.usage is None
    assert result.note is not None and "feature impact not checked" in result.note
    write(tmp_path, V1)
    report = check_repository(tmp_path)
    assert report.ok and report.notes == [result.note]


def test_check_uses_the_provider_when_no_usage_is_given(tmp_path: Path) -> None:
    write(tmp_path, V1, bid(fd("event_time", TS), fd("currency", "string"),
                            fd("amount_cents", "int")))
    report = check_repository(tmp_path, usage_provider=lambda: FieldUsage(USAGE))
    assert [p.rule for p in report.problems] == ["field.removed"]


@pytest.mark.parametrize("usage", [["x"], {"s": ["f"]}, {"s": {"f": "feature"}}],
                         ids=["not a mapping", "fields not a mapping", "features a string"])
def test_malformed_usage_is_a_definition_error(usage: Any) -> None:
    with pytest.raises(DefinitionError):
        check_usage(usage)
