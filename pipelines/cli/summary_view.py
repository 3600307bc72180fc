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
