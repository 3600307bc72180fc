"""``livefeat cluster|jobs|submit``: a local Flink cluster, and jobs on any Flink cluster.

``cluster up|down|status`` run a standalone session cluster from the PyFlink
wheel on this machine (pid files and logs under ``stack.state_dir/flink``).
``submit`` and ``jobs`` talk to any Flink 2.x JobManager: the local one by
default, or the one ``--jobmanager HOST:PORT`` names.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from pipelines.cli.main import load_settings
from pipelines.cluster.conf import default_options
from pipelines.cluster.daemons import prometheus_port
from pipelines.cluster.manager import ClusterManager, ProcessState
from pipelines.cluster.rest import FlinkRest, JobSummary
from pipelines.cluster.submit import check_jobmanager, resolve_target
from pipelines.cluster.submit import submit as submit_job
from pipelines.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_JOBMANAGER = "127.0.0.1:8081"
_STATE_STYLE = {"running": "green", "stopped": "dim", "dead": "bold red"}
_JOB_STYLE = {"RUNNING": "green", "FAILED": "bold red", "RESTARTING": "yellow"}


def _state_dir_option(func: F) -> F:
    option = click.option(
        "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Where pid files, logs and the cluster's configuration live "
        "(default: stack.state_dir, .livefeat).",
    )
    return option(func)


def _jobmanager_option(func: F) -> F:
    option = click.option(
        "--jobmanager", "-m", default=None, metavar="HOST:PORT",
        help="REST address of the JobManager (default: the local cluster of the state "
        f"directory, else {DEFAULT_JOBMANAGER}).",
    )
    return _state_dir_option(option(func))


def _manager(ctx: click.Context, state_dir: Path | None) -> ClusterManager:
    settings: Settings = load_settings(ctx)
    return ClusterManager(state_dir or settings.stack.state_dir)


def _jobmanager(manager: ClusterManager, given: str | None) -> str:
    if given:
        return check_jobmanager(given)
    local = manager.rest_url()
    return check_jobmanager(local) if local else DEFAULT_JOBMANAGER


def _duration(ms: float | None) -> str:
    if ms is None or ms < 0:
        return ""
    total = int(ms // 1000)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _process_row(proc: ProcessState) -> list[str]:
    state = f"[{_STATE_STYLE.get(proc.state, '')}]{proc.state}[/]"
    registered = {True: "yes", False: "[bold red]no[/]", None: ""}[proc.registered]
    slots = "" if proc.slots is None else f"{proc.free_slots}/{proc.slots}"
    metrics = ""
    if proc.log is not None and proc.state == "running":
        port = prometheus_port(proc.log)
        metrics = "" if port is None else str(port)
    return [proc.service.removeprefix("flink-"), state, "" if proc.pid is None else str(proc.pid),
            registered, slots, _duration(None if proc.uptime_s is None else proc.uptime_s * 1000),
            metrics]


def _jobs_table(jobs: list[JobSummary]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("job id", no_wrap=True, min_width=32)
    table.add_column("state", no_wrap=True)
    table.add_column("tasks", no_wrap=True)
    table.add_column("duration", no_wrap=True)
    table.add_column("name", overflow="fold")
    for job in jobs:
        style = _JOB_STYLE.get(job.state, "dim")
        running = job.tasks.get("running", 0)
        tasks = f"{running}/{job.tasks.get('total', 0)}"
        table.add_row(job.jid, f"[{style}]{job.state}[/]", tasks, _duration(job.duration_ms),
                      job.name)
    return table


# --- cluster ------------------------------------------------------------------


@click.group()
def cluster() -> None:
    """Start, stop and inspect a local Flink session cluster.

    One JobManager and N TaskManagers from the Flink distribution inside the
    PyFlink wheel, on 127.0.0.1, with a private configuration, pid files and
    logs under stack.state_dir/flink. Needs Java 17 (JAVA_HOME).
    """


@cluster.command()
@click.option("--taskmanagers", type=click.IntRange(1, 32), default=2, show_default=True,
              help="TaskManagers to start.")
@click.option("--slots", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Task slots per TaskManager.")
@click.option("--rest-port", type=click.IntRange(1, 65535), default=8081, show_default=True,
              help="Port of the REST API and web UI.")
@click.option("--rpc-port", type=click.IntRange(1, 65535), default=6123, show_default=True,
              help="Port TaskManagers reach the JobManager on.")
@click.option("--taskmanager-memory", default="2560m", show_default=True,
              help="taskmanager.memory.process.size of each TaskManager.")
@click.option("--jobmanager-memory", default="1024m", show_default=True,
              help="jobmanager.memory.process.size.")
@_state_dir_option
@click.pass_context
def up(ctx: click.Context, taskmanagers: int, slots: int, rest_port: int, rpc_port: int,
       taskmanager_memory: str, jobmanager_memory: str, state_dir: Path | None) -> None:
    """Start the JobManager and TaskManagers that are not running, wait until they registered.

    Processes already running are left alone; a dead TaskManager is replaced.
    """
    manager = _manager(ctx, state_dir)
    options = default_options(
        taskmanagers=taskmanagers, slots=slots, rest_port=rest_port, rpc_port=rpc_port,
        taskmanager_memory=taskmanager_memory, jobmanager_memory=jobmanager_memory,
    )
    result = manager.up(options)
    console = Console()
    console.print(_status_table(manager, {s: "started" for s in result.started}
                                | {s: "already running" for s in result.already_running}))
    console.print()
    console.print(f"rest api / web ui   [bold]{result.rest_url}[/]", soft_wrap=True)
    console.print(f"taskmanagers        {result.taskmanagers} registered, {result.slots} slots "
                  f"(ready after {result.seconds:.1f} s)", soft_wrap=True)
    console.print(f"configuration       {manager.paths.conf / 'config.yaml'}", soft_wrap=True)
    console.print(f"logs                {manager.paths.logs}", soft_wrap=True)
    console.print("metrics             http://127.0.0.1:PORT/metrics (PORT: prometheus column)",
                  soft_wrap=True)
    console.print(f"submit a pipeline   livefeat submit PIPELINE --jobmanager "
                  f"{check_jobmanager(result.rest_url)}", soft_wrap=True)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def _status_table(manager: ClusterManager, actions: dict[str, str] | None = None) -> Table:
    status = manager.status()
    table = Table(show_edge=False, header_style="bold")
    table.add_column("process", no_wrap=True)
    if actions is not None:
        table.add_column("this run", no_wrap=True)
    for name in ("state", "pid", "registered", "free/slots", "uptime", "prometheus"):
        table.add_column(name, no_wrap=True)
    for proc in (status.jobmanager, *status.taskmanagers):
        row = _process_row(proc)
        if actions is not None:
            row.insert(1, actions.get(proc.service, ""))
        table.add_row(*row)
    return table


@cluster.command()
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=15.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@_state_dir_option
@click.pass_context
def down(ctx: click.Context, timeout: float, state_dir: Path | None) -> None:
    """Stop the TaskManagers and the JobManager this state directory started (only those)."""
    manager = _manager(ctx, state_dir)
    manager.stop_timeout = timeout
    results = manager.down()
    if not results:
        click.echo("no cluster processes to stop")
    for service, pid, outcome in results:
        click.echo(f"{service}" + (f" (pid {pid})" if pid is not None else "") + f": {outcome}")


@cluster.command()
@_state_dir_option
@click.pass_context
def status(ctx: click.Context, state_dir: Path | None) -> None:
    """Show the JobManager, each TaskManager (registered? free slots?) and the running jobs.

    Exit code: 0 when everything runs, 1 when a process is dead or the REST API
    does not answer, 3 when no cluster runs.
    """
    manager = _manager(ctx, state_dir)
    state = manager.status()
    console = Console()
    console.print(_status_table(manager))
    console.print(f"logs: {manager.paths.logs}", soft_wrap=True)
    if state.rest_url is None:
        console.print("no cluster runs here; start one with `livefeat cluster up`")
        sys.exit(3)
    console.print()
    if state.answering:
        console.print(f"rest api [bold]{state.rest_url}[/]: {len(state.taskmanagers)} "
                      f"TaskManager(s), {state.slots_available}/{state.slots_total} slots free",
                      soft_wrap=True)
        running = [job for job in state.jobs if job.state not in ("FINISHED", "CANCELED")]
        if running:
            console.print(_jobs_table(running))
        else:
            console.print("no running jobs")
    else:
        console.print(f"[bold red]rest api {state.rest_url} does not answer:[/] {state.problem}",
                      soft_wrap=True)
    dead = [p for p in (state.jobmanager, *state.taskmanagers) if p.state != "running"]
    if dead or not state.answering:
        for proc in dead:
            console.print(f"[bold red]{proc.service} is {proc.state}[/]; see {proc.log}. "
                          "`livefeat cluster up` replaces it", soft_wrap=True)
        sys.exit(1)


# --- submit -------------------------------------------------------------------


def _use_config(ctx: click.Context, config: Path | None) -> None:
    """``submit --config FILE`` is ``livefeat --config FILE submit``."""
    if config is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["config_path"] = str(config)
        root.obj.pop("settings", None)


def _submit(ctx: click.Context, pipeline: str, jobmanager: str | None, state_dir: Path | None,
            savepoint: str | None, allow_non_restored_state: bool, detached: bool,
            pyfiles: tuple[str, ...], args: tuple[str, ...], *, config: Path | None = None,
            bounded: bool = False) -> None:
    _use_config(ctx, config)
    settings: Settings = load_settings(ctx)
    target, leading = resolve_target(pipeline, config=settings.source_file, bounded=bounded)
    manager = _manager(ctx, state_dir)
    address = _jobmanager(manager, jobmanager)
    local = manager.rest_url()
    # The local cluster's configuration only describes the local cluster.
    conf_dir = manager.paths.conf if local and check_jobmanager(local) == address else None
    echo_line: Callable[[str], None] | None = None
    if not detached:
        def echo_line(line: str) -> None:
            click.echo(line, err=True)
    result = submit_job(
        target, address, log_dir=manager.paths.logs, conf_dir=conf_dir, savepoint=savepoint,
        allow_non_restored_state=allow_non_restored_state, detached=detached, pyfiles=pyfiles,
        job_args=(*leading, *args), on_line=echo_line,
    )
    click.echo(result.job_id)
    if detached:
        click.echo(f"submitted to {address}; follow it with `livefeat jobs list`", err=True)


def _submit_options(func: F) -> F:
    for option in reversed((
        click.option("--config", "config", type=click.Path(dir_okay=False, exists=True,
                                                           path_type=Path),
                     default=None,
                     help="livefeat settings file (same as `livefeat --config FILE`); a "
                     "pipeline's job reads it too."),
        click.option("--bounded", is_flag=True,
                     help="(pipelines) Process what the topics hold now, then finish."),
        click.option("--arg", "extra_args", multiple=True, metavar="VALUE",
                     help="An argument for the pipeline program (repeatable); or put them "
                     "after `--`."),
        click.option("--pyfiles", multiple=True, metavar="PATH",
                     help="Extra Python files or directories shipped with the job."),
        click.option("--allow-non-restored-state", is_flag=True,
                     help="Start even if savepoint state belongs to no operator of the job."),
        click.option("--attached", is_flag=True,
                     help="Stay attached and print the client's output until the job ends."),
    )):
        func = option(func)
    return _jobmanager_option(func)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("pipeline", metavar="PIPELINE")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--savepoint", "-s", default=None, metavar="PATH",
              help="Restore the job's state from this savepoint (or retained checkpoint).")
@_submit_options
@click.pass_context
def submit(ctx: click.Context, pipeline: str, args: tuple[str, ...], savepoint: str | None,
           config: Path | None, bounded: bool, extra_args: tuple[str, ...],
           pyfiles: tuple[str, ...], allow_non_restored_state: bool, attached: bool,
           jobmanager: str | None, state_dir: Path | None) -> None:
    """Submit a pipeline to a Flink cluster and print the job id.

    PIPELINE is a livefeat pipeline name (marketplace, or package.module:ATTRIBUTE),
    which runs the pipeline with the settings of --config, or a PyFlink program: a
    .py file or a dotted module (pipelines.cluster.probe). Arguments after it (after
    `--` if they could be taken for livefeat's options) and --arg values go to the
    program.
    """
    _submit(ctx, pipeline, jobmanager, state_dir, savepoint, allow_non_restored_state,
            not attached, pyfiles, (*extra_args, *args), config=config, bounded=bounded)


# --- jobs ---------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """List, cancel, savepoint and resume jobs on a Flink cluster (through its REST API)."""


@jobs.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Also finished, canceled and failed jobs.")
@_jobmanager_option
@click.pass_context
def list_jobs(ctx: click.Context, show_all: bool, jobmanager: str | None,
              state_dir: Path | None) -> None:
    """List the cluster's running (or, with --all, every) job."""
    rest = FlinkRest(_jobmanager(_manager(ctx, state_dir), jobmanager))
    found = rest.jobs()
    if not show_all:
        found = [job for job in found if job.state not in ("FINISHED", "CANCELED", "FAILED")]
    if not found:
        click.echo("no jobs" if show_all else "no running jobs (--all shows ended ones)")
        return
    Console().print(_jobs_table(found))


@jobs.command()
@click.argument("job_id")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the job is CANCELED.")
@_jobmanager_option
@click.pass_context
def cancel(ctx: click.Context, job_id: str, wait: bool, jobmanager: str | None,
           state_dir: Path | None) -> None:
    """Cancel JOB_ID without a savepoint (its state is lost; see `jobs savepoint --cancel`)."""
    rest = FlinkRest(_jobmanager(_manager(ctx, state_dir), jobmanager))
    rest.cancel(job_id)
    if wait:
        rest.wait_for_state(job_id, {"CANCELED"})
    click.echo(f"{job_id}: {'CANCELED' if wait else 'cancel requested'}")


@jobs.command()
@click.argument("job_id")
@click.option("--dir", "target_dir", default=None, metavar="URI",
              help="Where to write it (file:///..., s3://...; default: the cluster's "
              "execution.checkpointing.savepoint-dir).")
@click.option("--cancel", "cancel_job", is_flag=True,
              help="Cancel the job once the savepoint is complete (to upgrade it).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300.0, show_default=True,
              help="Seconds to wait for the savepoint.")
@_jobmanager_option
@click.pass_context
def savepoint(ctx: click.Context, job_id: str, target_dir: str | None, cancel_job: bool,
              timeout: float, jobmanager: str | None, state_dir: Path | None) -> None:
    """Take a savepoint of JOB_ID and print its location."""
    rest = FlinkRest(_jobmanager(_manager(ctx, state_dir), jobmanager))
    location = rest.savepoint(job_id, target_dir, cancel=cancel_job, timeout=timeout)
    click.echo(location)
    if cancel_job:
        click.echo(f"job {job_id} is being canceled; resume it with `livefeat jobs resume "
                   f"{location} PIPELINE`", err=True)


@jobs.command()
@click.argument("job_id")
@click.option("--drain", is_flag=True,
              help="Advance event time to the end first: every window closes and the job "
              "ends as if its input had ended (not for a job you mean to resume).")
@click.option("--dir", "target_dir", default=None, metavar="URI",
              help="Where to write the savepoint (default: the cluster's "
              "execution.checkpointing.savepoint-dir).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300.0, show_default=True,
              help="Seconds to wait for the savepoint.")
@_jobmanager_option
@click.pass_context
def stop(ctx: click.Context, job_id: str, drain: bool, target_dir: str | None, timeout: float,
         jobmanager: str | None, state_dir: Path | None) -> None:
    """Stop JOB_ID with a savepoint (sources first, then a savepoint); print its location.

    Unlike `savepoint --cancel`, nothing is processed after the savepoint. With
    --drain, a bounded pipeline resumed from a savepoint ends once it has read
    its input (see deploy/cluster/README.md).
    """
    rest = FlinkRest(_jobmanager(_manager(ctx, state_dir), jobmanager))
    location = rest.stop(job_id, target_dir, drain=drain, timeout=timeout)
    click.echo(location)
    click.echo(f"job {job_id} is {'drained and ' if drain else ''}stopping", err=True)


@jobs.command(context_settings={"ignore_unknown_options": True})
@click.argument("savepoint_path", metavar="SAVEPOINT")
@click.argument("pipeline", metavar="PIPELINE")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_submit_options
@click.pass_context
def resume(ctx: click.Context, savepoint_path: str, pipeline: str, args: tuple[str, ...],
           config: Path | None, bounded: bool, extra_args: tuple[str, ...],
           pyfiles: tuple[str, ...], allow_non_restored_state: bool, attached: bool,
           jobmanager: str | None, state_dir: Path | None) -> None:
    """Submit PIPELINE (as for `submit`) restoring its state from SAVEPOINT; print the job id.

    Give a pipeline the same settings and --bounded it was submitted with.
    """
    _submit(ctx, pipeline, jobmanager, state_dir, savepoint_path, allow_non_restored_state,
            not attached, pyfiles, (*extra_args, *args), config=config, bounded=bounded)
