"""The ``livefeat`` command.

Subcommands live in their own modules and are imported only when invoked, so
``livefeat --help`` and ``livefeat schemas ...`` start fast without loading
Flink, Feast or Great Expectations.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from pipelines.errors import LivefeatError

# name -> (module, attribute, one-line help). Keep sorted by name.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "backtest": ("pipelines.cli.backtest_cmd", "backtest", "Backtest fraud rules, point in time."),
    "backfill": ("pipelines.cli.run_cmd", "backfill", "Recompute changelogs from the event log."),
    "cluster": ("pipelines.cli.cluster_cmd", "cluster", "Local Flink session cluster."),
    "features": ("pipelines.cli.features_cmd", "features", "Read online features (Feast)."),
    "generate": ("pipelines.cli.generate_cmd", "generate", "Publish realistic reference traffic."),
    "jobs": ("pipelines.cli.cluster_cmd", "jobs", "List, cancel, savepoint, resume Flink jobs."),
    "offline": ("pipelines.cli.offline_cmd", "offline", "Compact and inspect the offline store."),
    "quality": ("pipelines.cli.quality_cmd", "quality", "Quality profiles, reports, held batches."),
    "run": ("pipelines.cli.run_cmd", "run", "Run a pipeline as a streaming Flink job."),
    "schemas": (
        "pipelines.cli.schemas_cmd",
        "schemas",
        "Fingerprint schemas, check compatibility.",
    ),
    "stack": ("pipelines.cli.stack_cmd", "stack", "Start, stop, inspect the embedded stack."),
    "submit": ("pipelines.cli.cluster_cmd", "submit", "Submit a PyFlink pipeline to a cluster."),
    "tail": ("pipelines.cli.tail_cmd", "tail", "Read and print what arrived on the topics."),
    "validate": ("pipelines.cli.run_cmd", "validate", "Check pipeline definitions, no Flink."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        command: click.Command = getattr(module, spec[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text without importing every subcommand module.
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file (default: $LIVEFEAT_CONFIG, else ./livefeat.yaml, else built-in defaults).",
)
@click.version_option(package_name="livefeat")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """livefeat: streaming feature pipelines for live-stream marketplaces."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def load_settings(ctx: click.Context) -> Any:
    """The validated settings for this invocation (loaded once, on first use)."""
    from pipelines.config import load_config

    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" not in root.obj:
        root.obj["settings"] = load_config(root.obj.get("config_path"))
    return root.obj["settings"]


def main() -> None:
    """Console entry point: runs the CLI and turns livefeat errors into clean exits."""
    try:
        # standalone_mode=False returns ctx.exit codes instead of exiting: pass them on.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except LivefeatError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # `python -m pipelines.cli.main ...` (the cluster image's entry point)
    main()
