"""``livefeat stack up|down|status``: the embedded broker and S3 emulator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from pipelines.cli.main import load_settings
from pipelines.config import Settings
from pipelines.stack import (
    DUMMY_KEY,
    SERVICES,
    ServiceStatus,
    StackManager,
    override_stack,
)

F = TypeVar("F", bound=Callable[..., Any])

_STATE_STYLE = {"running": "green", "stopped": "dim", "dead": "bold red"}


def _state_dir_option(func: F) -> F:
    option = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where pid files and logs live (default: stack.state_dir, .livefeat).",
    )
    return option(func)


def _manager(ctx: click.Context, **overrides: Any) -> StackManager:
    settings: Settings = load_settings(ctx)
    return StackManager(override_stack(settings, **overrides))


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _table(statuses: list[ServiceStatus], actions: dict[str, str] | None = None) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("service", no_wrap=True)
    if actions is not None:
        table.add_column("this run", no_wrap=True)
    for name in ("state", "pid", "endpoint", "uptime"):
        table.add_column(name, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for status in statuses:
        state: str = status.state
        if status.state == "running" and status.answering is False:
            state = "running (not answering)"
        row = [status.service]
        if actions is not None:
            row.append(actions.get(status.service, ""))
        row += [
            f"[{_STATE_STYLE[status.state]}]{state}[/]",
            "" if status.pid is None else str(status.pid),
            status.endpoint or "",
            _uptime(status.uptime_s),
            "see below" if status.state == "dead" else status.detail,
        ]
        table.add_row(*row)
    return table


@click.group()
def stack() -> None:
    """Start, stop and inspect the embedded stack.

    A Tansu Kafka broker and moto's S3 emulator run in the background on
    127.0.0.1; pid files and logs live under stack.state_dir.
    """


@stack.command()
@click.option("--broker-port", type=click.IntRange(1, 65535), default=None,
              help="Broker port (default: stack.broker_port, 9092).")
@click.option("--s3-port", type=click.IntRange(1, 65535), default=None,
              help="S3 emulator port (default: stack.s3_port, 9000).")
@click.option("--storage", "broker_storage", type=click.Choice(["memory", "s3"]), default=None,
              help="Broker storage: memory, or s3 (durable, in the S3 emulator).")
@_state_dir_option
@click.pass_context
def up(ctx: click.Context, broker_port: int | None, s3_port: int | None,
       broker_storage: str | None, state_dir: Path | None) -> None:
    """Start the broker and the S3 emulator, create the topics and the bucket.

    Services already running are left alone and reported.
    """
    manager = _manager(ctx, broker_port=broker_port, s3_port=s3_port,
                       broker_storage=broker_storage, state_dir=state_dir)
    endpoints = manager.up()
    console = Console()
    actions = {name: "started" for name in endpoints.started}
    actions.update({name: "already running" for name in endpoints.already_running})
    console.print(_table(manager.status(check=False), actions))
    console.print()
    partitions = sorted(set(endpoints.topics.values()))
    lines = [
        f"kafka bootstrap servers  [bold]{endpoints.bootstrap_servers}[/]  "
        f"(storage {endpoints.broker_storage})",
        f"topics                   {', '.join(endpoints.topics)} "
        f"({'/'.join(map(str, partitions))} partitions)",
        f"s3 endpoint              [bold]{endpoints.s3_endpoint_url}[/]  bucket {endpoints.bucket}",
        f"s3 credentials           any; without AWS credentials livefeat uses "
        f"AWS_ACCESS_KEY_ID={DUMMY_KEY} AWS_SECRET_ACCESS_KEY={DUMMY_KEY}",
        f"pid files and logs       {manager.state_dir}",
        *(f"[yellow]note:[/] {note}" for note in endpoints.notes),
    ]
    for line in lines:
        console.print(line, soft_wrap=True)


@stack.command()
@click.argument("services", nargs=-1, type=click.Choice(list(SERVICES)))
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@_state_dir_option
@click.pass_context
def down(ctx: click.Context, services: tuple[str, ...], timeout: float,
         state_dir: Path | None) -> None:
    """Stop the services this state directory started (all, or the SERVICES named)."""
    manager = _manager(ctx, state_dir=state_dir)
    manager.stop_timeout = timeout
    results = manager.down(list(services) or None)
    console = Console()
    for result in results:
        label = result.service + (f" (pid {result.pid})" if result.pid is not None else "")
        style = "" if result.ok else "[bold red]"
        console.print(f"{label}: {style}{result.outcome}", soft_wrap=True)
    if not all(result.ok for result in results):
        sys.exit(1)


@stack.command()
@click.option("--no-check", is_flag=True, help="Do not send a request to each running service.")
@_state_dir_option
@click.pass_context
def status(ctx: click.Context, no_check: bool, state_dir: Path | None) -> None:
    """Show each service: running, stopped, or dead.

    Exit code: 0 when every service runs, 1 when one is dead (a pid file whose
    process is gone), 3 when one is stopped.
    """
    manager = _manager(ctx, state_dir=state_dir)
    statuses = manager.status(check=not no_check)
    console = Console()
    console.print(_table(statuses))
    for dead in (s for s in statuses if s.state == "dead"):
        console.print(f"[bold red]{dead.service} is dead:[/] {dead.detail}", soft_wrap=True)
    states = {s.state for s in statuses}
    if "dead" in states:
        sys.exit(1)
    if "stopped" in states:
        sys.exit(3)
