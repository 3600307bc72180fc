"""``expect_column_to_not_drift``: a Great Expectations 1.x expectation comparing a column
of a batch with its reference profile.

Importing this module registers, with GX, the metric ``column.livefeat_drift`` (the
raw drift measures of the column and their noise margins at the batch's size, see
:mod:`quality.measures`) and the expectation :class:`ExpectColumnToNotDrift`, so
suites kept as JSON files can use ``"type": "expect_column_to_not_drift"`` with
kwargs ``column``, ``reference`` (a column entry of a profile, usually the suite
parameter ``reference_<column>``) and ``threshold`` (usually ``drift_threshold``).

The reference may be given inline (a dict) or, as the gate does, as a short name
registered with :func:`register_reference`: GX copies an expectation's kwargs many
times per validation, and a profile entry (99 quantiles, noise tables) in the
kwargs tripled the cost of a call.

A measure drifts when its value exceeds both the threshold and its noise margin;
the expectation fails when any measure of the column drifts. The result's
``observed_value`` is the largest measure; ``details`` holds every measure with its
value, margin, limit and verdict.

GX's own distribution expectations do not fit micro-batches: 1.x ships KL
divergence (unbounded, infinite on an empty bin) and no KS or chi-square test.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from great_expectations.compatibility import pydantic
from great_expectations.core.suite_parameters import SuiteParameterDict
from great_expectations.execution_engine import ExecutionEngine, PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.expectations.metrics.column_aggregate_metric_provider import (
    ColumnAggregateMetricProvider,
    column_aggregate_value,
)

from quality import measures

METRIC = "column.livefeat_drift"

_REFERENCES: dict[str, dict[str, Any]] = {}


def register_reference(name: str, entry: dict[str, Any]) -> str:
    """Make a profile entry available to ``expect_column_to_not_drift`` under ``name``."""
    _REFERENCES[name] = entry
    return name


def _resolve(reference: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(reference, str):
        return _REFERENCES.get(reference)
    return reference


class ColumnLivefeatDrift(ColumnAggregateMetricProvider):
    """GX metric ``column.livefeat_drift`` (pandas): see :func:`drift_measures`."""

    metric_name = METRIC
    value_keys = ("reference",)
    filter_column_isnull = False

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(
        cls, column: Any, reference: str | dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        entry = _resolve(reference)
        if isinstance(reference, str) and entry is None:
            return {"rows": len(column), "measures": {},
                    "note": f"reference {reference!r} is not registered"}
        reference = entry
        if (reference or {}).get("kind") == "categorical":
            counts: dict[str, float] = {}
            for value, count in column.value_counts(dropna=False).items():
                key = measures.category_key(value)
                counts[key] = counts.get(key, 0.0) + float(count)
            total = float(len(column)) or 1.0
            shares = {k: c / total for k, c in sorted(counts.items())}
            return measures.column_measures(np.empty(len(column)), reference, shares)
        if column.dtype.kind in "fiu":
            return measures.column_measures(column.to_numpy(dtype=np.float64), reference)
        return measures.column_measures(column.tolist(), reference)


class ExpectColumnToNotDrift(ColumnAggregateExpectation):
    """Expect a column's drift measures against its reference profile to stay under a threshold.

    Args:
        column: the feature column.
        reference: the column's entry of the view's reference profile, or the name
            it was registered under (:func:`register_reference`).
        threshold: largest tolerated value of each measure (0.05 = 5 %); a measure
            is also tolerated while it is within the batch's noise margin.
    """

    reference: str | dict[str, Any] | SuiteParameterDict | None = None
    threshold: float | SuiteParameterDict = pydantic.Field(default=0.05)

    metric_dependencies = (METRIC,)
    success_keys = ("reference", "threshold")
    args_keys = ("column", "reference", "threshold")
    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "experimental",
        "tags": ["livefeat", "drift"],
        "contributors": ["livefeat"],
    }

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: ExecutionEngine | None = None,
    ) -> dict[str, Any]:
        found = metrics[METRIC]
        threshold = float(self._get_success_kwargs()["threshold"])
        details: dict[str, Any] = {"threshold": threshold, "rows": found["rows"], "measures": {}}
        if found.get("note"):
            details["note"] = found["note"]
        drifted = False
        observed = 0.0
        for name, m in found["measures"].items():
            limit = max(threshold, float(m["margin"]))
            bad = float(m["value"]) > limit
            drifted = drifted or bad
            observed = max(observed, float(m["value"]))
            details["measures"][name] = {
                "value": round(float(m["value"]), 6),
                "margin": round(float(m["margin"]), 6),
                "limit": round(limit, 6),
                "n": int(m["n"]),
                "drifted": bad,
            }
        return {"success": not drifted, "result": {"observed_value": observed, "details": details}}
