"""``livefeat offline compact|stats``: maintain and inspect the offline store."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from pipelines.cli.main import load_settings


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@click.group("offline")
def offline() -> None:
    """Compact and inspect the offline store (offline_store.uri)."""


@offline.command("compact")
@click.argument("dataset", required=False)
@click.option("--min-files", type=click.IntRange(min=2), default=2, show_default=True,
              help="Compact a partition only when it has at least this many files.")
@click.pass_context
def compact_cmd(ctx: click.Context, dataset: str | None, min_files: int) -> None:
    """Merge each partition's small files into one (all datasets unless DATASET is given).

    DATASET is e.g. features/user_features or events/livestream.bid_placed. Safe
    while the pipeline writes: the merged file is in place before the merged files
    are deleted, and readers deduplicate.
    """
    from pipelines.offline import compact, list_datasets

    settings = load_settings(ctx)
    datasets = [dataset] if dataset else list_datasets(settings)
    if not datasets:
        click.echo(f"no datasets under {settings.offline_store.uri}")
        return
    for name in datasets:
        r = compact(settings, name, min_files=min_files)
        click.echo(f"{name}: {r.partitions} partitions compacted, files {r.files_before} -> "
                   f"{r.files_after}, rows {r.rows_before} -> {r.rows_after}")


@offline.command("stats")
@click.option("--duplicates", is_flag=True,
              help="Also count duplicate rows (reads every row).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def stats_cmd(ctx: click.Context, duplicates: bool, as_json: bool) -> None:
    """Partitions, files, size and rows of every dataset in the offline store."""
    from pipelines.offline import dataset_stats, list_datasets

    settings = load_settings(ctx)
    stats = [dataset_stats(settings, name, duplicates=duplicates)
             for name in list_datasets(settings)]
    if as_json:
        click.echo(json.dumps({"uri": settings.offline_store.uri,
                               "datasets": [asdict(s) for s in stats]}, indent=1))
        return
    click.echo(f"offline store {settings.offline_store.uri}")
    if not stats:
        click.echo("  (empty)")
        return
    width = max(len(s.dataset) for s in stats)
    for s in stats:
        extra = "" if s.duplicates is None else f", {s.duplicates} duplicate rows"
        span = f"{s.first_partition} .. {s.last_partition}" if s.partitions else ""
        click.echo(f"  {s.dataset:<{width}}  {s.rows:>10} rows  {s.files:>5} files  "
                   f"{_size(s.bytes):>10}  {s.partitions:>4} partitions  {span}{extra}")
