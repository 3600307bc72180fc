"""Can a reader schema read data written with a writer schema? Avro schema resolution, statically.

The rules are those of the Avro specification, section "Schema Resolution",
applied to every value the writer could write (not just to one record):

* the two schemas must *match*: same primitive type, or a promotion (int to
  long, float or double; long to float or double; float to double; string to
  bytes and back), or both arrays/maps whose items/values match, or both
  records/enums/fixed with the same **unqualified** name (or a reader alias
  equal to the writer's full name; aliases are qualified with the namespace of
  the name they alias), fixed also with the same size, or either is a union;
* records: fields are matched by name, or by a reader field's aliases; writer
  fields the reader lacks are skipped; a reader field the writer lacks needs a
  ``default``;
* enums: every writer symbol must be a reader symbol, unless the reader enum
  has a ``default``;
* unions: each writer branch is resolved against the *first* reader branch it
  matches (a non-union writer against the first matching branch of a reader
  union); a union writer read by a non-union reader needs every branch to match;
* logical types do not change resolution (the values are encoded as their
  underlying type), except ``decimal``: two valid decimals match only with the
  same precision and scale. A changed logical type on the same underlying type
  resolves but changes the meaning of values, so it is reported as a note.

Recursive types are walked once per (reader, writer) pair of named types.
Every incompatibility names the place in the *reader* schema as a JSON pointer
(``/fields/1/type/symbols``), the place in the writer schema, what changed and
why that breaks, and how to fix it on either side.

>>> writer = {"type": "record", "name": "Bid", "fields": [{"name": "amount", "type": "int"}]}
>>> reader = {"type": "record", "name": "Bid", "fields": [
...     {"name": "amount", "type": "long"}, {"name": "currency", "type": "string"}]}
>>> result = check_compatibility(reader, writer)
>>> result.compatible, result.incompatibilities[0].rule, result.incompatibilities[0].location
(False, 'record.missing_default', '/fields/1')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from schemas.nodes import NAMED, TypeNode, parse
from schemas.store import build_version

PROMOTIONS: frozenset[tuple[str, str]] = frozenset({
    ("int", "long"), ("int", "float"), ("int", "double"),
    ("long", "float"), ("long", "double"),
    ("float", "double"),
    ("string", "bytes"), ("bytes", "string"),
})
"""(writer type, reader type) pairs the specification allows to be promoted."""

_LOSSY = frozenset({("int", "float"), ("long", "float"), ("long", "double")})


@dataclass(frozen=True)
class Incompatibility:
    """One reason the reader cannot read (some of) the writer's data.

    Attributes:
        rule: machine-readable rule id, e.g. ``enum.missing_symbol``.
        location: JSON pointer into the reader schema (``""`` is the whole schema).
        writer_location: JSON pointer into the writer schema.
        problem: what differs and why reading fails.
        fix: what to change in the reader schema.
        writer_fix: what to change in the writer schema instead.
    """

    rule: str
    location: str
    writer_location: str
    problem: str
    fix: str
    writer_fix: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Note:
    """A difference that resolves but deserves a look (precision loss, changed meaning...)."""

    rule: str
    location: str
    writer_location: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class CompatibilityResult:
    """The outcome of resolving a writer schema to a reader schema."""

    incompatibilities: tuple[Incompatibility, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def compatible(self) -> bool:
        """True when the reader can read every value the writer can write."""
        return not self.incompatibilities

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "compatible": self.compatible,
            "incompatibilities": [i.to_dict() for i in self.incompatibilities],
            "notes": [n.to_dict() for n in self.notes],
        }


def names_match(reader: TypeNode, writer: TypeNode) -> bool:
    """The specification's name rule for records, enums and fixed.

    Unqualified names are compared; a reader alias (qualified) equal to the
    writer's full name also matches, since aliases rewrite the writer's names.
    """
    return reader.name == writer.name or writer.fullname in reader.aliases


def _decimals_differ(reader: TypeNode, writer: TypeNode) -> bool:
    if not (reader.valid_decimal() and writer.valid_decimal()):
        return False
    return (reader.precision, reader.scale or 0) != (writer.precision, writer.scale or 0)


def matches(reader: TypeNode, writer: TypeNode) -> bool:
    """Whether two schemas *match* in the specification's sense (used to pick union branches)."""
    if reader.kind == "union" or writer.kind == "union":
        return True
    if reader.kind != writer.kind:
        return (writer.kind, reader.kind) in PROMOTIONS
    if reader.kind == "array" and reader.items and writer.items:
        return matches(reader.items, writer.items)
    if reader.kind == "map" and reader.values and writer.values:
        return matches(reader.values, writer.values)
    if reader.kind in NAMED and not names_match(reader, writer):
        return False
    if reader.kind == "fixed" and reader.size != writer.size:
        return False
    return not _decimals_differ(reader, writer)


