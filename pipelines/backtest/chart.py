"""The picture: per rule, alerts over time (true and false positives stacked) and precision.

Plain SVG built here, so the HTML report is one self-contained file that opens
offline in any browser and needs no plotting library. The bucket width adapts
to the period (a minute to a week, at most about 120 bars); the per-day figures
are in the report's files.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

import numpy as np

_WIDTHS_MS = (
    60_000,
    5 * 60_000,
    15 * 60_000,
    3_600_000,
    6 * 3_600_000,
    86_400_000,
    7 * 86_400_000,
)
_MAX_BARS = 120
_W, _H = 880, 262
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 56, 56, 40
TP_COLOUR, FP_COLOUR, PRECISION_COLOUR = "#2b8a3e", "#e8590c", "#1c7ed6"


def bucket_width(start_ms: int, end_ms: int) -> int:
    """The smallest standard bucket that keeps the period within about 120 bars."""
    for width in _WIDTHS_MS:
        if (end_ms - start_ms) / width <= _MAX_BARS:
            return width
    return _WIDTHS_MS[-1] * math.ceil((end_ms - start_ms) / _WIDTHS_MS[-1] / _MAX_BARS)


def series(
    times: np.ndarray, alerts: np.ndarray, labels: np.ndarray, start_ms: int, end_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per bucket: start time, true positives, false positives; and the bucket width."""
    width = bucket_width(start_ms, end_ms)
    first = start_ms // width * width
    n = max(1, int((end_ms - 1 - first) // width) + 1)
    idx = np.clip((times - first) // width, 0, n - 1)
    alerts = np.asarray(alerts, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    tp = np.bincount(idx, weights=alerts & labels, minlength=n).astype(np.int64)
    fp = np.bincount(idx, weights=alerts & ~labels, minlength=n).astype(np.int64)
    starts = first + np.arange(n, dtype=np.int64) * width
    return starts, tp, fp, width


def _nice_max(value: int) -> int:
    if value <= 5:
        return 5
    step = 10 ** int(math.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * step:
            return m * step
    return 10 * step


def _when(ms: int, width: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%d") if width >= 86_400_000 else t.strftime("%m-%d %H:%M")


def _duration(width: int) -> str:
    if width % 86_400_000 == 0:
        return f"{width // 86_400_000} d"
    if width % 3_600_000 == 0:
        return f"{width // 3_600_000} h"
    return f"{width // 60_000} min"


def _clip(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def panel(
    title: str,
    subtitles: tuple[str, str],
    starts: np.ndarray,
    tp: np.ndarray,
    fp: np.ndarray,
    width: int,
) -> str:
    """One rule's chart as an SVG element (title, two lines under it, the plot)."""
    n = len(starts)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    top = _nice_max(int((tp + fp).max(initial=0)))
    bar = plot_w / n

    def y(count: float) -> float:
        return _TOP + plot_h - plot_h * count / top

    def yp(share: float) -> float:
        return _TOP + plot_h - plot_h * share

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="11">',
        f'<text x="{_LEFT}" y="16" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{_LEFT}" y="31" fill="#333" font-family="monospace">'
        f"{escape(_clip(subtitles[0]))}</text>",
        f'<text x="{_LEFT}" y="45" fill="#555">{escape(_clip(subtitles[1]))}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    for i in range(6):
        count = top * i / 5
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(count):.1f}" y2="{y(count):.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{y(count) + 4:.1f}" text-anchor="end">{count:g}</text>'
            f'<text x="{_LEFT + plot_w + 6}" y="{yp(i / 5) + 4:.1f}" '
            f'fill="{PRECISION_COLOUR}">{i / 5:.1f}</text>'
        )
    for i in range(n):
        x = _LEFT + i * bar
        if tp[i]:
            parts.append(
                f'<rect x="{x + 0.1 * bar:.1f}" y="{y(tp[i]):.1f}" width="{0.8 * bar:.1f}" '
                f'height="{y(0) - y(tp[i]):.1f}" fill="{TP_COLOUR}"/>'
            )
        if fp[i]:
            parts.append(
                f'<rect x="{x + 0.1 * bar:.1f}" y="{y(tp[i] + fp[i]):.1f}" '
                f'width="{0.8 * bar:.1f}" height="{y(tp[i]) - y(tp[i] + fp[i]):.1f}" '
                f'fill="{FP_COLOUR}"/>'
            )
    points = [
        (_LEFT + (i + 0.5) * bar, yp(tp[i] / (tp[i] + fp[i]))) for i in range(n) if tp[i] + fp[i]
    ]
    if points:
        path = " ".join(f"{x:.1f},{py:.1f}" for x, py in points)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{PRECISION_COLOUR}" stroke-width="2"/>'
        )
        parts += [
            f'<circle cx="{x:.1f}" cy="{py:.1f}" r="2.5" fill="{PRECISION_COLOUR}"/>'
            for x, py in points
        ]
    ticks = sorted({0, n - 1, *range(0, n, max(1, n // 6))})
    for i in ticks:
        x = _LEFT + (i + 0.5) * bar
        parts.append(
            f'<text x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
            f"{escape(_when(int(starts[i]), width))}</text>"
        )
    legend_y = _H - 8
    parts.append(
        f'<rect x="{_LEFT}" y="{legend_y - 9}" width="10" height="10" fill="{TP_COLOUR}"/>'
        f'<text x="{_LEFT + 14}" y="{legend_y}">alerts on fraud (tp)</text>'
        f'<rect x="{_LEFT + 140}" y="{legend_y - 9}" width="10" height="10" fill="{FP_COLOUR}"/>'
        f'<text x="{_LEFT + 154}" y="{legend_y}">alerts on legitimate (fp)</text>'
        f'<line x1="{_LEFT + 330}" x2="{_LEFT + 346}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
        f'stroke="{PRECISION_COLOUR}" stroke-width="2"/>'
        f'<text x="{_LEFT + 350}" y="{legend_y}">precision (right axis)</text>'
        f'<text x="{_W - _RIGHT}" y="{legend_y}" text-anchor="end" fill="#555">'
        f"alerts per {_duration(width)} (left axis)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)
