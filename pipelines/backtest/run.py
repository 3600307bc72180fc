"""One backtest: labels and rules in, features as of each label's time, alerts and figures out.

Use::

    ruleset = load_rules("marketplace_rules")
    labels = read_labels("labels.parquet", ruleset_keys)
    result = run_backtest(ruleset, labels, ".livefeat/offline")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.backtest.catalog import DAY_MS
from pipelines.backtest.labelset import EVENT_TIME, LABEL, Labels
from pipelines.backtest.metrics import DailyPoint, RuleMetrics, daily, period_days, rule_metrics
from pipelines.backtest.retrieval import (
    CREATED_TS,
    EVENT_TS,
    Retrieved,
    point_in_time,
    read_changelog,
)
from pipelines.backtest.rules import CompiledRule, RuleSet
from pipelines.errors import ConfigError, UserCodeError

log = logging.getLogger(__name__)

ALERT_PREFIX = "alert_"
"""Output column per rule: ``alert_<rule>``, true when the rule fired on the event."""


@dataclass
class BacktestResult:
    """Everything a backtest produced.

    Attributes:
        ruleset: the rules.
        labels: the labelled events.
        rows: one row per labelled event: the label's columns, every feature the rules
            read (as seen at the label's time), per view the ``event_timestamp`` and
            ``created_timestamp`` of the changelog row used (``<view>__event_timestamp``,
            null when the entity had no visible row), and ``alert_<rule>`` per rule.
        metrics: per rule, the figures.
        daily: per rule and UTC day, the figures.
        as_known_at: whether rows were also required to be written by the label's time.
        from_ms: start of the period (None: open).
        to_ms: end of the period, exclusive (None: open).
        notes: things a reader of the figures should know (entities without history...).
        stats: rows read per view and seconds per phase.
    """

    ruleset: RuleSet
    labels: Labels
    rows: pa.Table
    metrics: list[RuleMetrics]
    daily: list[DailyPoint]
    as_known_at: bool
    from_ms: int | None
    to_ms: int | None
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def check_inputs(ruleset: RuleSet, labels: Labels) -> None:
    """Fail before reading any changelog when the labels cannot serve a rule.

    Raises:
        ConfigError: a rule needs an entity key the labels lack (the rule is named), or a
            labels column has the name of a feature or an alert column.
    """
    for rule in ruleset.rules:
        for ref in rule.refs:
            if ref.key not in labels.keys:
                raise ConfigError(
                    f"rule {rule.name!r} reads {ref.name} (view {ref.view}, looked up by "
                    f"{ref.key}) but the labels have no {ref.key} column",
                    where=labels.source,
                    fix=f"add {ref.key} to the labels, or leave rule {rule.name!r} out",
                )
    taken = {ref.name for ref in ruleset.features}
    taken |= {f"{ALERT_PREFIX}{r.name}" for r in ruleset.rules}
    taken |= {f"{view}__{c}" for view in ruleset.stored_by_view() for c in (EVENT_TS, CREATED_TS)}
    clash = sorted(taken & set(labels.table.schema.names))
    if clash:
        raise ConfigError(
            f"labels columns {', '.join(clash)} have the names of backtest output columns",
            where=labels.source,
            fix="rename or drop those columns in the labels file",
        )


def run_backtest(
    ruleset: RuleSet,
    labels: Labels,
    uri: str,
    *,
    as_known_at: bool = False,
    from_ms: int | None = None,
    to_ms: int | None = None,
    s3_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Evaluate every rule on every labelled event with the features as of its time.

    Args:
        ruleset: checked rules (:func:`~pipelines.backtest.rules.load_rules`).
        labels: labelled events (:func:`~pipelines.backtest.labelset.read_labels`),
            already limited to the period.
        uri: the offline store (local directory or ``s3://bucket/prefix``).
        as_known_at: use only changelog rows written (``created_timestamp``) by the
            label's time, reproducing what production knew.
        from_ms: start of the period, for alerts per day (None: the first label's day).
        to_ms: end of the period, exclusive (None: the end of the last label's day).
        s3_options: ``pyarrow.fs.S3FileSystem`` options for ``s3://`` stores.
        progress: called with one-line progress messages.

    Raises:
        ConfigError: the labels cannot serve a rule, or the store lacks a changelog.
        UserCodeError: a rule's arithmetic overflowed (the rule is named).
    """
    say = progress or log.info
    check_inputs(ruleset, labels)
    times = labels.times
    n = len(labels)
    until = int(times.max())
    stats: dict[str, Any] = {"rows_read": {}, "seconds": {}}
    notes: list[str] = []
    columns: dict[str, pa.Array] = {}
    audit: dict[str, pa.Array] = {}
    newest: list[int] = []
    for view, stored in ruleset.stored_by_view().items():
        refs = [ruleset.catalog[name] for name in stored]
        key = refs[0].key
        started = time.perf_counter()
        changelog = read_changelog(
            uri, view, key, stored, until, as_known_at=as_known_at, s3_options=s3_options
        )
        read_s = time.perf_counter() - started
        got = point_in_time(
            changelog,
            key,
            stored,
            [r.empty for r in refs],
            labels.table.column(key),
            times,
            as_known_at=as_known_at,
        )
        del changelog
        stats["rows_read"][view] = got.rows_read
        stats["seconds"][view] = {
            "read": round(read_s, 3),
            "join": round(time.perf_counter() - started - read_s, 3),
        }
        say(f"{view}: {got.rows_read:,} changelog rows read, {n:,} labelled events joined")
        notes += _notes(view, key, labels, got)
        if got.newest_ms is not None:
            newest.append(got.newest_ms)
        for name in stored:
            columns[name] = got.values.column(name).combine_chunks()
        audit[f"{view}__{EVENT_TS}"] = got.event_timestamp
        audit[f"{view}__{CREATED_TS}"] = got.created_timestamp
    notes += _staleness_note(labels, newest)
    for ref in ruleset.features:
        if ref.derived_from is not None:
            columns[ref.name] = _age_days(columns[ref.derived_from], times)
    started = time.perf_counter()
    alerts = {rule.name: _evaluate(rule, columns, n) for rule in ruleset.rules}
    stats["seconds"]["rules"] = round(time.perf_counter() - started, 3)
    positives = labels.positives
    days = period_days(times, from_ms, to_ms)
    metrics = [
        rule_metrics(r.name, r.rule.expr, r.rule.description, alerts[r.name], positives, days)
        for r in ruleset.rules
    ]
    series = [
        point
        for r in ruleset.rules
        for point in daily(r.name, alerts[r.name], positives, times, from_ms, to_ms)
    ]
    rows = labels.table
    for ref in ruleset.features:
        rows = rows.append_column(ref.name, columns[ref.name])
    for name, values in audit.items():
        rows = rows.append_column(name, values)
    for rule in ruleset.rules:
        rows = rows.append_column(f"{ALERT_PREFIX}{rule.name}", pa.array(alerts[rule.name]))
    return BacktestResult(
        ruleset, labels, rows, metrics, series, as_known_at, from_ms, to_ms, notes, stats
    )


def _age_days(created_at: pa.Array, times: np.ndarray) -> pa.Array:
    """Age in days at each label's time of a timestamp column (null stays null)."""
    created_ms = pc.cast(pc.cast(created_at, pa.timestamp("ms", tz="UTC")), pa.int64())
    return pc.divide(
        pc.cast(pc.subtract(pa.array(times, pa.int64()), created_ms), pa.float64()),
        float(DAY_MS),
    )


def _evaluate(rule: CompiledRule, columns: dict[str, pa.Array], n: int) -> np.ndarray:
    inputs = {}
    for name in rule.predicate.features:
        column = columns[name]
        if pa.types.is_timestamp(column.type):
            column = pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.int64())
        inputs[name] = column
    try:
        result: np.ndarray = rule.predicate.evaluate(inputs, n)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UserCodeError(
            f"evaluating the rule failed: {exc}",
            where=f"rule {rule.name!r}",
            fix="check the rule's arithmetic (overflow) and types",
        ) from exc
    return result