def _first_match(branches: list[TypeNode], writer: TypeNode) -> TypeNode | None:
    return next((b for b in branches if matches(b, writer)), None)


def _kinds(node: TypeNode) -> str:
    return "/".join(sorted({b.kind for b in node.branches})) if node.kind == "union" else node.kind


class _Resolver:
    """Walks a reader and a writer type graph together and collects problems."""

    def __init__(self) -> None:
        self.problems: list[Incompatibility] = []
        self.notes: list[Note] = []
        self._seen: set[tuple[int, int]] = set()

    def fail(self, rule: str, reader: TypeNode, writer: TypeNode, problem: str, fix: str,
             writer_fix: str, *, suffix: str = "", writer_suffix: str = "") -> None:
        item = Incompatibility(rule, reader.pointer + suffix, writer.pointer + writer_suffix,
                               problem, fix, writer_fix)
        if item not in self.problems:
            self.problems.append(item)

    def note(self, rule: str, reader: TypeNode, writer: TypeNode, message: str) -> None:
        item = Note(rule, reader.pointer, writer.pointer, message)
        if item not in self.notes:
            self.notes.append(item)

    def resolve(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        if writer.kind == "union":
            self._writer_union(reader, writer, where)
        elif reader.kind == "union":
            branch = _first_match(reader.branches, writer)
            if branch is None:
                self.fail(
                    "union.no_matching_branch", reader, writer,
                    f"{where}: the writer writes {writer.describe()}, and no branch of the "
                    f"reader's {reader.describe()} matches it, so no value can be read.",
                    f"add {writer.kind if writer.kind not in NAMED else writer.fullname} (or a "
                    f"type it promotes to) to the reader's union at {reader.pointer or '/'}",
                    f"write one of the reader's union branches ({_kinds(reader)}) instead of "
                    f"{writer.describe()}",
                )
                return
            if branch.kind != writer.kind and any(b.kind == writer.kind for b in reader.branches):
                self.note("union.first_match", branch, writer,
                          f"{where}: the writer's {writer.kind} is read as the reader union's "
                          f"first matching branch {branch.kind}, not as its {writer.kind} branch; "
                          f"put the {writer.kind} branch first to keep the type")
            self.resolve(branch, writer, where)
        else:
            self._same_kind_or_promotion(reader, writer, where)

    def _writer_union(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        for i, branch in enumerate(writer.branches):
            label = f"{where} (writer union branch {i}, {branch.describe()})"
            if reader.kind == "union":
                target = _first_match(reader.branches, branch)
            else:
                target = reader if matches(reader, branch) else None
            if target is None:
                self.fail(
                    "union.writer_branch_unreadable", reader, branch,
                    f"{where}: the writer may write {branch.describe()} (branch {i} of its "
                    f"union), which the reader's {reader.describe()} cannot read.",
                    f"make the reader's type at {reader.pointer or '/'} a union that includes "
                    f"{branch.kind if branch.kind not in NAMED else branch.fullname}",
                    f"remove branch {branch.describe()} from the writer's union, or write only "
                    f"types the reader accepts ({_kinds(reader)})",
                )
            else:
                self.resolve(target, branch, label)

    def _same_kind_or_promotion(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        if reader.kind != writer.kind:
            if (writer.kind, reader.kind) in PROMOTIONS:
                if (writer.kind, reader.kind) in _LOSSY:
                    self.note("promotion.lossy", reader, writer,
                              f"{where}: {writer.kind} values are promoted to {reader.kind}; "
                              "large values lose precision")
                self._logical(reader, writer, where)
                return
            self._type_mismatch(reader, writer, where)
            return
        if reader.kind in NAMED:
            key = (id(reader), id(writer))
            if key in self._seen:  # recursive type, or a type reached twice: checked already
                return
            self._seen.add(key)
            if not names_match(reader, writer):
                self._name_mismatch(reader, writer, where)
                return
            if reader.namespace != writer.namespace and writer.fullname not in reader.aliases:
                self.note("name.namespace_changed", reader, writer,
                          f"{where}: {writer.fullname} is read as {reader.fullname}; the "
                          "specification matches unqualified names, but implementations that "
                          "compare full names will refuse it; add "
                          f"\"{writer.fullname}\" to the reader's aliases to be explicit")
        self._logical(reader, writer, where)
        if reader.kind == "record":
            self._record(reader, writer, where)
        elif reader.kind == "enum":
            self._enum(reader, writer, where)
        elif reader.kind == "fixed" and reader.size != writer.size:
            self.fail(
                "fixed.size_mismatch", reader, writer,
                f"{where}: fixed {reader.fullname} has size {reader.size} in the reader but "
                f"{writer.size} in the writer; a fixed is read byte for byte, so the sizes must "
                "be equal.",
                f"keep size {writer.size} in the reader; to change the size, add a new field "
                "with a new fixed type",
                f"keep writing size {reader.size}; add a new field for the new size",
                suffix="/size", writer_suffix="/size",
            )
        elif reader.kind == "array" and reader.items and writer.items:
            self.resolve(reader.items, writer.items, f"the items of {where}")
        elif reader.kind == "map" and reader.values and writer.values:
            self.resolve(reader.values, writer.values, f"the values of {where}")

    def _type_mismatch(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        readable = sorted(w for (w, r) in PROMOTIONS if r == reader.kind)
        accepted = [reader.kind, *readable] if reader.kind not in NAMED else [reader.fullname]
        self.fail(
            "type.mismatch", reader, writer,
            f"{where}: the writer writes {writer.describe()} but the reader expects "
            f"{reader.describe()}; Avro cannot convert {writer.kind} to {reader.kind}.",
            f"change the reader's type back to {writer.describe()} (or a type it promotes to), "
            f"or to a union containing it; to change a field's type, add a new field instead",
            f"write {' or '.join(accepted)} here, as the reader expects",
        )

    def _name_mismatch(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        self.fail(
            "name.mismatch", reader, writer,
            f"{where}: the reader's {reader.kind} is named {reader.fullname} but the writer's is "
            f"{writer.fullname}; named types are matched by name.",
            f"keep the name {writer.name}, or add \"{writer.fullname}\" to the \"aliases\" of "
            f"{reader.fullname}",
            f"keep the name {reader.name} the reader expects",
            suffix="/name", writer_suffix="/name",
        )

    def _logical(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        if _decimals_differ(reader, writer):
            self.fail(
                "decimal.mismatch", reader, writer,
                f"{where}: decimal({writer.precision}, {writer.scale or 0}) written, "
                f"decimal({reader.precision}, {reader.scale or 0}) expected; decimals match "
                "only with the same precision and scale.",
                f"keep precision {writer.precision} and scale {writer.scale or 0} in the reader",
                f"keep precision {reader.precision} and scale {reader.scale or 0} in the writer",
            )
        elif reader.logical != writer.logical and reader.kind not in ("union", "record"):
            self.note("logical.changed", reader, writer,
                      f"{where}: logical type {writer.logical or 'none'} written, "
                      f"{reader.logical or 'none'} expected; values resolve as "
                      f"{writer.kind} but their meaning changes")

    def _record(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        by_name = {f.name: f for f in writer.fields}
        for rf in reader.fields:
            found = [by_name[n] for n in dict.fromkeys((rf.name, *rf.aliases)) if n in by_name]
            field_where = f"field `{rf.name}` of record {reader.fullname}"
            if len(found) > 1:
                names = ", ".join(f"`{f.name}`" for f in found)
                self.fail(
                    "record.ambiguous_field", reader, writer,
                    f"{field_where}: its name and aliases match several writer fields "
                    f"({names}), so the reader cannot tell which one to read.",
                    f"remove the aliases of `{rf.name}` that name other writer fields",
                    f"write only one of {names}",
                    suffix=f"/fields/{rf.index}",
                )
            elif found:
                self.resolve(rf.type, found[0].type, field_where)
            elif not rf.has_default:
                self.fail(
                    "record.missing_default", reader, writer,
                    f"{field_where}: the reader has field `{rf.name}` without a default and the "
                    f"writer's record {writer.fullname} does not write it, so records from the "
                    "writer cannot fill it.",
                    f"add a default to field `{rf.name}` (for an optional field: type "
                    f"[\"null\", ...] with \"default\": null), or keep the field in the writer",
                    f"keep writing field `{rf.name}` (the reader has no default for it)",
                    suffix=f"/fields/{rf.index}",
                )

    def _enum(self, reader: TypeNode, writer: TypeNode, where: str) -> None:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if not missing:
            return
        shown = ", ".join(missing)
        if reader.enum_default is not None and reader.enum_default in reader.symbols:
            self.note("enum.default_used", reader, writer,
                      f"{where}: writer symbol(s) {shown} are read as the reader's default "
                      f"{reader.enum_default}")
            return
        self.fail(
            "enum.missing_symbol", reader, writer,
            f"{where}: the writer's enum {writer.fullname} has symbol(s) {shown} that the "
            f"reader's enum {reader.fullname} lacks, and the reader enum has no default, so "
            "records carrying them cannot be read.",
            f"add {shown} to the reader's symbols, or give the reader enum a \"default\" symbol",
            f"do not write {shown}; first release a reader version whose enum has a \"default\"",
            suffix="/symbols", writer_suffix="/symbols",
        )


def _describe_root(node: TypeNode) -> str:
    if node.kind in NAMED:
        return f"top-level {node.kind} {node.fullname}"
    return "the top-level type"


def validate(schema: Any, label: str = "schema") -> None:
    """Raise :class:`~pipelines.errors.SchemaError` naming ``label`` if ``schema`` is not valid."""
    build_version(label, 0, schema, Path(label))


def check_compatibility(reader: Any, writer: Any, *, reader_label: str = "reader",
                        writer_label: str = "writer") -> CompatibilityResult:
    """Resolve ``writer`` (the schema data was written with) to ``reader`` (the schema read with).

    Args:
        reader: the reader schema, parsed JSON.
        writer: the writer schema, parsed JSON.
        reader_label: names the reader in errors about an invalid schema.
        writer_label: names the writer in errors about an invalid schema.

    Returns:
        The incompatibilities (empty when every writer value can be read) and notes.

    Raises:
        SchemaError: either schema is not a valid Avro schema.
    """
    validate(reader, reader_label)
    validate(writer, writer_label)
    return check_nodes(parse(reader), parse(writer))


def check_nodes(reader: TypeNode, writer: TypeNode) -> CompatibilityResult:
    """:func:`check_compatibility` on already parsed type graphs (see :mod:`schemas.nodes`)."""
    resolver = _Resolver()
    resolver.resolve(reader, writer, _describe_root(reader))
    return CompatibilityResult(tuple(resolver.problems), tuple(resolver.notes))
