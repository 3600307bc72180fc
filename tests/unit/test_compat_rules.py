"""The reader/writer compatibility rules, case by case, from the Avro specification.

Each case names the rule of the specification's "Schema Resolution" section it
exercises. ``expected`` lists (rule id, location in the reader schema) of every
incompatibility; an empty list means the reader can read all the writer's data.
``notes`` lists rule ids of notes that must be present. ``fastavro`` says how
fastavro 1.13 behaves on real data for the cases the checker rejects: "fails"
(it raises on some written record) or "lenient" (it reads the data although
the specification says the schemas do not resolve; see docs/schema-changes.md).
test_compat_fastavro.py runs every case through fastavro.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipelines.errors import SchemaError
from schemas.compat import check_compatibility, check_nodes
from schemas.nodes import parse


def rec(*fields: dict[str, Any], name: str = "R", namespace: str | None = "t",
        **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "record", "name": name, "fields": list(fields), **extra}
    if namespace is not None:
        schema["namespace"] = namespace
    return schema


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(symbols: list[str], name: str = "E", **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def fixed(size: int, name: str = "F", **extra: Any) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size, **extra}


def dec(precision: int, scale: int, base: Any = "bytes") -> dict[str, Any]:
    if isinstance(base, dict):
        return {**base, "logicalType": "decimal", "precision": precision, "scale": scale}
    return {"type": base, "logicalType": "decimal", "precision": precision, "scale": scale}


def linked(*extra_fields: dict[str, Any], value: str = "long") -> dict[str, Any]:
    return rec(f("value", value), f("next", ["null", "Node"]), *extra_fields, name="Node")


@dataclass
class Case:
    id: str
    reader: Any
    writer: Any
    expected: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fastavro: str = "fails"


OK: list[tuple[str, str]] = []
MISMATCH = "type.mismatch"

CASES: list[Case] = [
    # --- primitives: "both schemas have same primitive type" and the promotions
    Case("primitive: same type int", "int", "int"),
    Case("primitive: same type string", "string", "string"),
    Case("promotion: int -> long", "long", "int"),
    Case("promotion: int -> float", "float", "int", notes=["promotion.lossy"]),
    Case("promotion: int -> double", "double", "int"),
    Case("promotion: long -> float", "float", "long", notes=["promotion.lossy"]),
    Case("promotion: long -> double", "double", "long", notes=["promotion.lossy"]),
    Case("promotion: float -> double", "double", "float"),
    Case("promotion: string -> bytes", "bytes", "string"),
    Case("promotion: bytes -> string", "string", "bytes"),
    Case("no promotion: long -> int (narrowing)", "int", "long", [(MISMATCH, "")]),
    Case("no promotion: double -> float", "float", "double", [(MISMATCH, "")]),
    Case("no promotion: float -> long", "long", "float", [(MISMATCH, "")]),
    Case("no promotion: string -> int", "int", "string", [(MISMATCH, "")]),
    Case("no promotion: int -> string", "string", "int", [(MISMATCH, "")]),
    Case("no promotion: boolean -> int", "int", "boolean", [(MISMATCH, "")]),
    Case("no promotion: null -> string", "string", "null", [(MISMATCH, "")]),
    # --- records: fields matched by name, writer-only ignored, reader-only need a default
    Case("record: identical", rec(f("a", "int")), rec(f("a", "int"))),
    Case("record: writer-only field is ignored",
         rec(f("a", "int")), rec(f("a", "int"), f("b", "string"))),
    Case("record: reader-only field with default",
         rec(f("a", "int"), f("b", "string", default="x")), rec(f("a", "int"))),
    Case("record: reader-only optional field with null default",
         rec(f("a", "int"), f("b", ["null", "string"], default=None)), rec(f("a", "int"))),
    Case("record: reader-only field without default",
         rec(f("a", "int"), f("b", "string")), rec(f("a", "int")),
         [("record.missing_default", "/fields/1")]),
    Case("record: field order may differ",
         rec(f("b", "string"), f("a", "int")), rec(f("a", "int"), f("b", "string"))),
    Case("record: field types resolved recursively (promotion)",
         rec(f("a", "long")), rec(f("a", "int"))),
    Case("record: field type mismatch",
         rec(f("x", "int"), f("a", "int")), rec(f("x", "int"), f("a", "string")),
         [(MISMATCH, "/fields/1/type")]),
    Case("record: reader field alias matches renamed writer field",
         rec(f("amount", "long", aliases=["amt"])), rec(f("amt", "long"))),
    Case("record: renamed field without alias and without default",
         rec(f("amount", "long")), rec(f("amt", "long")),
         [("record.missing_default", "/fields/0")]),
    Case("record: reader field name and alias match two writer fields",
         rec(f("a", "int", aliases=["b"])), rec(f("a", "int"), f("b", "int")),
         [("record.ambiguous_field", "/fields/0")]),
    Case("record: record name differs",
         rec(f("a", "int"), name="S"), rec(f("a", "int")), [("name.mismatch", "/name")]),
    Case("record: reader alias (relative to its namespace) matches writer's full name",
         rec(f("a", "int"), name="S", aliases=["R"]), rec(f("a", "int"))),
    Case("record: reader alias fully qualified matches writer in another namespace",
         rec(f("a", "int"), name="S", aliases=["old.R"]), rec(f("a", "int"), namespace="old")),
    Case("record: relative alias does not match a writer in another namespace",
         rec(f("a", "int"), name="S", aliases=["R"]), rec(f("a", "int"), namespace="old"),
         [("name.mismatch", "/name")], fastavro="lenient"),  # fastavro: unqualified alias
    Case("names: namespace-only change matches on unqualified name",
         rec(f("a", "int"), namespace="new"), rec(f("a", "int"), namespace="old"),
         notes=["name.namespace_changed"]),
    Case("names: null namespace vs namespace, unqualified names equal",
         rec(f("a", "int"), namespace=None), rec(f("a", "int"))),
    Case("record: nested record's reader-only field without default",
         rec(f("inner", rec(f("x", "int"), f("y", "int"), name="In"))),
         rec(f("inner", rec(f("x", "int"), name="In"))),
         [("record.missing_default", "/fields/0/type/fields/1")]),
    Case("names: short reference resolved in the enclosing namespace",
         rec(f("a", rec(f("x", "int"), name="In")), f("b", "In")),
         rec(f("a", rec(f("x", "int"), name="In")), f("b", "t.In"))),
    Case("names: dotted record name sets the namespace of nested short names",
         {"type": "record", "name": "a.b.Outer", "namespace": "ignored", "fields": [
             f("e", enum(["X"], name="Kind")), f("e2", "a.b.Kind")]},
         {"type": "record", "name": "Outer", "namespace": "a.b", "fields": [
             f("e", enum(["X"], name="Kind")), f("e2", "Kind")]}),
    Case("record: a named type used twice is reported once, at its definition",
         rec(f("p", rec(f("x", "int"), f("y", "int"), name="P")), f("q", "P")),
         rec(f("p", rec(f("x", "int"), name="P")), f("q", "P")),
         [("record.missing_default", "/fields/0/type/fields/1")]),
    Case("record: 'error' type resolves like a record",
         {"type": "error", "name": "Oops", "fields": [f("m", "string")]},
         {"type": "error", "name": "Oops", "fields": [f("m", "string"), f("c", "int")]}),
    # --- enums
    Case("enum: same symbols", enum(["A", "B"]), enum(["A", "B"])),
    Case("enum: reader adds a symbol", enum(["A", "B", "C"]), enum(["A", "B"])),
    Case("enum: symbol order may differ", enum(["B", "A"]), enum(["A", "B"])),
    Case("enum: writer symbol missing in reader without default",
         rec(f("e", enum(["A", "B"]))), rec(f("e", enum(["A", "B", "C"]))),
         [("enum.missing_symbol", "/fields/0/type/symbols")]),
    Case("enum: writer symbol missing in reader with reader default",
         enum(["A", "B", "UNKNOWN"], default="UNKNOWN"), enum(["A", "B", "C"]),
         notes=["enum.default_used"]),
    Case("enum: top-level enum missing symbol", enum(["A"]), enum(["A", "B"]),
         [("enum.missing_symbol", "/symbols")]),
    Case("enum: name differs", enum(["A"], name="E2"), enum(["A"]), [("name.mismatch", "/name")]),
    Case("enum: reader alias matches renamed enum", enum(["A"], name="E2", aliases=["E"]),
         enum(["A"])),
    Case("enum: enum vs string", rec(f("e", "string")), rec(f("e", enum(["A"]))),
         [(MISMATCH, "/fields/0/type")]),
    # --- fixed
    Case("fixed: same name and size", fixed(4), fixed(4)),
    Case("fixed: size differs", rec(f("h", fixed(8))), rec(f("h", fixed(4))),
         [("fixed.size_mismatch", "/fields/0/type/size")]),
    Case("fixed: name differs", fixed(4, name="G"), fixed(4), [("name.mismatch", "/name")]),
    Case("fixed: fixed vs bytes (no promotion)", "bytes", fixed(4), [(MISMATCH, "")]),
    # --- arrays and maps
    Case("array: items resolved recursively (promotion)",
         {"type": "array", "items": "double"}, {"type": "array", "items": "int"}),
    Case("array: items mismatch",
         {"type": "array", "items": "int"}, {"type": "array", "items": "string"},
         [(MISMATCH, "/items")]),
    Case("array: items are records, reader-only field without default",
         {"type": "array", "items": rec(f("a", "int"), f("b", "int"))},
         {"type": "array", "items": rec(f("a", "int"))},
         [("record.missing_default", "/items/fields/1")]),
    Case("map: values resolved recursively (promotion)",
         {"type": "map", "values": "long"}, {"type": "map", "values": "int"}),
    Case("map: values mismatch",
         rec(f("m", {"type": "map", "values": "boolean"})),
         rec(f("m", {"type": "map", "values": "string"})),
         [(MISMATCH, "/fields/0/type/values")]),
    Case("array vs map", {"type": "map", "values": "int"}, {"type": "array", "items": "int"},
         [(MISMATCH, "")]),
    # --- unions
    Case("union: non-union writer, reader union containing it",
         rec(f("a", ["null", "string"])), rec(f("a", "string"))),
    Case("union: non-union writer, first matching reader branch by promotion",
         rec(f("a", ["null", "long"])), rec(f("a", "int"))),
    Case("union: non-union writer, no reader branch matches",
         rec(f("a", ["null", "string"])), rec(f("a", "int")),
         [("union.no_matching_branch", "/fields/0/type")]),
    Case("union: writer union, reader union superset",
         rec(f("a", ["null", "string", "int"])), rec(f("a", ["string", "null"]))),
    Case("union: writer union branch missing in reader union",
         rec(f("a", ["null", "string"])), rec(f("a", ["null", "int"])),
         [("union.writer_branch_unreadable", "/fields/0/type")]),
    Case("union: writer union, non-union reader matching every branch",
         "double", ["int", "long", "float"]),
    Case("union: writer union, non-union reader missing the null branch",
         rec(f("a", "string")), rec(f("a", ["null", "string"])),
         [("union.writer_branch_unreadable", "/fields/0/type")]),
    Case("union: first matching reader branch wins (not any compatible one)",
         ["null", rec(f("x", "int"), name="A", aliases=["B"]), rec(f("y", "int"), name="B")],
         rec(f("y", "int"), name="B"),
         [("record.missing_default", "/1/fields/0")]),
    Case("union: first match is a promotion although an exact branch follows",
         ["null", "double", "int"], "int", notes=["union.first_match"]),
    Case("union: record branch renamed with a reader alias",
         rec(f("p", ["null", rec(f("x", "int"), name="New", aliases=["Old"])])),
         rec(f("p", ["null", rec(f("x", "int"), name="Old")]))),
    # --- logical types: resolved by the underlying type, except decimal
    Case("logical: timestamp-millis read as plain long",
         "long", {"type": "long", "logicalType": "timestamp-millis"},
         notes=["logical.changed"]),
    Case("logical: timestamp-millis vs timestamp-micros resolves (meaning changes)",
         {"type": "long", "logicalType": "timestamp-micros"},
         {"type": "long", "logicalType": "timestamp-millis"}, notes=["logical.changed"]),
    Case("logical: date (int) promoted to long",
         "long", {"type": "int", "logicalType": "date"}, notes=["logical.changed"]),
    Case("logical: uuid string read as string", "string",
         {"type": "string", "logicalType": "uuid"}),
    Case("logical: decimal same precision and scale", dec(10, 2), dec(10, 2)),
    Case("logical: decimal precision differs", rec(f("d", dec(12, 2))), rec(f("d", dec(10, 2))),
         [("decimal.mismatch", "/fields/0/type")], fastavro="lenient"),
    Case("logical: decimal scale differs", dec(10, 3), dec(10, 2),
         [("decimal.mismatch", "")], fastavro="lenient"),
    Case("logical: decimal reader, plain bytes writer", dec(10, 2), "bytes",
         notes=["logical.changed"]),
    Case("logical: decimal on fixed with different sizes",
         dec(4, 2, fixed(4)), dec(4, 2, fixed(3)), [("fixed.size_mismatch", "/size")]),
    # --- recursive types
    Case("recursive: identical linked list", linked(), linked()),
    Case("recursive: reader adds field with default", linked(f("tag", "string", default="")),
         linked()),
    Case("recursive: reader adds field without default (reported once)",
         linked(f("tag", "string")), linked(), [("record.missing_default", "/fields/2")]),
    Case("recursive: value promoted int -> long", linked(), linked(value="int")),
    Case("recursive: value narrowed long -> int", linked(value="int"), linked(),
         [(MISMATCH, "/fields/0/type")]),
    Case("recursive: mutually recursive records",
         rec(f("b", rec(f("a", ["null", "A"]), f("n", "long"), name="B")), name="A"),
         rec(f("b", rec(f("a", ["null", "A"]), f("n", "int"), name="B")), name="A")),
    # --- top-level unions and containers
    Case("top-level union: both unions with promotion", ["null", "long"], ["null", "int"]),
    Case("top-level array: enum items missing a symbol",
         {"type": "array", "items": enum(["A"])}, {"type": "array", "items": enum(["A", "B"])},
         [("enum.missing_symbol", "/items/symbols")]),
]


def test_matrix_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule(case: Case) -> None:
    result = check_compatibility(case.reader, case.writer)
    got = [(i.rule, i.location) for i in result.incompatibilities]
    assert got == case.expected
    assert result.compatible is (not case.expected)
    note_rules = {n.rule for n in result.notes}
    assert set(case.notes) <= note_rules
    for inc in result.incompatibilities:
        # A sentence a person can act on, on either side.
        assert inc.problem.endswith(".") and len(inc.problem) > 40
        assert inc.fix and inc.writer_fix
    assert result.to_dict()["compatible"] is result.compatible


def test_missing_default_message_names_field_and_fix() -> None:
    result = check_compatibility(rec(f("a", "int"), f("channel", "string")), rec(f("a", "int")))
    (inc,) = result.incompatibilities
    assert "`channel`" in inc.problem and "record t.R" in inc.problem
    assert inc.fix.startswith("add a default to field `channel`")
    assert inc.writer_fix == "keep writing field `channel` (the reader has no default for it)"


def test_union_branch_location_in_writer() -> None:
    result = check_compatibility(rec(f("a", ["null", "string"])), rec(f("a", ["null", "int"])))
    (inc,) = result.incompatibilities
    assert inc.writer_location == "/fields/0/type/1"
    assert "int" in inc.problem


@pytest.mark.parametrize("schema", [
    {"type": "enum", "name": "E", "symbols": ["A", "A"]},
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "Missing"}]},
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]},
    dec(2, 5),
    42,
], ids=["duplicate enum symbol", "undefined name", "bad default",
        "decimal scale above precision", "not a schema"])
def test_invalid_schema_is_rejected(schema: Any) -> None:
    with pytest.raises(SchemaError) as info:
        check_compatibility(schema, "int", reader_label="new.avsc")
    assert "new.avsc" in str(info.value)


def test_invalid_decimal_annotation_is_ignored_when_resolving() -> None:
    # The specification says to ignore an invalid decimal and use the underlying
    # type. Files with one are refused earlier (fastavro, like the SchemaStore,
    # rejects them), so this rule only shows on already parsed type graphs.
    reader, writer = parse(dec(2, 5)), parse(dec(3, 7))
    assert not reader.valid_decimal() and not writer.valid_decimal()
    assert check_nodes(reader, writer).compatible
    assert not check_nodes(parse(dec(3, 2)), parse(dec(4, 2))).compatible


def test_decimal_precision_limited_by_fixed_size() -> None:
    # floor(log10(2^(8*2-1) - 1)) = floor(log10(32767)) = 4 digits fit in 2 bytes.
    assert parse(dec(4, 0, fixed(2))).valid_decimal()
    assert not parse(dec(5, 0, fixed(2))).valid_decimal()
