"""Validation results for people: a summary (tables) and a self-contained HTML page.

The page has no external resources: charts are inline SVG (drift of every measured
column over the batches' event time, with the limit each batch was judged
against), tables of outcomes per suite, of failed feature batches, and of batches
held for release.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quality.results import ResultStore, now_iso


@dataclass
class RowSuiteSummary:
    """Totals of one row suite."""

    suite: str
    batches: int = 0
    rows: int = 0
    passed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class FeatureSuiteSummary:
    """Totals of one feature suite."""

    view: str
    batches: int = 0
    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    not_judged: int = 0
    released: int = 0


@dataclass
class Summary:
    """Everything the report shows, gathered from a :class:`ResultStore`."""

    rows: dict[str, RowSuiteSummary]
    features: dict[str, FeatureSuiteSummary]
    feature_results: list[dict[str, Any]]
    held: list[dict[str, Any]]


def summarize(store: ResultStore, view: str | None = None) -> Summary:
    """Read every stored result (optionally of one view) into a :class:`Summary`."""
    rows: dict[str, RowSuiteSummary] = {}
    features: dict[str, FeatureSuiteSummary] = {}
    feature_results: list[dict[str, Any]] = []
    for rec in store.results():
        kind = rec.get("kind")
        if kind == "rows" and view is None:
            s = rows.setdefault(rec["suite"], RowSuiteSummary(rec["suite"]))
            s.batches += 1
            s.rows += int(rec["rows"])
            s.passed += int(rec["passed"])
            for reason, n in (rec.get("by_reason") or {}).items():
                s.by_reason[reason] = s.by_reason.get(reason, 0) + int(n)
        elif kind in ("features", "events") and view in (None, rec["view"]):
            f = features.setdefault(rec["view"], FeatureSuiteSummary(rec["view"]))
            f.batches += 1
            f.rows += int(rec["rows"])
            f.outcomes[rec["action"]] = f.outcomes.get(rec["action"], 0) + 1
            f.not_judged += 0 if rec.get("judged") else 1
            feature_results.append(rec)
        elif kind == "release" and view in (None, rec["view"]):
            features.setdefault(rec["view"], FeatureSuiteSummary(rec["view"])).released += 1
    held = [{**b.info, "rows": len(b.rows)} for b in store.held(view)]
    return Summary(rows, features, feature_results, held)


def _ms(value: int | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


Point = tuple[float, float, float, bool]


def _series(results: list[dict[str, Any]]) -> dict[str, dict[str, list[Point]]]:
    """view -> "column: measure" -> [(x, value, limit, drifted)] over judged batches, in x
    order; a measure that stayed 0 in every batch (e.g. the null share of a column that
    is never null) is left out."""
    out: dict[str, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for rec in results:
        if not rec.get("judged"):
            continue
        x = rec.get("event_time_min")
        if x is None:
            x = datetime.fromisoformat(rec["validated_at"]).timestamp() * 1000
        for column, c in (rec.get("columns") or {}).items():
            for name, m in (c.get("measures") or {}).items():
                out[rec["view"]][f"{column}: {name}"].append(
                    (float(x), float(m["value"]), float(m["limit"]), bool(m["drifted"]))
                )
    for view, series in out.items():
        out[view] = defaultdict(
            list, {k: sorted(p) for k, p in series.items() if any(v for _, v, _, _ in p)}
        )
    return out


def _svg(points: list[Point], threshold: float | None) -> str:
    width, height, pad_l, pad_b, pad_t = 560, 150, 46, 20, 8
    xs = [p[0] for p in points]
    top = max([p[1] for p in points] + [p[2] for p in points] + [threshold or 0.0]) * 1.1 or 1.0
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0

    def sx(x: float) -> float:
        return pad_l + (x - x0) / span * (width - pad_l - 6)

    def sy(y: float) -> float:
        return pad_t + (1 - y / top) * (height - pad_t - pad_b)

    value_line = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v, _, _ in points)
    limit_line = " ".join(f"{sx(x):.1f},{sy(lim):.1f}" for x, _, lim, _ in points)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="3" fill="#c0392b"><title>'
        f"{_ms(int(x))}: {v:.3f} &gt; {lim:.3f}</title></circle>"
        for x, v, lim, bad in points
        if bad
    )
    threshold_line = ""
    if threshold is not None:
        y = sy(threshold)
        threshold_line = (
            f'<line x1="{pad_l}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e67e22" stroke-dasharray="5,4"/>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'class="chart">'
        f'<line x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{height - pad_b}" stroke="#999"/>'
        f'<line x1="{pad_l}" x2="{width - 6}" y1="{height - pad_b}" y2="{height - pad_b}" '
        'stroke="#999"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{top:.2f}</text>'
        f'<text x="{pad_l - 4}" y="{height - pad_b}" text-anchor="end">0</text>'
        f'<text x="{pad_l}" y="{height - 4}">{_ms(int(x0))}</text>'
        f'<text x="{width - 6}" y="{height - 4}" text-anchor="end">{_ms(int(x1))}</text>'
        f"{threshold_line}"
        f'<polyline points="{limit_line}" fill="none" stroke="#bbb" stroke-dasharray="2,3"/>'
        f'<polyline points="{value_line}" fill="none" stroke="#2c6fbb" stroke-width="1.5"/>'
        f"{dots}</svg>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4} .num{text-align:right}
.pass{color:#1e8449}.warn{color:#b9770e}.block{color:#c0392b;font-weight:600}
.chart text{font-size:10px;fill:#555} .grid{display:flex;flex-wrap:wrap;gap:8px 24px}
.muted{color:#777;font-size:12px}
"""


