"""``livefeat features get|apply|config``: read online features through Feast, register the repo."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipelines.cli.main import load_settings
from pipelines.errors import LivefeatError


def _pipeline(name: str) -> Any:
    from pipelines.features.registry import load_pipeline

    return load_pipeline(name)


def _parse_entities(view: Any, entities: tuple[str, ...]) -> list[str]:
    key = view.entity.join_key
    values = []
    for item in entities:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE; write e.g. {key}=u123",
                                     param_hint="--entity")
        if name != key:
            raise click.BadParameter(f"view {view.name} is keyed by {key}, not {name}",
                                     param_hint="--entity")
        values.append(value)
    return values


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


@click.group("features")
def features() -> None:
    """Read online features through Feast; register the Feast repository."""


@features.command("get")
@click.argument("view_name", metavar="VIEW")
@click.option("--entity", "-e", "entities", multiple=True, required=True,
              help="KEY=VALUE of an entity, e.g. user_id=u123 (repeatable).")
@click.option("--pipeline", "pipeline_name", default="marketplace", show_default=True,
              help="Pipeline whose views to read.")
@click.option("--project", default=None, help="Feast project [default: from the settings].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def get(ctx: click.Context, view_name: str, entities: tuple[str, ...], pipeline_name: str,
        project: str | None, as_json: bool) -> None:
    """Print the online values of VIEW for each entity, and how old they are.

    The age is the time since the values became true (their event time). Read-time
    features (user_account_age_days) are computed now. An entity the online store
    does not know has the empty values: counts 0, everything else null.
    """
    from pipelines.feast_repo import ensure_applied, feature_store, read_online

    settings = load_settings(ctx)
    pipeline = _pipeline(pipeline_name)
    try:
        view = pipeline.view(view_name)
    except KeyError:
        names = ", ".join(v.name for v in pipeline.views)
        raise click.BadParameter(f"no view {view_name!r}; views: {names}",
                                 param_hint="VIEW") from None
    keys = _parse_entities(view, entities)
    store = feature_store(settings, project=project)
    try:
        if ensure_applied(store, settings, pipeline):
            click.echo(f"registered the feature views in {store.config.registry.path}", err=True)
        now = time.time()
        rows = read_online(store, view, keys, pipeline=pipeline, now_s=now)
    except LivefeatError:
        raise
    except Exception as exc:  # Redis or SQLite errors come in many types
        raise LivefeatError(
            f"could not read the online store: {type(exc).__name__}: {exc}",
            where=f"online_store ({settings.online_store.type})",
            fix="check that the online store is running and that online_store.* in the "
            "settings points at it",
        ) from exc
    if as_json:
        doc = [
            {
                view.entity.join_key: r.key,
                "found": r.found,
                "event_time": None if r.event_time_ms is None else datetime.fromtimestamp(
                    r.event_time_ms / 1000, UTC).isoformat(timespec="milliseconds"),
                "age_s": None if r.event_time_ms is None else now - r.event_time_ms / 1000,
                "values": {k: _show(v) if isinstance(v, datetime) else v
                           for k, v in r.values.items()},
            }
            for r in rows
        ]
        click.echo(json.dumps(doc, indent=1))
        return
    width = max(len(n) for n in rows[0].values) if rows else 0
    for r in rows:
        click.echo(f"{view.name}  {view.entity.join_key}={r.key}")
        if r.event_time_ms is None:
            click.echo("  not in the online store: the pipeline has not seen this entity "
                       "(empty values: counts 0, others null)")
        else:
            when = datetime.fromtimestamp(r.event_time_ms / 1000, UTC)
            click.echo(f"  values as of {_show(when)} ({_age(now - r.event_time_ms / 1000)} ago)")
        for name, value in r.values.items():
            click.echo(f"  {name:<{width}}  {_show(value)}")


@features.command("apply")
@click.option("--pipeline", "pipeline_name", default="marketplace", show_default=True)
@click.option("--project", default=None, help="Feast project [default: from the settings].")
@click.pass_context
def apply_cmd(ctx: click.Context, pipeline_name: str, project: str | None) -> None:
    """Register entities, sources and feature views in Feast and create the online tables."""
    from pipelines.feast_repo import apply, repo_for_settings

    settings = load_settings(ctx)
    pipeline = _pipeline(pipeline_name)
    store = apply(settings, pipeline, project=project)
    repo = repo_for_settings(settings, pipeline)
    click.echo(f"Feast project {store.project}: registry {store.config.registry.path}")
    for name, source in repo.sources.items():
        click.echo(f"  {name}: {len(repo.views[name].features)} features, source {source.path}")


@features.command("config")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (paths in it relative to its directory) "
              "instead of printing.")
@click.option("--project", default=None, help="Feast project [default: from the settings].")
@click.pass_context
def config_cmd(ctx: click.Context, output: Path | None, project: str | None) -> None:
    """Print feature_store.yaml for the current settings (for the `feast` CLI)."""
    from pipelines.feast_repo import render_feature_store_yaml

    settings = load_settings(ctx)
    if output is None:
        click.echo(render_feature_store_yaml(settings, project=project), nl=False)
        return
    text = render_feature_store_yaml(settings, project=project,
                                     relative_to=output.resolve().parent)
    output.write_text(text)
    click.echo(f"wrote {output}")
