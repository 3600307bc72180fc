"""Cross-check the compatibility rules against real data resolution with fastavro.

For every case of the rule matrix the checker calls compatible, records
written with the writer schema (one per union branch and enum symbol) are read
back with ``schemaless_reader(writer, reader)`` and must come back with exactly
the reader's fields. For the cases it calls incompatible, fastavro must fail on
at least one such record, except the documented cases where fastavro is more
lenient than the specification (marked "lenient").

Logical types are stripped before writing: resolution works on the underlying
types (the specification says logical types are encoded as them), and the
generated values are plain ints, bytes and strings.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.compat import check_compatibility
from schemas.store import strip_logical_types
from tests.unit.test_compat_rules import CASES, Case

PRIMITIVE_VALUES: dict[str, Any] = {
    "null": None, "boolean": True, "int": 7, "long": 7, "float": 1.5, "double": 2.25,
    "bytes": b"ab", "string": "s",
}
VARIANTS = 6  # enough to select each branch / symbol of the cases' unions and enums


def _branch_name(branch: Any, named: dict[str, Any]) -> str:
    if isinstance(branch, str):
        return branch
    kind = branch["type"]
    return str(branch["name"]) if kind in ("record", "error", "enum", "fixed") else str(kind)


def sample(schema: Any, named: dict[str, Any], k: int, depth: int = 0) -> Any:
    """A value of ``schema``; ``k`` selects union branches and enum symbols."""
    if isinstance(schema, str):
        if schema in PRIMITIVE_VALUES:
            return PRIMITIVE_VALUES[schema]
        return sample(named[schema], named, k, depth)
    if isinstance(schema, list):
        branches = schema
        if depth > 3 and "null" in branches:  # stop recursive types
            return None
        branch = branches[k % len(branches)]
        # Tuple notation makes fastavro write exactly this branch.
        return (_branch_name(branch, named), sample(branch, named, k, depth + 1))
    kind = schema["type"]
    if kind in ("record", "error"):
        return {fd["name"]: sample(fd["type"], named, k + i, depth + 1)
                for i, fd in enumerate(schema["fields"])}
    if kind == "enum":
        return schema["symbols"][k % len(schema["symbols"])]
    if kind == "fixed":
        return b"\x01" * schema["size"]
    if kind == "array":
        return [sample(schema["items"], named, k + i, depth + 1) for i in range(2)]
    if kind == "map":
        return {"a": sample(schema["values"], named, k, depth + 1)}
    return PRIMITIVE_VALUES[kind]


def roundtrip(case: Case) -> list[Any]:
    """Write VARIANTS records with the writer and read each with the reader.

    Returns, per record, the value read or the exception fastavro raised.
    """
    named_w: dict[str, Any] = {}
    writer = parse_schema(strip_logical_types(case.writer), named_schemas=named_w)
    reader = parse_schema(strip_logical_types(case.reader), named_schemas={})
    outcomes: list[Any] = []
    for k in range(VARIANTS):
        buf = io.BytesIO()
        schemaless_writer(buf, writer, sample(writer, named_w, k))  # must not fail
        buf.seek(0)
        try:
            outcomes.append(schemaless_reader(buf, writer, reader))
        except Exception as exc:  # what fastavro raises varies with the rule
            outcomes.append(exc)
    return outcomes


def _reader_fields(schema: Any) -> set[str] | None:
    if isinstance(schema, dict) and schema.get("type") in ("record", "error"):
        return {fd["name"] for fd in schema["fields"]}
    return None


COMPATIBLE = [c for c in CASES if not c.expected]
INCOMPATIBLE = [c for c in CASES if c.expected and c.fastavro == "fails"]
LENIENT = [c for c in CASES if c.expected and c.fastavro == "lenient"]


@pytest.mark.parametrize("case", COMPATIBLE, ids=[c.id for c in COMPATIBLE])
def test_compatible_pairs_resolve_in_fastavro(case: Case) -> None:
    assert check_compatibility(case.reader, case.writer).compatible
    outcomes = roundtrip(case)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors[0]
    fields = _reader_fields(case.reader)
    if fields is not None:
        assert all(set(o) == fields for o in outcomes)


@pytest.mark.parametrize("case", INCOMPATIBLE, ids=[c.id for c in INCOMPATIBLE])
def test_incompatible_pairs_fail_in_fastavro(case: Case) -> None:
    assert not check_compatibility(case.reader, case.writer).compatible
    outcomes = roundtrip(case)
    assert any(isinstance(o, Exception) for o in outcomes), outcomes


@pytest.mark.parametrize("case", LENIENT, ids=[c.id for c in LENIENT])
def test_documented_fastavro_leniency(case: Case) -> None:
    """fastavro reads these; the specification (and the checker) rejects them."""
    assert not check_compatibility(case.reader, case.writer).compatible
    outcomes = roundtrip(case)
    assert not any(isinstance(o, Exception) for o in outcomes)


def test_cross_check_covers_most_cases() -> None:
    assert len(COMPATIBLE) >= 40 and len(INCOMPATIBLE) >= 25
