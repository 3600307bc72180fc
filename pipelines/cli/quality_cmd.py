"""``livefeat quality profile|report|held|release``: reference profiles and validation results.

None of these commands imports Great Expectations: profiles, reports and releases only
read and write files (see quality/results.py for the layout), so they start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pipelines.cli.main import load_settings
from pipelines.cli.times import parse_time
from pipelines.errors import ConfigError


def _gate_config(ctx: click.Context) -> Any:
    """The gate settings: the ``quality`` section with ``results_dir`` resolved."""
    settings = load_settings(ctx)
    return settings.quality.gate_config(settings.stack.state_dir)


def _results_dir(ctx: click.Context, given: Path | None) -> Path:
    if given is not None:
        return given
    settings = load_settings(ctx)
    return settings.quality.results_in(settings.stack.state_dir)


def _quality_dir(ctx: click.Context, given: Path | None) -> Path:
    from quality.suites import QUALITY_DIR

    if given is not None:
        return given
    return load_settings(ctx).quality.quality_dir() or QUALITY_DIR


def _results_option(func: Any) -> Any:
    return click.option(
        "--results-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Validation results directory (default: quality.results_dir, else "
        "<stack.state_dir>/quality).",
    )(func)


@click.group("quality")
def quality() -> None:
    """Quality gate: reference profiles, validation reports, held batches."""


@quality.command("profile")
@click.argument("view")
@click.option("--from", "from_", required=True, help="Start of the range (ISO-8601 or epoch ms).")
@click.option("--to", "to", required=True, help="End of the range, exclusive.")
@click.option("--offline-uri", default=None, help="Offline store (default: offline_store.uri).")
@click.option(
    "--quality-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write to <dir>/profiles/VIEW.json (default: quality.dir, else the quality "
    "package's directory).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the profile to this file instead.")
@click.option("--batch-max-rows", type=click.IntRange(min=1), default=None,
              help="Micro-batch size bound (default: the view's quality policy).")
@click.option("--batch-max-ms", type=click.IntRange(min=1), default=None,
              help="Micro-batch event-time bound (default: the view's quality policy).")
@click.option("--min-rows", type=click.IntRange(min=1), default=None,
              help="Smallest batch judged for drift (default: the view's quality policy).")
@click.pass_context
def profile_cmd(
    ctx: click.Context,
    view: str,
    from_: str,
    to: str,
    offline_uri: str | None,
    quality_dir: Path | None,
    out: Path | None,
    batch_max_rows: int | None,
    batch_max_ms: int | None,
    min_rows: int | None,
) -> None:
    """Build the reference profile of VIEW from a time range of the offline changelog.

    VIEW may also be a topic with an events suite (input drift, e.g.
    livestream.order_placed): its profile is built from the accepted-event log.

    Besides the value distributions, the profile records how much batches of the
    reference period (cut like the gate cuts them) move by themselves; use the same
    batch bounds here as in the gate's configuration.
    """
    from quality.profile import BatchBounds, profile_from_offline
    from quality.suites import (
        batch_suites,
        event_suite_name,
        feature_suite_name,
        load_suite_files,
    )

    from_ms, to_ms = parse_time(from_, "--from"), parse_time(to, "--to")
    if to_ms <= from_ms:
        raise click.BadParameter("must be later than --from", param_hint="--to")
    settings = load_settings(ctx)
    uri = offline_uri or settings.offline_store.uri
    from pipelines.sinks.s3 import s3_options_for

    s3_options = s3_options_for(settings, uri)
    base = _quality_dir(ctx, quality_dir)
    suite = batch_suites(load_suite_files(base / "suites")).get(view)
    if suite is None:
        raise ConfigError(
            f"no feature suite for view {view} (nor an events suite for a topic of that name)",
            where=str(base / "suites"),
            fix=f"add {feature_suite_name(view)}.json for a view or {event_suite_name(view)}.json "
            "for a topic, or check the name",
        )
    config = _gate_config(ctx)
    events = suite.level == "events"  # a topic's accepted events, not a view's changelog
    policy = config.input_policy(view, suite.batch_defaults) if events else config.policy(view)
    bounds = BatchBounds(
        batch_max_rows or policy.batch_max_rows,
        batch_max_ms or policy.batch_max_ms,
        min_rows or policy.min_rows,
        aligned=events,  # the gate cuts events in tumbling windows
    )
    profile = profile_from_offline(
        uri, view, from_ms, to_ms, key=suite.meta.get("key"), s3_options=s3_options,
        kinds=suite.drift_columns, bounds=bounds,
        time_field=suite.time_field if events else None,
    )
    path = profile.save(out or base / "profiles" / f"{view}.json")
    console = Console()
    table = Table(title=f"profile of {view}: {profile.rows} rows", header_style="bold")
    for name in ("column", "kind", "null share", "mean", "p50", "p99 / top share"):
        table.add_column(name)
    for name, c in profile.columns.items():
        if c["kind"] == "numeric":
            q = c.get("quantiles") or []
            table.add_row(
                name, "numeric", f"{c['null_share']:.3f}",
                f"{c.get('mean', float('nan')):.2f}",
                f"{q[len(q) // 2]:.2f}" if q else "", f"{q[-1]:.2f}" if q else "",
            )
        else:
            top = max(c["shares"].items(), key=lambda kv: kv[1]) if c["shares"] else ("", 0.0)
            table.add_row(name, "categorical", "", "", "", f"{top[0]} {top[1]:.3f}")
    console.print(table)
    natural = profile.source.get("natural") or {}
    console.print(
        f"natural variation measured on {natural.get('batches', 0)} reference batches "
        f"({bounds.max_rows} rows / {bounds.max_span_ms} ms, at least "
        f"{bounds.min_rows} rows)" + (f": {natural['note']}" if natural.get("note") else "")
    )
    console.print(f"wrote {path}")


def _print_summary(console: Console, summary: Any) -> None:
    rows = Table(title="row suites", header_style="bold")
    for name in ("suite", "batches", "rows", "passed", "quarantined", "by reason"):
        rows.add_column(name, justify="right" if name in ("batches", "rows", "passed") else "left",
                        no_wrap=name == "suite", overflow="fold")
    for s in summary.rows.values():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items())) or "-"
        rows.add_row(s.suite, str(s.batches), str(s.rows), str(s.passed),
                     str(s.rows - s.passed), reasons)
    feats = Table(title="feature and events suites (drift)", header_style="bold")
    for name in ("view or topic", "batches", "rows", "pass", "warn", "block", "not judged",
                 "released", "held now"):
        feats.add_column(name, justify="left" if name == "view or topic" else "right",
                         no_wrap=name == "view or topic", overflow="fold")
    held: dict[str, int] = {}
    for h in summary.held:
        held[h["view"]] = held.get(h["view"], 0) + 1
    for f in summary.features.values():
        feats.add_row(
            f.view, str(f.batches), str(f.rows),
            *(str(f.outcomes.get(a, 0)) for a in ("pass", "warn", "block")),
            str(f.not_judged), str(f.released), str(held.get(f.view, 0)),
        )
    console.print(rows)
    console.print(feats)


@quality.command("report")
@_results_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: <results-dir>/report.html).")
@click.option("--view", default=None, help="Only this feature view.")
@click.pass_context
def report_cmd(ctx: click.Context, results_dir: Path | None, out: Path | None,
               view: str | None) -> None:
    """Print a summary of stored validation results and write an HTML report."""
    from quality.report import render_html, summarize
    from quality.results import ResultStore

    root = _results_dir(ctx, results_dir)
    if not root.is_dir():
        raise ConfigError(
            "no validation results here yet",
            where=str(root),
            fix="run a pipeline with the quality gate, or pass --results-dir",
        )
    summary = summarize(ResultStore(root), view)
    console = Console()
    _print_summary(console, summary)
    path = out or root / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(summary))
    os.replace(tmp, path)
    console.print(f"wrote {path}")


@quality.command("held")
@_results_option
@click.option("--view", default=None, help="Only this feature view.")
@click.pass_context
def held_cmd(ctx: click.Context, results_dir: Path | None, view: str | None) -> None:
    """List feature batches held by a block verdict."""
    from quality.results import ResultStore

    batches = ResultStore(_results_dir(ctx, results_dir)).held(view)
    table = Table(header_style="bold")
    for name in ("view", "batch", "rows", "held at"):
        table.add_column(name)
    for b in batches:
        table.add_row(b.view, b.batch_id, str(len(b.rows)), str(b.info.get("held_at", "")))
    Console().print(table if batches else "no held batches")


@quality.command("release")
@click.argument("batch_id", required=False)
@click.option("--all", "all_", is_flag=True,
              help="Every held batch (and every release left unfinished), oldest first.")
@click.option("--view", default=None, help="Only this view (with --all), or the view, when "
              "several have a batch with this id.")
@click.option("--by", "by", default=None, help="Who releases it (default: $USER).")
@click.option("--pipeline", "pipeline", default="marketplace", show_default=True,
              help="The pipeline whose views the batches belong to.")
@_results_option
@click.pass_context
def release_cmd(ctx: click.Context, batch_id: str | None, all_: bool, view: str | None,
                by: str | None, pipeline: str, results_dir: Path | None) -> None:
    """Release a held batch and write its rows to the offline and online stores.

    The rows go through the configured stores (offline_store.uri, online_store) exactly
    as the streaming job writes feature batches; the online store keeps any newer value
    it holds. A release that stopped before the end (crash, store outage) is finished by
    running the command again; a batch written already is left alone.
    """
    from pipelines.sinks.release import Materialized, ReleaseWriter

    if all_ == (batch_id is not None):
        raise click.UsageError("give one BATCH_ID, or --all")
    settings = load_settings(ctx)
    who = by if by is not None else os.environ.get("USER", "")
    online = settings.online_store
    where_online = (
        "online store disabled (online_store.enabled: false)" if not online.enabled
        else f"{online.type} online store"
    )

    def say(done: Materialized, prefix: str = "") -> None:
        if done.skipped:
            click.echo(f"{prefix}{done.view} batch {done.batch_id}: written already "
                       f"({done.path}); nothing to do")
            return
        verb = "finished the interrupted release of" if done.resumed else "released"
        text = (f"{prefix}{verb} {done.view} batch {done.batch_id}: {done.rows:,} rows -> "
                f"{settings.offline_store.uri}/features/{done.view}")
        if online.enabled:
            text += (f"; {where_online}: {done.online_applied:,} of {done.online_entities:,} "
                     "entities newer than the stored value, written")
        elif batch_id is not None:
            text += f"; {where_online}"
        click.echo(text)

    with ReleaseWriter(settings, pipeline, results_dir=_results_dir(ctx, results_dir)) as writer:
        if batch_id is not None:
            say(writer.release(batch_id, view=view, by=who))
            return
        if not online.enabled:
            click.echo(f"{where_online}: writing the offline store only")
        done = writer.release_all(
            view, by=who,
            progress=lambda i, n, d: say(d, prefix=f"[{i}/{n}] "),
        )
        rows = sum(d.rows for d in done)
        click.echo(f"{len(done)} batches, {rows:,} rows written" if done
                   else "no held or released batches")
