"""Exact sliding windows for one entity of one feature view: the state machine both runtimes drive.

Time only moves forward. A runtime calls :meth:`ViewEngine.step` once per
distinct *change point* ``T`` of an entity, in increasing order: every time
at which events or changelog versions of the entity occur, and every
expiration time ``e + L`` that :meth:`ViewEngine.next_expiration` announces.
``step`` applies the expirations due at ``T`` (events with ``e + L <= T`` leave
the window ``(T - L, T]``), then the changelog versions at ``T``, then the
events at ``T``, and returns the view's values if they differ from the last
values it returned. That gives exactly one changelog row per change point at
which any value changed, which is what the offline store records.

Accumulators are exact: integer counts and sums, multiset counters for
distinct counts; means and shares are computed from exact integers at read
time, so there is no floating-point drift however long the stream runs.

The state is plain picklable data (:class:`ViewState`) so that the streaming
runtime can keep it in Flink keyed state; the compiled definition
(:class:`ViewEngine`) is built once per operator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from pipelines.features.definitions import (
    AsOf,
    Count,
    CountDistinct,
    FeatureView,
    Mean,
    Share,
    Sum,
)
from pipelines.features.expr import holds

Record = dict[str, Any]
Values = tuple[Any, ...]

# Accumulator kinds, as small ints for compact state.
_COUNT, _SUM, _MEAN, _DISTINCT, _SHARE = range(5)


class ViewState:
    """Everything one entity of one view remembers between change points (picklable)."""

    __slots__ = ("acc", "asof", "last", "pending")

    def __init__(self, n_aggs: int, n_lookups: int) -> None:
        self.acc: list[Any] = [None] * n_aggs
        # Per aggregation: deque of (expire_at_ms, contribution), expire times increasing.
        self.pending: list[deque[tuple[int, Any]]] = [deque() for _ in range(n_aggs)]
        self.asof: list[Any] = [None] * n_lookups
        self.last: Values | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.acc, self.pending, self.asof, self.last)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.acc, self.pending, self.asof, self.last = state

    def is_empty(self) -> bool:
        """True when no window holds anything and no lookup is set (state can be dropped)."""
        return all(not p for p in self.pending) and all(v is None for v in self.asof)


class _AggSlot:
    __slots__ = ("field", "kind", "numerator", "source", "where", "window")

    def __init__(
        self, kind: int, source: str, window: int, field: str | None, where: Any, numerator: Any
    ) -> None:
        self.kind = kind
        self.source = source
        self.window = window
        self.field = field
        self.where = where
        self.numerator = numerator


def _slot_kind(agg: object) -> int:
    if isinstance(agg, Count):
        return _COUNT
    if isinstance(agg, Sum):
        return _SUM
    if isinstance(agg, Mean):
        return _MEAN
    if isinstance(agg, CountDistinct):
        return _DISTINCT
    if isinstance(agg, Share):
        return _SHARE
    raise TypeError(f"unsupported aggregation {type(agg).__name__}")


class ViewEngine:
    """The compiled form of one :class:`FeatureView`, shared by every entity of it."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self._slots: list[_AggSlot] = []
        self._lookups: list[tuple[str, str]] = []  # (changelog name, field)
        # Output order = declaration order; map each feature to (is_agg, index).
        self._outputs: list[tuple[bool, int]] = []
        for feature in view.features:
            comp = feature.compute
            if isinstance(comp, AsOf):
                self._outputs.append((False, len(self._lookups)))
                self._lookups.append((comp.changelog.name, comp.field))
            else:
                numerator = comp.numerator if isinstance(comp, Share) else None
                self._outputs.append((True, len(self._slots)))
                self._slots.append(
                    _AggSlot(
                        _slot_kind(comp),
                        comp.source.name,
                        comp.window_ms,
                        comp.input_field,
                        comp.where,
                        numerator,
                    )
                )
        self.feature_names = view.feature_names
        self.window_lengths = sorted({s.window for s in self._slots})
        self.sources = frozenset(s.source for s in self._slots)
        self.changelogs = frozenset(name for name, _ in self._lookups)

    # -- state ---------------------------------------------------------------------------
    def new_state(self) -> ViewState:
        """A state for an entity that has seen nothing."""
        state = ViewState(len(self._slots), len(self._lookups))
        for i, slot in enumerate(self._slots):
            state.acc[i] = self._zero(slot.kind)
        return state

    def empty_values(self) -> Values:
        """The view's values for an entity with nothing in any window and no lookup."""
        return self.values(self.new_state())

    @staticmethod
    def _zero(kind: int) -> Any:
        if kind in (_COUNT, _SUM):
            return 0
        if kind in (_MEAN, _SHARE):
            return [0, 0]
        return {}

    # -- time ----------------------------------------------------------------------------
    @staticmethod
    def next_expiration(state: ViewState) -> int | None:
        """The earliest time at which an event leaves one of the windows, or None."""
        heads = [p[0][0] for p in state.pending if p]
        return min(heads) if heads else None

    def expirations_after(self, event_time: int) -> list[int]:
        """Times at which an event at ``event_time`` leaves the view's windows."""
        return [event_time + w for w in self.window_lengths]

    def step(
        self,
        state: ViewState,
        time_ms: int,
        events: Sequence[tuple[str, Record]] = (),
        versions: Iterable[tuple[str, Record]] = (),
    ) -> Values | None:
        """Advance ``state`` to ``time_ms`` and apply what happens exactly then.

        Args:
            state: the entity's state; mutated.
            time_ms: the change point; must not be earlier than any previous call's.
            events: ``(source name, record)`` of every accepted event at ``time_ms``.
            versions: ``(changelog name, record)`` versions taking effect at
                ``time_ms``, in Kafka offset order (the last one wins).

        Returns:
            The new values (declaration order) if any changed, else None.
        """
        for i, pending in enumerate(state.pending):
            if pending and pending[0][0] <= time_ms:
                self._expire(state, i, pending, time_ms)
        for name, record in versions:
            for j, (lname, field) in enumerate(self._lookups):
                if lname == name:
                    state.asof[j] = record.get(field)
        for source, record in events:
            self._apply(state, source, record, time_ms)
        values = self.values(state)
        previous = state.last if state.last is not None else self.empty_values()
        state.last = values
        return values if values != previous else None

    def _expire(
        self, state: ViewState, i: int, pending: deque[tuple[int, Any]], time_ms: int
    ) -> None:
        kind = self._slots[i].kind
        acc = state.acc[i]
        while pending and pending[0][0] <= time_ms:
            contribution = pending.popleft()[1]
            if kind == _COUNT:
                acc -= 1
            elif kind == _SUM:
                acc -= contribution
            elif kind == _MEAN:
                acc[0] -= contribution
                acc[1] -= 1
            elif kind == _DISTINCT:
                left = acc[contribution] - 1
                if left:
                    acc[contribution] = left
                else:
                    del acc[contribution]
            else:  # share
                acc[0] -= contribution
                acc[1] -= 1
        state.acc[i] = acc

    def _apply(self, state: ViewState, source: str, record: Record, time_ms: int) -> None:
        for i, slot in enumerate(self._slots):
            if slot.source != source or (slot.where is not None and not holds(slot.where, record)):
                continue
            kind = slot.kind
            if kind == _COUNT:
                contribution: Any = None
                state.acc[i] += 1
            elif kind == _SUM:
                contribution = record[slot.field]  # type: ignore[index]
                state.acc[i] += contribution
            elif kind == _MEAN:
                contribution = record[slot.field]  # type: ignore[index]
                state.acc[i][0] += contribution
                state.acc[i][1] += 1
            elif kind == _DISTINCT:
                contribution = record[slot.field]  # type: ignore[index]
                acc = state.acc[i]
                acc[contribution] = acc.get(contribution, 0) + 1
            else:  # share
                contribution = 1 if holds(slot.numerator, record) else 0
                state.acc[i][0] += contribution
                state.acc[i][1] += 1
            state.pending[i].append((time_ms + slot.window, contribution))

    def values(self, state: ViewState) -> Values:
        """Current values of every feature, in declaration order."""
        out: list[Any] = []
        for is_agg, idx in self._outputs:
            if not is_agg:
                out.append(state.asof[idx])
                continue
            kind = self._slots[idx].kind
            acc = state.acc[idx]
            if kind in (_COUNT, _SUM):
                out.append(acc)
            elif kind == _DISTINCT:
                out.append(len(acc))
            else:  # mean and share: null when the window is empty
                out.append(acc[0] / acc[1] if acc[1] else None)
        return tuple(out)


class Enricher:
    """As-of join state for one key of a changelog: the version in force, applied in time order."""

    def __init__(self, fields: Sequence[str], prefix: str) -> None:
        self.fields = tuple(fields)
        self.attached = tuple(prefix + f for f in self.fields)

    def apply_version(self, current: Record | None, version: Record) -> Record:
        """The new version in force (only the attached fields are kept)."""
        del current
        return {a: version.get(f) for f, a in zip(self.fields, self.attached, strict=True)}

    def enrich(self, current: Record | None, event: Record) -> Record:
        """``event`` plus the attached fields of ``current`` (nulls when there is none)."""
        out = dict(event)
        if current is None:
            for a in self.attached:
                out[a] = None
        else:
            out.update(current)
        return out
