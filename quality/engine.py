"""The Great Expectations runtime of the gate: one ephemeral context, built once.

Per suite, one pandas data asset and one whole-dataframe batch definition are
created at load and reused for every batch, so a validation pays only GX's
per-expectation cost. Two settings keep that cost down:

* result format ``COMPLETE`` without the unexpected-index query string (the gate
  needs ``unexpected_index_list`` to remove failing rows, not a pandas snippet);
* no batch fingerprint: GX 1.x hashes every in-memory dataframe below 1 GB
  (``pandas_data_fingerprint``, an md5 over pandas' row hashes) only to label the
  batch markers. That was about a third of the validation time of a 100k-row
  order batch. The gate sets the pandas engine's ``HASH_THRESHOLD`` to 0 once, at
  load; if a GX version renames it nothing breaks, validation just costs more.

Importing this module imports GX (seconds); :mod:`quality` imports it lazily.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import great_expectations as gx
import great_expectations.execution_engine.pandas_execution_engine as gx_pandas_engine
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
)
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.exceptions import GreatExpectationsError

# registers expect_column_to_not_drift and expect_multicolumn_values_to_not_be_blank with GX
import quality.gx_drift
import quality.gx_rules  # noqa: F401
from pipelines.errors import ConfigError
from quality.suites import SuiteFile

log = logging.getLogger("livefeat.quality")

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}


def _no_fingerprint() -> None:
    if hasattr(gx_pandas_engine, "HASH_THRESHOLD"):
        gx_pandas_engine.HASH_THRESHOLD = 0


class GxRuntime:
    """GX context, data source, and one asset + batch definition per suite."""

    def __init__(self) -> None:
        _no_fingerprint()
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("livefeat")
        self._batch_definitions: dict[str, Any] = {}
        self._suites: dict[str, gx.ExpectationSuite] = {}
        self._lock = threading.Lock()

    def add_suite(self, suite: SuiteFile, name: str | None = None, keep: Any = None) -> str:
        """Build the GX suite of a file (optionally only expectations ``keep`` accepts).

        Returns:
            The name the suite is validated under.

        Raises:
            ConfigError: GX rejects an expectation of the file.
        """
        name = name or suite.name
        exps = [e for e in suite.expectations if keep is None or keep(e)]
        try:
            built = gx.ExpectationSuite(name=name, expectations=exps, meta=suite.meta)
        except (GreatExpectationsError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"Great Expectations rejects the suite: {exc}",
                where=str(suite.path),
                fix="check the expectation types and kwargs against GX 1.x",
            ) from exc
        asset = self.source.add_dataframe_asset(name)
        self._batch_definitions[name] = asset.add_batch_definition_whole_dataframe("batch")
        self._suites[name] = built
        return name

    def suite(self, name: str) -> gx.ExpectationSuite:
        """The GX suite registered under ``name``."""
        return self._suites[name]

    def validate(
        self, name: str, frame: pd.DataFrame, parameters: dict[str, Any]
    ) -> ExpectationSuiteValidationResult:
        """Validate one batch (a dataframe) against the suite called ``name``."""
        with self._lock:
            batch = self._batch_definitions[name].get_batch(batch_parameters={"dataframe": frame})
            result: ExpectationSuiteValidationResult = batch.validate(
                self._suites[name],
                expectation_parameters=parameters,
                result_format=RESULT_FORMAT,
            )
        return result


def frame_of(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A dataframe of ``columns`` (missing keys become null), one row per dict, index 0..n-1."""
    return pd.DataFrame.from_records(rows, columns=columns)
