"""The ``empty_id`` rule as GX expectations: ``expect_multicolumn_values_to_not_be_blank``
(and ``expect_column_values_to_not_be_blank`` for a topic with a single id field).

:mod:`quality.rows` rejects a record when any string field named ``*_id`` is empty or
whitespace only (``not value.strip()``); values that are not strings (null) pass.
One multicolumn map expectation over every id column does that in a single pass:
GX's per-expectation cost is paid once instead of once per id column, and the test
runs in Arrow (``utf8_trim`` with exactly the characters Python's ``str.isspace``
accepts), not as a Python regex per value. GX's multicolumn domain needs two
columns or more, hence the single-column twin. Importing this module registers both
expectations with GX.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.compatibility import pydantic
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    MulticolumnMapExpectation,
)
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_condition_partial,
    multicolumn_condition_partial,
)

CONDITION = "multicolumn_values.not_blank"
COLUMN_CONDITION = "column_values.not_blank"
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
"""Every character ``str.strip()`` removes."""


def blank_mask(values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    """True where a value is a string that is empty or whitespace only."""
    objects = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    try:
        arr = pa.array(objects, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all strings: decide value by value
        return np.array([isinstance(v, str) and not v.strip() for v in objects], dtype=bool)
    trimmed = pc.utf8_length(pc.utf8_trim(arr, characters=WHITESPACE))
    return np.asarray(pc.fill_null(pc.equal(trimmed, 0), False), dtype=bool)


class MulticolumnValuesNotBlank(MulticolumnMapMetricProvider):
    """Row condition: no listed column holds an empty or whitespace-only string."""

    condition_metric_name = CONDITION
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_list",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list: pd.DataFrame, **kwargs: Any) -> pd.Series:
        blank = np.zeros(len(column_list), dtype=bool)
        for name in column_list.columns:
            blank |= blank_mask(column_list[name])
        return pd.Series(~blank, index=column_list.index)


class ColumnValuesNotBlank(ColumnMapMetricProvider):
    """Value condition: not an empty or whitespace-only string."""

    condition_metric_name = COLUMN_CONDITION

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return pd.Series(~blank_mask(column), index=column.index)


class ExpectColumnValuesToNotBeBlank(ColumnMapExpectation):
    """Expect no value of the column to be an empty or whitespace-only string."""

    map_metric = COLUMN_CONDITION
    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "experimental",
        "tags": ["livefeat"],
        "contributors": ["livefeat"],
    }


class ExpectMulticolumnValuesToNotBeBlank(MulticolumnMapExpectation):
    """Expect no value of the listed columns to be an empty or whitespace-only string.

    Args:
        column_list: the columns (for ``empty_id``: every string ``*_id`` field, in
            schema order, so the first blank one names the failure).
        ignore_row_if: GX's multicolumn option; ``never`` checks every row.
    """

    column_list: list[str] = pydantic.Field(min_items=2)
    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "never"

    map_metric = CONDITION
    args_keys = ("column_list",)

    library_metadata: ClassVar[dict[str, Any]] = {
        "maturity": "experimental",
        "tags": ["livefeat"],
        "contributors": ["livefeat"],
    }


def first_blank(row: dict[str, Any], columns: Sequence[str]) -> str:
    """The first of ``columns`` whose value in ``row`` is blank (the one rows.py reports)."""
    for name in columns:
        value = row.get(name)
        if isinstance(value, str) and not value.strip():
            return name
    return columns[0]
