"""Rule expressions: parsed with :mod:`ast`, checked against feature types, evaluated column-wise.

A rule is a Python boolean expression over feature names, for example
``user_bid_count_5m > 20 and user_account_age_days < 1``. Only a small, safe
subset of Python is accepted, so a rule can be checked completely before any
data is read:

- names: features of the pipeline (nothing else: no builtins, no modules);
- literals: numbers, strings, ``True``, ``False``, ``None``, and tuples/lists/sets of
  literals on the right of ``in`` / ``not in``;
- comparisons ``< <= > >= == !=`` (chains like ``1 <= x < 5`` too), ``is None``,
  ``is not None``, ``in``, ``not in``;
- ``and``, ``or``, ``not``; arithmetic ``+ - * /`` and unary ``-`` on numbers;
  ``timestamp - timestamp`` gives milliseconds.

No calls, attributes, subscripts, lambdas or conditional expressions.

Types: numbers (int64 and float64 features) compare with numbers, strings with
strings (equality and ``in`` only), booleans with booleans (equality only),
timestamps with timestamps. The whole expression must be boolean.

Nulls (a profile feature before the user's first profile, a mean over an empty
window, a division by zero): arithmetic with a null gives null; **every
comparison with a null is false** (``!=`` too), ``x is None`` is how to test for
null, and a boolean feature that is null counts as false. So
``not user_is_verified`` is true for users without a profile, while
``user_is_verified == False`` is not.

>>> p = parse_predicate("x > 2 and s in ('a', 'b')", {"x": "number", "s": "string"})
>>> import pyarrow as pa
>>> p.evaluate({"x": pa.array([3, 3, None]), "s": pa.array(["a", "c", "a"])}, 3).tolist()
[True, False, False]
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.features.definitions import ValueType

NUMBER, BOOL, STRING, TIMESTAMP, NULL = "number", "bool", "string", "timestamp", "null"

KIND_OF: dict[ValueType, str] = {
    "int64": NUMBER,
    "float64": NUMBER,
    "bool": BOOL,
    "string": STRING,
    "timestamp": TIMESTAMP,
}
"""How rules see each stored value type (timestamps are epoch milliseconds)."""

_ARITH: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_CMP_FN = {
    ast.Lt: pc.less,
    ast.LtE: pc.less_equal,
    ast.Gt: pc.greater,
    ast.GtE: pc.greater_equal,
    ast.Eq: pc.equal,
    ast.NotEq: pc.not_equal,
}
_CHECKED = {
    ast.Add: pc.add_checked,
    ast.Sub: pc.subtract_checked,
    ast.Mult: pc.multiply_checked,
}
_FORBIDDEN = {
    ast.Call: "function calls are",
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.Lambda: "lambdas are",
    ast.IfExp: "conditional expressions are",
    ast.NamedExpr: "assignments are",
    ast.JoinedStr: "f-strings are",
    ast.ListComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.Starred: "starred expressions are",
}

Value: TypeAlias = Any
"""A ``pyarrow.Array`` or ``pyarrow.Scalar`` (pyarrow ships no type stubs)."""


class PredicateError(Exception):
    """The expression is not a valid rule; ``str()`` says what and where (column)."""


@dataclass(frozen=True)
class Predicate:
    """A checked rule expression.

    Attributes:
        source: the expression text.
        tree: its parsed form.
        features: the feature names it reads, in order of first use.
    """

    source: str
    tree: ast.expr
    features: tuple[str, ...]

    def evaluate(self, columns: Mapping[str, pa.Array], length: int) -> np.ndarray:
        """The predicate on every row: a bool array of ``length``.

        Args:
            columns: one array per feature in :attr:`features` (timestamps as epoch-ms
                int64), each of ``length`` rows.
            length: number of rows.

        Raises:
            pyarrow.ArrowInvalid: arithmetic overflowed (callers name the rule).
        """
        result = _truth(_Evaluator(columns).eval(self.tree))
        if isinstance(result, pa.Scalar):
            return np.full(length, bool(result.as_py()))
        return np.asarray(result.to_numpy(zero_copy_only=False), dtype=bool)


def parse_predicate(source: str, kinds: Mapping[str, str]) -> Predicate:
    """Parse and type-check ``source`` against feature kinds (``number``, ``bool``, ...).

    Raises:
        PredicateError: syntax error, a construct outside the allowed subset, an
            unknown feature, a type mismatch, or a non-boolean result.
    """
    text = source.strip()
    if not text:
        raise PredicateError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise PredicateError(f"not a Python expression: {exc.msg} (column {exc.offset})") from exc
    checker = _Checker(text, kinds)
    kind = checker.kind(tree)
    if kind != BOOL:
        raise PredicateError(
            f"the expression is a {kind}, not a condition; compare it, e.g. `... > 0`"
        )
    return Predicate(text, tree, tuple(dict.fromkeys(checker.names)))


class _Checker:
    """Computes the kind of each node, rejecting everything outside the subset."""

    def __init__(self, source: str, kinds: Mapping[str, str]) -> None:
        self.source = source
        self.kinds = kinds
        self.names: list[str] = []

    def fail(self, node: ast.AST, problem: str) -> PredicateError:
        segment = ast.get_source_segment(self.source, node) or ""
        col = getattr(node, "col_offset", None)
        where = f" at `{segment}` (column {col + 1})" if col is not None else ""
        return PredicateError(f"{problem}{where}")

    def kind(self, node: ast.expr) -> str:
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._expect(value, BOOL, "`and` / `or` need conditions on both sides")
            return BOOL
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self._expect(node.operand, BOOL, "`not` needs a condition")
                return BOOL
            if isinstance(node.op, ast.USub | ast.UAdd):
                self._expect(node.operand, NUMBER, "unary minus needs a number")
                return NUMBER
            raise self.fail(node, "operator `~` is not allowed")
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                self._compare(node, left, op, right)
                left = right
            return BOOL
        what = _FORBIDDEN.get(type(node), f"`{type(node).__name__}` expressions are")
        raise self.fail(node, f"{what} not allowed in a rule")

    def _name(self, node: ast.Name) -> str:
        kind = self.kinds.get(node.id)
        if kind is None:
            close = difflib.get_close_matches(node.id, list(self.kinds), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise self.fail(node, f"unknown feature {node.id!r}{hint}")
        self.names.append(node.id)
        return kind

    def _constant(self, node: ast.Constant) -> str:
        value = node.value
        if value is None:
            return NULL
        if isinstance(value, bool):
            return BOOL
        if isinstance(value, int | float):
            return NUMBER
        if isinstance(value, str):
            return STRING
        raise self.fail(node, f"literal of type {type(value).__name__} is not allowed")

    def _expect(self, node: ast.expr, want: str, problem: str) -> None:
        got = self.kind(node)
        if got != want:
            raise self.fail(node, f"{problem}, got a {got}")

    def _binop(self, node: ast.BinOp) -> str:
        symbol = _ARITH.get(type(node.op))
        if symbol is None:
            raise self.fail(node, "only + - * / are allowed in arithmetic")
        left, right = self.kind(node.left), self.kind(node.right)
        if left == right == NUMBER:
            return NUMBER
        if left == right == TIMESTAMP and symbol == "-":
            return NUMBER  # milliseconds between two timestamps
        raise self.fail(node, f"cannot compute {left} {symbol} {right}")

    def _compare(self, node: ast.Compare, left: ast.expr, op: ast.cmpop, right: ast.expr) -> None:
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.fail(node, "`is` / `is not` only test for None; use == to compare")
            if self.kind(left) == NULL:
                raise self.fail(node, "compare a feature with None, not None with None")
            return
        if isinstance(op, ast.In | ast.NotIn):
            kind = self.kind(left)
            if kind not in (NUMBER, STRING):
                raise self.fail(node, f"`in` needs a number or string on the left, got a {kind}")
            if not isinstance(right, ast.Tuple | ast.List | ast.Set):
                raise self.fail(node, "`in` needs a literal tuple on the right, e.g. ('A', 'B')")
            for item in right.elts:
                if not isinstance(item, ast.Constant) or self.kind(item) != kind:
                    raise self.fail(item, f"every item of the `in` tuple must be a {kind} literal")
            return
        lk, rk = self.kind(left), self.kind(right)
        if NULL in (lk, rk):
            raise self.fail(node, "comparing with None is always false; use `is None`")
        if lk != rk:
            raise self.fail(node, f"cannot compare a {lk} with a {rk}")
        if isinstance(op, _ORDER) and lk not in (NUMBER, TIMESTAMP):
            raise self.fail(node, f"{lk}s can only be compared with == and !=")


def _truth(value: Value) -> Value:
    """A condition's value with null read as false."""
    return pc.fill_null(value, False)


