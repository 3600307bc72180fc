"""A tiny expression language for filters and predicates in feature definitions.

Expressions are plain frozen dataclasses, so definitions stay declarative:
they can be validated against schemas (:meth:`Expr.fields`), printed, pickled
into a Flink job and evaluated on a record dict without user code.

Null semantics follow SQL: arithmetic with a null is null, a comparison with a
null is unknown, and a filter keeps a record only when its predicate is true.

>>> pred = (col("event_time") - col("buyer_account_created_at")) < days(7)
>>> pred.evaluate({"event_time": 10 * 86_400_000, "buyer_account_created_at": 4 * 86_400_000})
True
>>> pred.evaluate({"event_time": 10, "buyer_account_created_at": None}) is None
True
>>> sorted(pred.fields())
['buyer_account_created_at', 'event_time']
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})


class Expr:
    """Base of all expressions. Build them with :func:`col` and :func:`lit`."""

    def evaluate(self, record: dict[str, Any]) -> Any:
        """Value of the expression on ``record`` (None for SQL null)."""
        raise NotImplementedError

    def fields(self) -> frozenset[str]:
        """Record fields the expression reads."""
        raise NotImplementedError

    def _bin(self, op: str, other: Any) -> BinOp:
        return BinOp(op, self, other if isinstance(other, Expr) else Lit(other))

    def __add__(self, other: Any) -> BinOp:
        return self._bin("+", other)

    def __sub__(self, other: Any) -> BinOp:
        return self._bin("-", other)

    def __mul__(self, other: Any) -> BinOp:
        return self._bin("*", other)

    def __lt__(self, other: Any) -> BinOp:
        return self._bin("<", other)

    def __le__(self, other: Any) -> BinOp:
        return self._bin("<=", other)

    def __gt__(self, other: Any) -> BinOp:
        return self._bin(">", other)

    def __ge__(self, other: Any) -> BinOp:
        return self._bin(">=", other)

    def eq(self, other: Any) -> BinOp:
        """``self == other`` (``==`` itself keeps dataclass equality)."""
        return self._bin("==", other)

    def ne(self, other: Any) -> BinOp:
        """``self != other``."""
        return self._bin("!=", other)

    def is_null(self) -> IsNull:
        """True when the value is null."""
        return IsNull(self, negate=False)

    def not_null(self) -> IsNull:
        """True when the value is not null."""
        return IsNull(self, negate=True)

    def __and__(self, other: Expr) -> And:
        return And(self, other)


@dataclass(frozen=True, eq=True)
class Col(Expr):
    """A record field."""

    name: str

    def evaluate(self, record: dict[str, Any]) -> Any:
        return record.get(self.name)

    def fields(self) -> frozenset[str]:
        return frozenset({self.name})

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=True)
class Lit(Expr):
    """A constant."""

    value: Any

    def evaluate(self, record: dict[str, Any]) -> Any:
        return self.value

    def fields(self) -> frozenset[str]:
        return frozenset()

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, eq=True)
class BinOp(Expr):
    """Arithmetic or comparison of two expressions."""

    op: str
    left: Expr
    right: Expr

    def evaluate(self, record: dict[str, Any]) -> Any:
        a = self.left.evaluate(record)
        if a is None:
            return None
        b = self.right.evaluate(record)
        if b is None:
            return None
        return _BINARY[self.op](a, b)

    def fields(self) -> frozenset[str]:
        return self.left.fields() | self.right.fields()

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True, eq=True)
class IsNull(Expr):
    """Null test (never null itself)."""

    operand: Expr
    negate: bool

    def evaluate(self, record: dict[str, Any]) -> bool:
        return (self.operand.evaluate(record) is None) != self.negate

    def fields(self) -> frozenset[str]:
        return self.operand.fields()

    def __str__(self) -> str:
        return f"({self.operand} IS {'NOT ' if self.negate else ''}NULL)"


@dataclass(frozen=True, eq=True)
class And(Expr):
    """SQL three-valued AND."""

    left: Expr
    right: Expr

    def evaluate(self, record: dict[str, Any]) -> Any:
        a = self.left.evaluate(record)
        if a is False:
            return False
        b = self.right.evaluate(record)
        if b is False:
            return False
        if a is None or b is None:
            return None
        return True

    def fields(self) -> frozenset[str]:
        return self.left.fields() | self.right.fields()

    def __str__(self) -> str:
        return f"({self.left} AND {self.right})"


def col(name: str) -> Col:
    """Reference a record field by name."""
    return Col(name)


def lit(value: Any) -> Lit:
    """A constant value."""
    return Lit(value)


def days(n: float) -> Lit:
    """``n`` days in milliseconds (event times are epoch milliseconds)."""
    return Lit(int(n * 86_400_000))


def holds(predicate: Expr, record: dict[str, Any]) -> bool:
    """True only when ``predicate`` evaluates to true (null counts as false)."""
    return predicate.evaluate(record) is True
