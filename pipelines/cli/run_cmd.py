"""``livefeat run``, ``livefeat backfill`` and ``livefeat validate``."""

from __future__ import annotations

import functools
import json
import sys

import click

from pipelines.cli.main import load_settings
from pipelines.cli.times import parse_optional_time


@click.command("validate")
@click.argument("pipeline", default="marketplace")
def validate(pipeline: str) -> None:
    """Check a pipeline's definitions against the schemas, without starting Flink."""
    from pipelines.features.registry import load_pipeline
    from pipelines.features.validate import problems

    loaded = load_pipeline(pipeline)
    found = problems(loaded)
    for problem in found:
        click.echo(f"error: {problem}", err=True)
    if found:
        sys.exit(1)
    n = sum(len(v.features) for v in loaded.views)
    click.echo(f"pipeline {loaded.name}: {len(loaded.views)} views, {n} features, valid")


@click.command("backfill")
@click.argument("pipeline", default="marketplace")
@click.option("--from", "from_", help="First event time to write (ISO 8601 or epoch ms).")
@click.option("--to", help="Last event time (horizon); default: the last accepted event.")
@click.option("--output", help="Where to write features/<view> (default: the offline store).")
@click.pass_context
def backfill(
    ctx: click.Context, pipeline: str, from_: str | None, to: str | None, output: str | None
) -> None:
    """Recompute feature changelogs from the accepted-event log, in batch."""
    from pipelines.features.registry import load_pipeline
    from pipelines.features.validate import check
    from pipelines.runtime.backfill import backfill as run_backfill
    from pipelines.sinks.s3 import s3_options_for

    settings = load_settings(ctx)
    loaded = load_pipeline(pipeline)
    check(loaded)
    result = run_backfill(
        loaded,
        settings.offline_store.uri,
        parse_optional_time(from_, "--from"),
        parse_optional_time(to, "--to"),
        output,
        # the same endpoint settings serve the input store and an s3:// --output
        s3_options=s3_options_for(settings)
        or (s3_options_for(settings, output) if output else None),
        progress=lambda m: click.echo(m, err=True),
    )
    click.echo(
        json.dumps(
            {
                "events_read": result.events_read,
                "rows_written": result.rows_written,
                "to_ms": result.to_ms,
            },
            indent=2,
        )
    )


@click.command("run")
@click.argument("pipeline", default="marketplace")
@click.option(
    "--bounded",
    is_flag=True,
    help="Process what the topics hold now, then stop (reads up to the true end offsets).",
)
@click.option("--parallelism", type=int, help="Override flink.parallelism.")
@click.option(
    "--restore",
    metavar="PATH|latest",
    help="Resume from a retained checkpoint or savepoint directory; `latest`: the newest "
    "complete checkpoint under flink.checkpoint_dir.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.pass_context
def run(
    ctx: click.Context,
    pipeline: str,
    bounded: bool,
    parallelism: int | None,
    restore: str | None,
    as_json: bool,
) -> None:
    """Run a pipeline as a streaming job on the embedded Flink runtime."""
    from pipelines.runtime.checkpoints import resolve_restore
    from pipelines.runtime.streaming import run_pipeline

    settings = load_settings(ctx)
    if parallelism is not None:
        settings = settings.model_copy(
            update={"flink": settings.flink.model_copy(update={"parallelism": parallelism})}
        )
    say = functools.partial(click.echo, err=True)
    restore_from = None
    if restore is not None:
        restore_from = resolve_restore(restore, settings.flink.checkpoint_dir)
        say(f"restoring from {restore_from}")
    summary = run_pipeline(
        settings, pipeline, bounded=bounded, progress=say, restore_from=restore_from
    )
    if summary is None:
        return
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        from pipelines.cli.summary_view import print_summary

        print_summary(summary)
    if not summary.balanced or not summary.gate_balanced:
        sys.exit(1)
