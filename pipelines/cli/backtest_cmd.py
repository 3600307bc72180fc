"""``livefeat backtest``: point-in-time backtests of fraud rules, and reference-domain labels.

``livefeat backtest RULES --labels FILE`` is short for ``livefeat backtest run ...``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from pipelines.cli.main import load_settings
from pipelines.cli.times import parse_optional_time


class _RunByDefault(click.Group):
    """A group whose first argument, when it is no subcommand, goes to ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("backtest", cls=_RunByDefault)
def backtest() -> None:
    """Backtest fraud rules on labelled events with point-in-time features.

    \b
    livefeat backtest RULES --labels FILE [--from T] [--to T] [--as-known-at] [--out DIR]
    livefeat backtest labels --manifest MANIFEST [--out FILE]
    """


@backtest.command("run")
@click.argument("rules")
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Labelled events: Parquet or CSV with entity keys, event_time and label.",
)
@click.option("--from", "from_", help="First event time (ISO 8601 or epoch ms), inclusive.")
@click.option("--to", help="End of the period (ISO 8601 or epoch ms), exclusive.")
@click.option(
    "--as-known-at",
    is_flag=True,
    help="Use only changelog rows already written at each event's time (what production knew).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output directory (default: <stack.state_dir>/backtests/<rules>-<time>).",
)
@click.option("--offline-store", help="Offline store URI (default: offline_store.uri).")
@click.pass_context
def run(
    ctx: click.Context,
    rules: str,
    labels_path: str,
    from_: str | None,
    to: str | None,
    as_known_at: bool,
    out_dir: str | None,
    offline_store: str | None,
) -> None:
    """Evaluate the rules in RULES (a .py file or a module such as marketplace_rules)."""
    from pipelines.backtest.labelset import read_labels
    from pipelines.backtest.report import format_table, write_outputs
    from pipelines.backtest.rules import load_rules
    from pipelines.backtest.run import run_backtest

    from_ms, to_ms = parse_optional_time(from_, "--from"), parse_optional_time(to, "--to")
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise click.BadParameter("--to must be later than --from", param_hint="--to")
    ruleset = load_rules(rules)  # invalid rules fail here, before any data is read
    settings = load_settings(ctx)
    from pipelines.sinks.s3 import s3_options_for

    uri = offline_store or settings.offline_store.uri
    keys = [v.entity.join_key for v in ruleset.pipeline.views]
    labels = read_labels(labels_path, keys, from_ms=from_ms, to_ms=to_ms)
    result = run_backtest(
        ruleset,
        labels,
        uri,
        as_known_at=as_known_at,
        from_ms=from_ms,
        to_ms=to_ms,
        s3_options=s3_options_for(settings, uri),
        progress=lambda m: click.echo(m, err=True),
    )
    if out_dir is None:
        stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%S")
        out_dir = str(Path(settings.stack.state_dir) / "backtests" / f"{Path(rules).stem}-{stamp}")
    paths = write_outputs(result, out_dir)
    click.echo(format_table(result))
    click.echo("")
    for name, path in paths.items():
        click.echo(f"{name:13} {path}")


@backtest.command("labels")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    help="Generator manifest (default: <stack.state_dir>/generate-manifest.json).",
)
@click.option(
    "--out",
    "out_path",
    default="labels.parquet",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Labels file to write (.parquet or .csv).",
)
@click.option(
    "--noise",
    nargs=2,
    type=float,
    metavar="MISS HONEST",
    help="Redraw labels: share of fraud orders not charged back, of honest ones charged back. "
    "Default: the manifest's own chargebacks.",
)
@click.option("--seed", type=int, help="Seed of the --noise draws (default: the run's seed).")
@click.option("--offline-store", help="Offline store URI (default: offline_store.uri).")
@click.pass_context
def labels(
    ctx: click.Context,
    manifest_path: str | None,
    out_path: str,
    noise: tuple[float, float] | None,
    seed: int | None,
    offline_store: str | None,
) -> None:
    """Build a labels file for a generator run: one row per accepted order, chargeback or not."""
    from pipelines.backtest.labels import labels_from_manifest, write_labels
    from pipelines.generator.manifest import read_manifest

    settings = load_settings(ctx)
    from pipelines.sinks.s3 import s3_options_for

    path = Path(manifest_path or Path(settings.stack.state_dir) / "generate-manifest.json")
    manifest = read_manifest(path)
    uri = offline_store or settings.offline_store.uri
    table = labels_from_manifest(
        uri, manifest, noise=noise or None, seed=seed, s3_options=s3_options_for(settings, uri)
    )
    written = write_labels(table, out_path)
    positives = sum(table.column("label").to_pylist())
    click.echo(f"{table.num_rows:,} orders, {positives:,} chargebacks -> {written}")
