"""What the gate returns: row verdicts with structured failures, drift verdicts per column.

Plain frozen dataclasses (no GX), JSON-ready through :meth:`to_json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from quality.rows import HOUR_MS

Action = Literal["pass", "warn", "block"]


@dataclass(frozen=True)
class RowFailure:
    """Why one row of a batch was rejected.

    Attributes:
        index: position of the row in the batch given to ``check_rows``.
        reason: quarantine reason code (the codes of :mod:`quality.rows`, plus
            ``unknown_enum``, or ``gate_error`` when the suite could not be evaluated).
        expectation: the GX expectation that failed and its column, e.g.
            ``expect_column_values_to_be_between(amount_cents)``.
        values: the offending values, ``{column: value}``.
        detail: one human sentence, worded as :mod:`quality.rows` words it.
    """

    index: int
    reason: str
    expectation: str
    values: dict[str, Any]
    detail: str


@dataclass(frozen=True)
class RowVerdict:
    """The outcome of a row batch: which rows pass (in order) and why the others fail."""

    subject: str
    suite: str
    result_id: str
    rows: int
    valid_indices: list[int]
    failures: list[RowFailure]

    @property
    def failed_by_reason(self) -> dict[str, int]:
        """Number of rejected rows per reason code."""
        out: dict[str, int] = {}
        for f in self.failures:
            out[f.reason] = out.get(f.reason, 0) + 1
        return out


@dataclass(frozen=True)
class MeasureResult:
    """One drift measure of one column: its value, the noise margin, the limit used."""

    value: float
    margin: float
    limit: float
    n: int
    drifted: bool


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one feature column in one batch."""

    column: str
    kind: str
    drifted: bool
    measures: dict[str, MeasureResult]
    note: str = ""

    @property
    def value(self) -> float:
        """The largest measure of the column (0 when none could be computed)."""
        return max((m.value for m in self.measures.values()), default=0.0)


@dataclass(frozen=True)
class BatchFailure:
    """A failed integrity expectation of a feature batch."""

    expectation: str
    column: str
    unexpected_count: int
    sample: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class DriftVerdict:
    """The outcome of a feature micro-batch.

    Attributes:
        view: the feature view.
        batch_id: the caller's id of the batch (``quality release`` takes it).
        result_id: id of the stored validation result.
        action: ``pass``, or the view's action (``warn``/``block``) when any
            expectation failed (a drifted column or an integrity failure).
        rows: batch size.
        judged: False when drift was not judged (no reference profile, or fewer
            rows than ``min_rows``); ``note`` says which.
        threshold: the drift threshold used.
        columns: per measured column, its drift.
        failures: failed integrity expectations.
        event_time_min / event_time_max: event-time range of the batch (epoch ms).
    """

    view: str
    batch_id: str
    result_id: str
    action: Action
    rows: int
    judged: bool
    threshold: float
    columns: dict[str, ColumnDrift]
    failures: list[BatchFailure]
    note: str = ""
    event_time_min: int | None = None
    event_time_max: int | None = None

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the columns that drifted."""
        return [c for c, d in self.columns.items() if d.drifted]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the verdict."""
        return asdict(self)


def row_detail(reason: str, column: str, value: Any, reference_time_ms: int) -> str:
    """The quarantine ``detail`` of a row failure, worded as :mod:`quality.rows` words it."""
    if reason == "empty_id":
        return f"{column} is empty"
    if reason == "non_positive_amount":
        return f"{column} = {value}"
    if reason == "unsupported_currency":
        return f"{column} = {value!r}"
    if reason == "future_event_time":
        ahead = (value - reference_time_ms) / HOUR_MS
        return f"{column} is {ahead:.1f} h ahead of the watermark"
    if reason == "unknown_enum":
        return f"{column} = {value!r} is not a known symbol"
    return f"{column}: {value!r}"
