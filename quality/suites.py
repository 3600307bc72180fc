"""The Great Expectations suites kept as files under ``quality/suites/``, read without GX.

Three kinds of suite, told apart by ``meta.level``:

* ``rows.<topic>.json`` (``level: rows``): row expectations of one event type. Each
  expectation's ``meta.reason`` is the quarantine reason code of
  :mod:`quality.rows`; the expectations are listed in priority order, so a row
  failing several is reported with the first it fails. ``meta.subject`` names the
  topic and ``meta.time_field`` its event-time field.
* ``features.<view>.json`` (``level: features``): batch expectations of one feature
  view. ``meta.check: integrity`` expectations run on every micro-batch;
  ``meta.check: drift`` expectations (``expect_column_to_not_drift``) compare the
  batch with the view's reference profile, with ``meta.kind`` ``numeric`` or
  ``categorical`` choosing the measure. ``meta.key`` names the entity key column.
* ``events.<topic>.json`` (``level: events``): batch expectations of one topic's
  accepted events (input drift: e.g. order amounts), the same expectation types as a
  feature suite, with the topic's reference profile (``profiles/<topic>.json``).
  ``meta.subject`` names the topic and ``meta.time_field`` its event-time field.
  Batches are tumbling event-time windows of ``batch_max_ms`` (events reach the gate
  in arrival order); ``meta.batch_max_ms`` and ``meta.min_rows`` may set the topic's
  bounds (a topic has far fewer rows a minute than a view has changelog rows;
  ``quality.views.<topic>`` in the configuration still wins). A failed events
  batch is recorded and alerted (``warn``), never held: its events have already been
  applied to the features.

Suites may use two suite parameters, filled in by the gate at every validation:
``currencies`` and ``max_event_time_ms`` (row suites), ``drift_threshold`` and
``reference_<column>`` (feature and events suites).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipelines.errors import ConfigError

QUALITY_DIR = Path(__file__).resolve().parent
"""The quality package's directory: ``suites/`` and ``profiles/`` shipped with livefeat."""

SUITES_DIR = QUALITY_DIR / "suites"
"""The suites shipped with livefeat."""

REASONS: tuple[str, ...] = (
    "empty_id",
    "non_positive_amount",
    "unsupported_currency",
    "future_event_time",
    "unknown_enum",
)
"""Row reason codes, in the priority order of :mod:`quality.rows` (``unknown_enum`` last)."""

DRIFT_EXPECTATION = "expect_column_to_not_drift"
KINDS: tuple[str, ...] = ("numeric", "categorical")
BATCH_LEVELS: tuple[str, ...] = ("features", "events")
"""Levels of the suites validated on micro-batches (with drift against a profile)."""
BATCH_BOUNDS: tuple[str, ...] = ("batch_max_ms", "min_rows")
"""Batch bounds an events suite may set in its ``meta``."""


@dataclass(frozen=True)
class SuiteFile:
    """One suite file, checked for the ``meta`` fields livefeat relies on."""

    name: str
    level: Literal["rows", "features", "events"]
    path: Path
    data: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        """The suite's ``meta`` mapping."""
        meta: dict[str, Any] = self.data.get("meta") or {}
        return meta

    @property
    def expectations(self) -> list[dict[str, Any]]:
        """Expectation configurations, in file order."""
        exps: list[dict[str, Any]] = self.data.get("expectations") or []
        return exps

    @property
    def subject(self) -> str:
        """Topic of a row suite (empty for feature suites)."""
        return str(self.meta.get("subject", ""))

    @property
    def view(self) -> str:
        """Feature view of a feature suite (empty for row suites)."""
        return str(self.meta.get("view", ""))

    @property
    def batch_of(self) -> str:
        """What a batch suite validates, as the gate and the profiles name it: the view
        (``features``) or the topic (``events``); empty for row suites."""
        if self.level == "features":
            return self.view
        return self.subject if self.level == "events" else ""

    @property
    def batch_defaults(self) -> dict[str, int]:
        """Batch bounds an events suite sets for its topic (``meta.batch_max_ms``,
        ``meta.min_rows``; checked positive integers on load)."""
        return {k: int(self.meta[k]) for k in BATCH_BOUNDS if k in self.meta}

    @property
    def time_field(self) -> str:
        """The rows' event-time column: ``event_timestamp`` for changelog rows."""
        return str(self.meta.get("time_field") or "event_timestamp")

    @property
    def columns(self) -> list[str]:
        """Every column the expectations read, in first-use order."""
        seen: dict[str, None] = {}
        if self.level == "features":
            seen[str(self.meta["key"])] = None
        for e in self.expectations:
            seen.update(dict.fromkeys(expectation_columns(e)))
        return list(seen)

    @property
    def drift_columns(self) -> dict[str, str]:
        """``{column: kind}`` of the drift expectations (feature suites)."""
        return {
            str(e["kwargs"]["column"]): str(e["meta"]["kind"])
            for e in self.expectations
            if e["type"] == DRIFT_EXPECTATION
        }