def _notes(view: str, key: str, labels: Labels, got: Retrieved) -> list[str]:
    out = []
    keys = labels.table.column(key)
    no_key = keys.null_count
    no_history = int(got.event_timestamp.null_count) - no_key
    if no_key:
        out.append(f"{view}: {no_key:,} labelled events have no {key}; its features are null")
    if no_history:
        out.append(
            f"{view}: {no_history:,} labelled events had no visible row for their {key} "
            "(empty values used: 0 for counts and sums, null otherwise)"
        )
    if got.newest_ms is None:
        out.append(f"{view}: the changelog has no row at or before the last labelled event")
    return out


def _staleness_note(labels: Labels, newest: list[int]) -> list[str]:
    """Labels later than every changelog row read: was the pipeline there yet?"""
    if not newest:
        return []
    later = int(np.count_nonzero(labels.times > max(newest)))
    if not later:
        return []
    when = datetime.fromtimestamp(max(newest) / 1000, tz=UTC).isoformat(timespec="seconds")
    return [
        f"{later:,} labelled events are later than the newest changelog row read ({when}); "
        "if the pipeline had not processed that far, their values may be stale"
    ]


__all__ = ["ALERT_PREFIX", "EVENT_TIME", "LABEL", "BacktestResult", "check_inputs", "run_backtest"]