class _Evaluator:
    """Evaluates a checked tree on Arrow columns (nulls propagate through arithmetic)."""

    def __init__(self, columns: Mapping[str, pa.Array]) -> None:
        self.columns = columns

    def eval(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Name):
            return self.columns[node.id]
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.BoolOp):
            combine = pc.and_ if isinstance(node.op, ast.And) else pc.or_
            result = _truth(self.eval(node.values[0]))
            for value in node.values[1:]:
                result = combine(result, _truth(self.eval(value)))
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return pc.invert(_truth(operand))
            return pc.negate_checked(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        raise TypeError(f"unchecked node {type(node).__name__}")  # the checker rejects these

    def _binop(self, node: ast.BinOp) -> Value:
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(node.op, ast.Div):
            num, den = pc.cast(left, pa.float64()), pc.cast(right, pa.float64())
            return pc.if_else(
                pc.equal(den, 0.0), pa.scalar(None, pa.float64()), pc.divide(num, den)
            )
        return _CHECKED[type(node.op)](left, right)

    def _compare(self, node: ast.Compare) -> Value:
        result: Value | None = None
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            left = self.eval(left_node)
            if isinstance(op, ast.Is):
                part = pc.is_null(left)
            elif isinstance(op, ast.IsNot):
                part = pc.is_valid(left)
            elif isinstance(op, ast.In | ast.NotIn):
                part = self._membership(left, right_node, negate=isinstance(op, ast.NotIn))
            else:
                part = _truth(_CMP_FN[type(op)](left, self.eval(right_node)))
            result = part if result is None else pc.and_(result, part)
            left_node = right_node
        assert result is not None  # a Compare has at least one operator
        return result

    @staticmethod
    def _membership(left: Value, right: ast.expr, *, negate: bool) -> Value:
        assert isinstance(right, ast.Tuple | ast.List | ast.Set)
        items: list[Any] = [e.value for e in right.elts if isinstance(e, ast.Constant)]
        if pa.types.is_string(left.type) or pa.types.is_large_string(left.type):
            values = pa.array(items, pa.string())
        else:
            left = pc.cast(left, pa.float64())
            values = pa.array([float(x) for x in items], pa.float64())
        found = pc.is_in(left, value_set=values)
        if not negate:
            return found
        # A null is neither in nor not in anything (a comparison with null is false).
        return pc.and_(pc.is_valid(left), pc.invert(found))
