"""Render a run summary for a person."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from pipelines.runtime.summary import RunSummary


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """Print what a bounded run read, accepted, quarantined and produced."""
    console = console or Console()
    table = Table(title="records", show_footer=True)
    table.add_column("topic", footer="total")
    table.add_column("read", justify="right", footer=f"{summary.total_read:,}")
    table.add_column("accepted", justify="right", footer=f"{sum(summary.accepted.values()):,}")
    for topic in sorted(summary.read):
        table.add_row(topic, f"{summary.read[topic]:,}", f"{summary.accepted.get(topic, 0):,}")
    console.print(table)
    quarantine = Table(title="quarantined, by reason")
    quarantine.add_column("reason")
    quarantine.add_column("records", justify="right")
    for reason, n in summary.quarantined.items():
        quarantine.add_row(reason, f"{n:,}")
    console.print(quarantine)
    views = Table(title="feature changelog rows")
    views.add_column("view")
    views.add_column("rows", justify="right")
    for view, n in summary.changelog_rows.items():
        views.add_row(view, f"{n:,}")
    console.print(views)
    if summary.gate:
        _print_gate(summary, console)
    if summary.horizon_ms is not None:
        horizon = datetime.fromtimestamp(summary.horizon_ms / 1000, tz=UTC)
        console.print(f"final watermark (horizon): {horizon:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC")
    verdict = (
        "[green]every record accounted for[/]"
        if summary.balanced
        else (f"[red]{summary.total_read - summary.accounted:,} records unaccounted for[/]")
    )
    console.print(
        f"read {summary.total_read:,} = accepted {sum(summary.accepted.values()):,} "
        f"+ quarantined {sum(summary.quarantined.values()):,}: {verdict}"
    )


def _print_gate(summary: RunSummary, console: Console) -> None:
    """The quality gate's micro-batches and rows per view, and the changelog balance."""
    table = Table(title="quality gate: feature micro-batches and rows")
    for name in ("view", "pass", "warn", "block", "drift", "rows", "stored", "held"):
        table.add_column(name, justify="left" if name == "view" else "right")
    for view, g in summary.gate.items():
        table.add_row(
            view, *(f"{g.batches.get(a, 0):,}" for a in ("pass", "warn", "block")),
            f"{g.drifted:,}", f"{g.produced:,}",
            f"{summary.changelog_rows.get(view, 0):,}", f"{g.held:,}",
        )
    console.print(table)
    produced = sum(g.produced for g in summary.gate.values())
    materialized = sum(summary.changelog_rows.get(v, 0) for v in summary.gate)
    held = sum(g.held for g in summary.gate.values())
    verdict = (
        "[green]every changelog row stored or held[/]"
        if summary.gate_balanced
        else f"[red]{produced - materialized - held:,} changelog rows unaccounted for[/]"
    )
    console.print(
        f"changelog rows {produced:,} = stored {materialized:,} + held {held:,}: {verdict}"
    )
    if held:
        console.print("held batches: `livefeat quality held`; "
                      "release one: `livefeat quality release BATCH_ID`")
