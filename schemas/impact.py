"""Which features a schema change breaks.

Features read top-level fields of a subject's records by name. Going from an
old version of a subject to a new one, a field a feature reads can be:

* ``removed``: no field of that name any more: the feature breaks;
* ``renamed``: the new version has it under another name (with the old name as
  an alias): records still resolve, but the feature reads the old name and
  breaks;
* ``retyped``: its type changed (other than documentation): the feature breaks,
  since its values change type or meaning (nullable, string, other logical type...);
* ``widened``: a numeric promotion (int to long, float or double; long to float
  or double; float to double): reported, not breaking;
* ``symbols``: the same enum with other symbols: reported, not breaking (whether
  records with a symbol the reader lacks can be read is the compatibility
  check's business).

To change the type of a field a feature reads, add a new field, move the
feature to it, and remove the old field in a later version.

The field usage comes from the feature definitions as a mapping
``{subject: {field_name: [feature names]}}`` (see :func:`load_field_usage`).

>>> old = {"type": "record", "name": "Bid", "fields": [
...     {"name": "amount", "type": "int"}, {"name": "user", "type": "string"}]}
>>> new = {"type": "record", "name": "Bid", "fields": [{"name": "amount", "type": "long"}]}
>>> [(c.field, c.change) for c in field_changes(old, new)]
[('amount', 'widened'), ('user', 'removed')]
>>> impact = feature_impact("bids", old, new, {"bids": {"user": ["user_bid_count_5m"]}})
>>> impact[0].features, impact[0].breaking
(('user_bid_count_5m',), True)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.errors import DefinitionError
from schemas.nodes import NAMED, TypeNode, parse

FieldUsageMap = Mapping[str, Mapping[str, Sequence[str]]]
"""``{subject: {top-level field name: [feature names that read it]}}``."""

REGISTRY_MODULE = "pipelines.features.registry"

_WIDENING = frozenset({("int", "long"), ("int", "float"), ("int", "double"),
                       ("long", "float"), ("long", "double"), ("float", "double")})


@dataclass(frozen=True)
class FieldChange:
    """How one top-level field differs between an old and a new version."""

    field: str
    change: str
    old_type: str
    new_type: str | None = None
    new_name: str | None = None

    @property
    def breaking(self) -> bool:
        """True unless the change is a numeric widening or a change of enum symbols."""
        return self.change not in ("widened", "symbols")

    def describe(self) -> str:
        """One sentence, e.g. ``field `amount` is retyped from int to string``."""
        if self.change == "removed":
            return f"field `{self.field}` ({self.old_type}) is removed"
        if self.change == "renamed":
            return f"field `{self.field}` is renamed to `{self.new_name}`"
        if self.change == "symbols":
            return f"the symbols of field `{self.field}` change from {self.old_type} to " \
                   f"{self.new_type}"
        return f"field `{self.field}` is {self.change} from {self.old_type} to {self.new_type}"


@dataclass(frozen=True)
class FeatureImpact:
    """Features that read a changed field."""

    subject: str
    field: str
    change: str
    features: tuple[str, ...]
    breaking: bool
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["features"] = list(self.features)
        return data


def _signature(node: TypeNode, seen: set[int]) -> str:
    """A text that differs exactly when two types are not the same type (docs ignored)."""
    logical = f"@{node.logical}({node.precision},{node.scale})" if node.logical else ""
    if node.kind in NAMED:
        if id(node) in seen:
            return node.fullname
        seen.add(id(node))
        if node.kind == "enum":
            body = ",".join(node.symbols)
        elif node.kind == "fixed":
            body = str(node.size)
        else:
            body = ",".join(f"{f.name}:{_signature(f.type, seen)}" for f in node.fields)
        return f"{node.kind} {node.fullname}{{{body}}}{logical}"
    if node.kind == "array" and node.items is not None:
        return f"array<{_signature(node.items, seen)}>{logical}"
    if node.kind == "map" and node.values is not None:
        return f"map<{_signature(node.values, seen)}>{logical}"
    if node.kind == "union":
        return "[" + ",".join(_signature(b, seen) for b in node.branches) + "]"
    return node.kind + logical


def _symbols(node: TypeNode) -> str:
    return f"enum {node.fullname} [{', '.join(node.symbols)}]"


def field_changes(old: Any, new: Any) -> list[FieldChange]:
    """The top-level fields of ``old`` that ``new`` removes, renames, retypes or widens.

    Fields added in ``new`` are not changes to any feature. Both schemas are
    parsed JSON; a non-record schema has no fields and gives no changes.
    """
    old_node, new_node = parse(old), parse(new)
    if old_node.kind != "record" or new_node.kind != "record":
        return []
    new_fields = {f.name: f for f in new_node.fields}
    changes = []
    for of in old_node.fields:
        old_type = of.type.describe()
        nf = new_fields.get(of.name)
        if nf is None:
            renamed = next((f for f in new_node.fields if of.name in f.aliases), None)
            if renamed is None:
                changes.append(FieldChange(of.name, "removed", old_type))
            else:
                changes.append(FieldChange(of.name, "renamed", old_type,
                                           renamed.type.describe(), renamed.name))
            continue
        if _signature(of.type, set()) == _signature(nf.type, set()):
            continue
        pair = (of.type.kind, nf.type.kind)
        if pair in _WIDENING and not of.type.logical and not nf.type.logical:
            changes.append(FieldChange(of.name, "widened", old_type, nf.type.describe()))
        elif pair == ("enum", "enum") and of.type.fullname == nf.type.fullname:
            changes.append(FieldChange(of.name, "symbols", _symbols(of.type),
                                       _symbols(nf.type)))
        else:
            new_type = nf.type.describe()
            if new_type == old_type:
                new_type += " (its definition changed)"
            changes.append(FieldChange(of.name, "retyped", old_type, new_type))
    return sorted(changes, key=lambda c: c.field)


def check_usage(usage: Any, source: str = REGISTRY_MODULE) -> FieldUsageMap:
    """Validate a field-usage mapping; :class:`DefinitionError` naming the bad entry otherwise."""
    fix = "return {subject: {field_name: [feature names]}}"
    if not isinstance(usage, Mapping):
        raise DefinitionError(f"field usage must be a mapping, got {type(usage).__name__}",
                              where=source, fix=fix)
    for subject, fields in usage.items():
        if not isinstance(fields, Mapping):
            raise DefinitionError(f"usage of subject {subject!r} must be a mapping",
                                  where=source, fix=fix)
        for name, features in fields.items():
            if isinstance(features, str) or not isinstance(features, Sequence):
                raise DefinitionError(
                    f"features reading {subject}.{name} must be a list of names",
                    where=source, fix=fix)
    return usage


def feature_impact(subject: str, old: Any, new: Any, usage: FieldUsageMap) -> list[FeatureImpact]:
    """The features of ``usage`` that read a field of ``subject`` which ``old`` -> ``new`` changes.

    Args:
        subject: the schema subject (topic).
        old: the version features were built against (parsed JSON).
        new: the changed version (parsed JSON).
        usage: ``{subject: {field_name: [feature names]}}``.

    Returns:
        One entry per changed field that some feature reads, breaking ones first.
    """
    readers = usage.get(subject) or {}
    impacts = []
    for change in field_changes(old, new):
        features = tuple(sorted(set(readers.get(change.field) or ())))
        if not features:
            continue
        names = ", ".join(features)
        if change.breaking:
            message = (f"{change.describe()}, but feature(s) {names} read it; they would break "
                       "when the pipeline moves to the new version.")
            if change.change == "renamed":
                fix = f"move {names} to field `{change.new_name}` in the same change"
            else:
                fix = (f"keep field `{change.field}` as it is; add a new field instead, move "
                       f"{names} to it, and remove `{change.field}` in a later version")
        else:
            message = f"{change.describe()}; feature(s) {names} read it and keep working."
            fix = "none needed; check that the features handle the new values"
        impacts.append(FeatureImpact(subject, change.field, change.change, features,
                                     change.breaking, message, fix))
    return sorted(impacts, key=lambda i: (not i.breaking, i.field))


@dataclass(frozen=True)
class FieldUsage:
    """The field usage of the feature definitions, or why it is not available."""

    usage: FieldUsageMap | None
    note: str | None = None
    source: str = REGISTRY_MODULE


def load_field_usage() -> FieldUsage:
    """Ask the feature definitions which fields their features read.

    Imports ``pipelines.features.registry`` lazily and calls its
    ``field_usage()``. When that module does not exist (yet), returns no usage
    and a note saying the impact analysis was skipped.

    Raises:
        DefinitionError: the registry returns something that is not a usage mapping.
    """
    try:
        module = importlib.import_module(REGISTRY_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in (REGISTRY_MODULE, "pipelines.features"):
            raise
        return FieldUsage(None, f"feature impact not checked: {REGISTRY_MODULE} does not exist "
                                "yet, so no feature's source fields are known")
    provider = getattr(module, "field_usage", None)
    if not callable(provider):
        return FieldUsage(None, f"feature impact not checked: {REGISTRY_MODULE} has no "
                                "field_usage() function")
    return FieldUsage(check_usage(provider()))
