"""A backtest's outputs: a terminal table, files, and a self-contained HTML report with charts.

Files written to the output directory:

| file | what |
|---|---|
| ``rows.parquet`` | one row per labelled event: label, features as seen, rows used, alerts |
| ``metrics.json`` | run description, per-rule figures, per-day series, notes |
| ``metrics.csv`` | per-rule figures (the terminal table) |
| ``daily.csv`` | per rule and UTC day: labelled, fraud, alerts, tp, precision |
| ``report.html`` | the table and, per rule, alerts and precision over time (inline SVG) |
"""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipelines.backtest import chart
from pipelines.backtest.metrics import RuleMetrics, period
from pipelines.backtest.run import ALERT_PREFIX, BacktestResult
from pipelines.errors import SinkError

_COLUMNS = ("rule", "alerts", "alerts/day", "tp", "fp", "fn", "tn", "precision", "recall")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _iso(ms: int | None) -> str:
    if ms is None:
        return "open"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def table_rows(metrics: list[RuleMetrics]) -> list[tuple[str, ...]]:
    """The summary table as strings, one tuple per rule (columns as in the terminal)."""
    return [
        (
            m.rule,
            str(m.alerts),
            f"{m.alerts_per_day:.1f}",
            str(m.tp),
            str(m.fp),
            str(m.fn),
            str(m.tn),
            _fmt(m.precision),
            _fmt(m.recall),
        )
        for m in metrics
    ]


def summary(result: BacktestResult) -> dict[str, Any]:
    """What was run, on what."""
    labels = result.labels
    start, end = period(labels.times, result.from_ms, result.to_ms)
    return {
        "rules": result.ruleset.source,
        "pipeline": result.ruleset.pipeline.name,
        "labels": labels.source,
        "labelled": len(labels),
        "positives": int(labels.positives.sum()),
        "period": {"from": _iso(start), "to": _iso(end), "days": (end - start) / 86_400_000},
        "as_known_at": result.as_known_at,
    }


def format_table(result: BacktestResult) -> str:
    """The per-rule table with a header line and the notes, for a terminal."""
    info = summary(result)
    rows = [_COLUMNS, *table_rows(result.metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [
        f"backtest of {info['rules']} on {info['labels']}: {info['labelled']:,} labelled events, "
        f"{info['positives']:,} fraud, {info['period']['from']} to {info['period']['to']} "
        f"({info['period']['days']:.2f} days), "
        + ("as known at each event's time" if result.as_known_at else "as of each event's time"),
        "",
    ]
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def write_outputs(result: BacktestResult, out_dir: str | Path) -> dict[str, Path]:
    """Write every output file; returns name -> path.

    Raises:
        SinkError: the directory cannot be created or written.
    """
    out = Path(out_dir)
    paths = {
        name: out / name
        for name in ("rows.parquet", "metrics.json", "metrics.csv", "daily.csv", "report.html")
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic(paths["rows.parquet"], lambda p: pq.write_table(result.rows, p, compression="zstd"))
        document = {
            **summary(result),
            "rules_detail": [m.as_dict() for m in result.metrics],
            "daily": [d.as_dict() for d in result.daily],
            "notes": result.notes,
            "stats": result.stats,
        }
        _atomic(paths["metrics.json"], lambda p: p.write_text(json.dumps(document, indent=1)))
        _atomic(paths["metrics.csv"], lambda p: _csv(p, _COLUMNS, table_rows(result.metrics)))
        daily_rows = [
            tuple(str("" if v is None else v) for v in d.as_dict().values()) for d in result.daily
        ]
        daily_head = tuple(result.daily[0].as_dict()) if result.daily else ()
        _atomic(paths["daily.csv"], lambda p: _csv(p, daily_head, daily_rows))
        _atomic(paths["report.html"], lambda p: p.write_text(html_report(result)))
    except OSError as exc:
        raise SinkError(
            f"cannot write the backtest outputs: {exc}",
            where=str(out),
            fix="pass --out with a writable directory",
        ) from exc
    return paths


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _csv(path: Path, head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(head)
        writer.writerows(rows)


def html_report(result: BacktestResult) -> str:
    """The report as one HTML document (no external resources)."""
    info = summary(result)
    labels = result.labels
    start, end = period(labels.times, result.from_ms, result.to_ms)
    head = "".join(f"<th>{escape(c)}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(result.metrics)
    )
    panels = []
    positives = labels.positives
    for m, rule in zip(result.metrics, result.ruleset.rules, strict=True):
        alerts = np.asarray(result.rows.column(f"{ALERT_PREFIX}{m.rule}").to_numpy(), dtype=bool)
        starts, tp, fp, width = chart.series(labels.times, alerts, positives, start, end)
        figures = (
            f"precision {_fmt(m.precision)}, recall {_fmt(m.recall)}, "
            f"{m.alerts:,} alerts ({m.alerts_per_day:.1f} per day), "
            f"tp {m.tp:,}, fp {m.fp:,}, fn {m.fn:,}"
        )
        panels.append(chart.panel(m.rule, (rule.rule.expr, figures), starts, tp, fp, width))
    notes = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
    mode = "as known at" if result.as_known_at else "as of"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>livefeat backtest</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #f1f3f5; }}
.meta {{ color: #555; }}
svg {{ display: block; margin: 18px 0; }}
</style></head><body>
<h1>Backtest of {escape(info["rules"])}</h1>
<p class="meta">Labels {escape(info["labels"])}: {info["labelled"]:,} labelled events,
{info["positives"]:,} fraud. Period {escape(info["period"]["from"])} to
{escape(info["period"]["to"])} ({info["period"]["days"]:.2f} days). Features {mode} each
event's time from pipeline {escape(info["pipeline"])}.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
{"".join(panels)}
</body></html>
"""