def _table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def render_html(summary: Summary, title: str = "livefeat quality report") -> str:
    """The report as one self-contained HTML document."""
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
        f"<p class='muted'>generated {esc(now_iso())}</p>",
        "<h2>Row suites</h2>",
    ]
    parts.append(
        _table(
            ["suite", "batches", "rows", "passed", "quarantined", "by reason"],
            [
                [esc(s.suite), str(s.batches), str(s.rows), str(s.passed), str(s.rows - s.passed),
                 esc(", ".join(f"{k}: {v}" for k, v in sorted(s.by_reason.items())) or "-")]
                for s in summary.rows.values()
            ],
        )
        if summary.rows
        else "<p class='muted'>no row validations stored</p>"
    )
    parts.append("<h2>Feature and events suites</h2>")
    parts.append(
        _table(
            ["view", "batches", "rows", "pass", "warn", "block", "drift not judged", "released"],
            [
                [esc(f.view), str(f.batches), str(f.rows)]
                + [str(f.outcomes.get(a, 0)) for a in ("pass", "warn", "block")]
                + [str(f.not_judged), str(f.released)]
                for f in summary.features.values()
            ],
        )
        if summary.features
        else "<p class='muted'>no feature validations stored</p>"
    )
    thresholds = {r["view"]: r.get("threshold") for r in summary.feature_results}
    parts.append(
        "<h2>Drift over time</h2><p class='muted'>One chart per column and measure. Blue: the "
        "measure in each judged batch (x: first event time of the batch). Grey dots: the limit "
        "it was judged against (the threshold, or the noise margin when larger). Orange "
        "dashes: the threshold. Red: drifted.</p>"
    )
    for view, columns in sorted(_series(summary.feature_results).items()):
        parts.append(f"<h3>{esc(view)}</h3><div class='grid'>")
        for column, points in sorted(columns.items()):
            parts.append(
                f"<div><div>{esc(column)}</div>{_svg(points, thresholds.get(view))}</div>"
            )
        parts.append("</div>")
    failed = [r for r in summary.feature_results if r["action"] != "pass"][-200:]
    parts.append("<h2>Failed feature and events batches</h2>")
    parts.append(
        _table(
            ["event time", "view", "batch", "action", "rows", "drifted columns", "failed"],
            [
                [esc(_ms(r.get("event_time_min"))), esc(r["view"]), esc(r["batch_id"]),
                 f"<span class='{esc(r['action'])}'>{esc(r['action'])}</span>", str(r["rows"]),
                 esc(", ".join(
                     f"{c} ({max(m['value'] for m in d['measures'].values()):.3f})"
                     for c, d in (r.get("columns") or {}).items()
                     if d.get("drifted") and d.get("measures")
                 ) or "-"),
                 esc(", ".join(f["expectation"] for f in r.get("failures") or []) or "-")]
                for r in reversed(failed)
            ],
        )
        if failed
        else "<p class='muted'>none</p>"
    )
    parts.append("<h2>Held batches</h2>")
    parts.append(
        _table(
            ["view", "batch", "rows", "held at", "release with"],
            [
                [esc(h["view"]), esc(h["batch_id"]), str(h["rows"]), esc(h.get("held_at", "")),
                 f"<code>livefeat quality release {esc(h['batch_id'])}</code>"]
                for h in summary.held
            ],
        )
        if summary.held
        else "<p class='muted'>none</p>"
    )
    parts.append("</body></html>")
    return "".join(parts)
