"""An Avro schema as a graph of type nodes, with full names resolved and JSON-pointer locations.

The compatibility checker and the impact analysis walk schemas as *types*,
not as JSON: a reference such as ``"RiskTier"`` or ``"LongList"`` must lead to
the node where that named type is defined, short names must be qualified with
the enclosing namespace as the Avro specification says, and every problem must
point at a place in the schema file a person can open. :func:`parse` does that
once per schema; references to a named type return the *same* node, so a
recursive type is a cycle in the graph (walkers guard it with a seen-set).

>>> node = parse({"type": "record", "name": "Bid", "namespace": "shop",
...               "fields": [{"name": "next", "type": ["null", "Bid"]}]})
>>> node.fullname, node.fields[0].type.branches[1] is node
('shop.Bid', True)
>>> node.fields[0].type.pointer
'/fields/0/type'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import SchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "enum", "fixed"})

_NO_DEFAULT = object()


@dataclass(eq=False)
class Field:
    """A record field: its name, aliases, default and type."""

    name: str
    index: int
    pointer: str
    type: TypeNode
    aliases: tuple[str, ...] = ()
    default: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        """True when the field declares a ``default`` (``null`` counts)."""
        return self.default is not _NO_DEFAULT


@dataclass(eq=False)
class TypeNode:
    """One Avro type. ``kind`` is a primitive name, a complex type name or ``"union"``.

    Nodes compare by identity: the same named type reached twice is one node.
    """

    kind: str
    pointer: str
    fullname: str = ""
    aliases: frozenset[str] = frozenset()
    logical: str | None = None
    precision: Any = None
    scale: Any = None
    size: int | None = None
    symbols: tuple[str, ...] = ()
    enum_default: str | None = None
    fields: list[Field] = field(default_factory=list)
    items: TypeNode | None = None
    values: TypeNode | None = None
    branches: list[TypeNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The unqualified name of a named type (``""`` for others)."""
        return self.fullname.rsplit(".", 1)[-1]

    @property
    def namespace(self) -> str:
        """The namespace of a named type (``""`` for the null namespace and unnamed types)."""
        return self.fullname.rsplit(".", 1)[0] if "." in self.fullname else ""

    def valid_decimal(self) -> bool:
        """True for a ``decimal`` logical type the specification says must not be ignored.

        Invalid annotations (precision not a positive int, scale outside
        ``0..precision``, precision too large for the fixed size) are ignored
        when reading, as the specification requires, so they return False.
        """
        if self.logical != "decimal" or self.kind not in ("bytes", "fixed"):
            return False
        precision, scale = self.precision, 0 if self.scale is None else self.scale
        if not _is_int(precision) or not _is_int(scale) or precision <= 0:
            return False
        if not 0 <= scale <= precision:
            return False
        if self.kind == "fixed" and self.size is not None:
            # An n-byte two's-complement number holds floor(log10(2^(8n-1) - 1)) digits.
            return bool(precision <= len(str(2 ** (8 * self.size - 1) - 1)) - 1)
        return True

    def describe(self) -> str:
        """A short description, e.g. ``long (timestamp-millis)`` or ``union [null, string]``."""
        return _describe(self, depth=0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(node: TypeNode, depth: int) -> str:
    if node.kind in NAMED:
        text = f"{node.kind} {node.fullname}"
        if node.kind == "fixed":
            text += f" (size {node.size})"
    elif node.kind == "array" and node.items is not None:
        text = f"array<{_describe(node.items, depth + 1)}>"
    elif node.kind == "map" and node.values is not None:
        text = f"map<{_describe(node.values, depth + 1)}>"
    elif node.kind == "union":
        text = "union [" + ", ".join(_describe(b, depth + 1) for b in node.branches) + "]"
    else:
        text = node.kind
    if node.logical and node.kind != "union":
        if node.logical == "decimal":
            text += f" (decimal({node.precision}, {0 if node.scale is None else node.scale}))"
        else:
            text += f" ({node.logical})"
    return text


def full_name(name: str, namespace: str) -> str:
    """The full name of ``name`` defined or referenced inside ``namespace`` (Avro "Names" rules)."""
    if "." in name:
        return name
    return f"{namespace}.{name}" if namespace else name


class _Parser:
    def __init__(self) -> None:
        self.named: dict[str, TypeNode] = {}

    def parse(self, schema: Any, pointer: str, namespace: str) -> TypeNode:
        if isinstance(schema, str):
            return self._reference(schema, pointer, namespace)
        if isinstance(schema, list):
            node = TypeNode(kind="union", pointer=pointer)
            node.branches = [
                self.parse(branch, f"{pointer}/{i}", namespace) for i, branch in enumerate(schema)
            ]
            return node
        if not isinstance(schema, dict) or "type" not in schema:
            raise SchemaError(
                f"not an Avro schema: {schema!r}", where=pointer or "/",
                fix="use a type name, a JSON object with a \"type\" or a JSON array (union)",
            )
        kind = schema["type"]
        if not isinstance(kind, str):
            return self.parse(kind, f"{pointer}/type", namespace)
        logical = schema.get("logicalType")
        logical = logical if isinstance(logical, str) else None
        if kind in PRIMITIVES:
            return TypeNode(kind=kind, pointer=pointer, logical=logical,
                            precision=schema.get("precision"), scale=schema.get("scale"))
        if kind == "array":
            node = TypeNode(kind="array", pointer=pointer, logical=logical)
            node.items = self.parse(schema.get("items"), f"{pointer}/items", namespace)
            return node
        if kind == "map":
            node = TypeNode(kind="map", pointer=pointer, logical=logical)
            node.values = self.parse(schema.get("values"), f"{pointer}/values", namespace)
            return node
        if kind in ("record", "error", "enum", "fixed"):
            return self._named("record" if kind == "error" else kind, schema, pointer, namespace,
                               logical)
        # {"type": "SomeNamedType"}: a reference written as an object.
        return self._reference(kind, f"{pointer}/type", namespace)

    def _reference(self, name: str, pointer: str, namespace: str) -> TypeNode:
        if name in PRIMITIVES:
            return TypeNode(kind=name, pointer=pointer)
        node = self.named.get(full_name(name, namespace)) or self.named.get(name)
        if node is None:
            raise SchemaError(
                f"unknown type name {name!r}", where=pointer or "/",
                fix="define the named type before its first use, or qualify it with its namespace",
            )
        return node

    def _named(self, kind: str, schema: dict[str, Any], pointer: str, namespace: str,
               logical: str | None) -> TypeNode:
        name = str(schema.get("name", ""))
        if "." in name:
            fullname = name
        else:
            own = schema.get("namespace")
            fullname = full_name(name, namespace if own is None else str(own))
        inner_ns = fullname.rsplit(".", 1)[0] if "." in fullname else ""
        # Aliases are fully qualified or relative to the namespace of the name they alias.
        aliases = frozenset(full_name(str(a), inner_ns) for a in schema.get("aliases") or ())
        node = TypeNode(kind=kind, pointer=pointer, fullname=fullname, aliases=aliases,
                        logical=logical, precision=schema.get("precision"),
                        scale=schema.get("scale"))
        self.named[fullname] = node  # before the fields: a record may refer to itself
        if kind == "enum":
            node.symbols = tuple(str(s) for s in schema.get("symbols") or ())
            default = schema.get("default")
            node.enum_default = default if isinstance(default, str) else None
        elif kind == "fixed":
            size = schema.get("size")
            node.size = size if _is_int(size) else None
        else:
            for i, spec in enumerate(schema.get("fields") or ()):
                field_pointer = f"{pointer}/fields/{i}"
                node.fields.append(Field(
                    name=str(spec.get("name", "")),
                    index=i,
                    pointer=field_pointer,
                    type=self.parse(spec.get("type"), f"{field_pointer}/type", inner_ns),
                    aliases=tuple(str(a) for a in spec.get("aliases") or ()),
                    default=spec.get("default", _NO_DEFAULT),
                ))
        return node


def parse(schema: Any) -> TypeNode:
    """The type graph of a schema given as parsed JSON.

    The schema is assumed valid (check it with :func:`schemas.store.build_version`
    first); a reference to an undefined name raises :class:`SchemaError`.
    """
    return _Parser().parse(schema, "", "")