def expectation_columns(expectation: dict[str, Any]) -> list[str]:
    """The columns an expectation reads: ``kwargs.column`` or ``kwargs.column_list``."""
    kwargs = expectation.get("kwargs") or {}
    if isinstance(kwargs.get("column"), str):
        return [kwargs["column"]]
    return [str(c) for c in kwargs.get("column_list") or []]


def expectation_label(expectation: dict[str, Any], column: str | None = None) -> str:
    """``type(column)``, e.g. ``expect_column_values_to_be_between(amount_cents)``."""
    cols = [column] if column else expectation_columns(expectation)
    return f"{expectation['type']}({', '.join(cols)})"


def _problem(path: Path, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(problem, where=f"{path}, key {key}", fix=fix)


def _check(path: Path, data: Any) -> SuiteFile:
    if not isinstance(data, dict):
        raise _problem(path, "(top level)", "a suite must be a JSON object", "see docs/quality.md")
    name = data.get("name")
    if name != path.stem:
        raise _problem(
            path, "name", f"suite name {name!r} differs from the file name",
            f'set "name": "{path.stem}"',
        )
    meta = data.get("meta") or {}
    level = meta.get("level")
    if level not in ("rows", *BATCH_LEVELS):
        raise _problem(path, "meta.level", f"unknown level {level!r}",
                       'use "rows", "features" or "events"')
    needed = ("view", "key") if level == "features" else ("subject", "time_field")
    for key in needed:
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise _problem(path, f"meta.{key}", "missing", f"name the {key} in meta.{key}")
    for key in BATCH_BOUNDS if level == "events" else ():
        value = meta.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise _problem(path, f"meta.{key}", f"{value!r} is not a positive integer",
                           f"give meta.{key} as a whole number, or leave it out")
    exps = data.get("expectations")
    if not isinstance(exps, list) or not exps:
        raise _problem(path, "expectations", "no expectations", "list at least one expectation")
    for i, e in enumerate(exps):
        where = f"expectations[{i}]"
        if not isinstance(e, dict) or not expectation_columns(e):
            raise _problem(
                path, where, "every expectation needs kwargs.column or kwargs.column_list",
                "name the column(s) it checks",
            )
        e_meta = e.get("meta") or {}
        if level == "rows" and e_meta.get("reason") not in REASONS:
            raise _problem(
                path, f"{where}.meta.reason", f"unknown reason {e_meta.get('reason')!r}",
                f"use one of {', '.join(REASONS)}",
            )
        drift = level in BATCH_LEVELS and e.get("type") == DRIFT_EXPECTATION
        if drift and e_meta.get("kind") not in KINDS:
            raise _problem(
                path, f"{where}.meta.kind", f"unknown kind {e_meta.get('kind')!r}",
                "use numeric or categorical",
            )
    return SuiteFile(name=name, level=level, path=path, data=data)


def load_suite_files(directory: Path | None = None) -> dict[str, SuiteFile]:
    """Every ``*.json`` suite of ``directory`` (default: the shipped suites), by name.

    Raises:
        ConfigError: a file is not JSON or lacks a field livefeat needs.
    """
    directory = directory or SUITES_DIR
    if not directory.is_dir():
        raise ConfigError(
            "suite directory not found", where=str(directory),
            fix="point the gate at a directory holding rows.*.json and features.*.json",
        )
    suites: dict[str, SuiteFile] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"not a readable JSON suite: {exc}", where=str(path), fix="fix the JSON syntax"
            ) from exc
        suite = _check(path, data)
        suites[suite.name] = suite
    return suites


def row_suite_name(subject: str) -> str:
    """Name of the row suite of a topic."""
    return f"rows.{subject}"


def feature_suite_name(view: str) -> str:
    """Name of the batch suite of a feature view."""
    return f"features.{view}"


def event_suite_name(subject: str) -> str:
    """Name of the batch (input drift) suite of a topic's accepted events."""
    return f"events.{subject}"


def batch_suites(suites: dict[str, SuiteFile]) -> dict[str, SuiteFile]:
    """The batch suites (feature and events) by what they validate (view or topic).

    Raises:
        ConfigError: a view and a topic share a name, so their batches could not be told apart.
    """
    out: dict[str, SuiteFile] = {}
    for suite in suites.values():
        if suite.level not in BATCH_LEVELS:
            continue
        other = out.get(suite.batch_of)
        if other is not None:
            raise _problem(suite.path, "meta", f"{other.path.name} validates "
                           f"{suite.batch_of!r} too", "keep one batch suite per view or topic")
        out[suite.batch_of] = suite
    return out
