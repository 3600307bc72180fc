"""``livefeat schemas``: fingerprint schemas, check compatibility, check a repository's changes.

Exit codes of ``compat`` and ``check``: 0 compatible / nothing fails, 1 incompatible
or a check fails, 2 the input is unusable (unreadable JSON, invalid schema,
invalid configuration, unknown git ref). This module imports only the schema
modules: it starts without the pipeline's settings, Flink, Feast or GX.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from pipelines.errors import LivefeatError


def _fail(exc: LivefeatError, as_json: bool) -> NoReturn:
    """Report unusable input and exit 2."""
    if as_json:
        click.echo(json.dumps({"error": {"problem": exc.problem, "where": exc.where,
                                         "fix": exc.fix}}, indent=2))
    click.echo(f"error: {exc}", err=True)
    _exit(2)


def _exit(code: int) -> NoReturn:
    # SystemExit, not ctx.exit(): click's non-standalone mode (used by the
    # entry point) turns ctx.exit(code) into a return value, losing the code.
    sys.exit(code)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group("schemas")
def schemas() -> None:
    """Fingerprint Avro schemas and check that schema changes stay compatible."""


@schemas.command("compat")
@click.argument("reader", type=click.Path(dir_okay=False))
@click.argument("writer", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def compat(reader: str, writer: str, as_json: bool) -> None:
    """Can READER read data written with WRITER? (Avro schema resolution)

    Exits 0 when every record WRITER can write is readable with READER, 1 when
    not (with the reasons), 2 when a file is not a usable schema.
    """
    from schemas.compat import check_compatibility
    from schemas.store import load_schema_file

    try:
        result = check_compatibility(load_schema_file(Path(reader)),
                                     load_schema_file(Path(writer)),
                                     reader_label=reader, writer_label=writer)
    except LivefeatError as exc:
        _fail(exc, as_json)
    if as_json:
        _echo_json({"reader": reader, "writer": writer, **result.to_dict()})
    elif result.compatible:
        click.echo(f"compatible: {reader} can read all data written with {writer}")
    else:
        count = len(result.incompatibilities)
        click.echo(f"incompatible: {reader} cannot read data written with {writer} "
                   f"({count} problem{'s' if count > 1 else ''})")
        for n, inc in enumerate(result.incompatibilities, 1):
            click.echo(f"\n{n}. [{inc.rule}] reader {inc.location or '/'}, "
                       f"writer {inc.writer_location or '/'}")
            click.echo(f"   {inc.problem}")
            click.echo(f"   fix the reader: {inc.fix}")
            click.echo(f"   or the writer:  {inc.writer_fix}")
    if not as_json:
        for note in result.notes:
            click.echo(f"note: [{note.rule}] {note.location or '/'}: {note.message}")
    _exit(0 if result.compatible else 1)


def _render_check(report: Any) -> None:
    for sub in report.subjects:
        versions = f"v{sub.versions[0]}..v{sub.versions[-1]}" if sub.versions else "deleted"
        ref = report.against or ""
        ref = ref[:12] if len(ref) == 40 else ref  # a commit id: shortened, as in messages
        at_ref = f", {ref}: v{sub.ref_versions[-1]}" if sub.ref_versions else ""
        status = f"FAIL ({len(sub.problems)})" if sub.problems else "ok"
        click.echo(f"{sub.subject}  {sub.mode.value}  {versions}{at_ref}  {status}")
        for problem in sub.problems:
            click.echo(f"  x [{problem.kind}: {problem.rule}] {problem.location}")
            click.echo(f"    {problem.message}")
            click.echo(f"    fix: {problem.fix}")
        for impact in sub.impacts:
            if not impact.breaking:
                click.echo(f"  i {impact.message}")
        for comparison in sub.comparisons:
            for note in comparison.result.notes:
                click.echo(f"  note ({comparison.reader} reads {comparison.writer}): "
                           f"{note.message}")
    if report.usage_source:
        click.echo(f"feature impact: checked with the field usage of {report.usage_source}")
    for note in report.notes:
        click.echo(f"note: {note}")
    problems = report.problems
    if problems:
        failing = sum(1 for s in report.subjects if s.problems)
        click.echo(f"schema check failed: {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                   f" in {failing} subject{'s' if failing > 1 else ''}")
    else:
        click.echo(f"schema check passed: {len(report.subjects)} subjects")


@schemas.command("check")
@click.option("--against", "against", metavar="GIT_REF", default=None,
              help="Also compare with the schemas at this git ref (e.g. origin/main).")
@click.option("--root", "root", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Repository root holding schemas/avro.")
@click.option("--field-usage", "usage_file", type=click.Path(dir_okay=False), default=None,
              help="JSON file {subject: {field: [features]}} to use instead of the "
                   "feature definitions.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(against: str | None, root: str, usage_file: str | None,
          as_json: bool) -> None:
    """Check every subject's schema versions: immutability, compatibility mode, feature impact.

    Modes per subject come from schemas/compatibility.yaml (BACKWARD by default).
    Exits 0 when nothing fails, 1 when something does, 2 on unusable input.
    """
    from pipelines.errors import DefinitionError
    from schemas.check import check_repository
    from schemas.impact import check_usage

    try:
        usage = None
        if usage_file is not None:
            try:
                usage = check_usage(json.loads(Path(usage_file).read_text()), usage_file)
            except (OSError, json.JSONDecodeError) as exc:
                raise DefinitionError(f"cannot read field usage: {exc}", where=usage_file,
                                      fix="write {subject: {field: [features]}} as JSON") from exc
        report = check_repository(Path(root), against, usage=usage,
                                  usage_source=usage_file or "given")
    except LivefeatError as exc:
        _fail(exc, as_json)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _render_check(report)
    _exit(0 if report.ok else 1)


@schemas.command("fingerprint")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--hex", "fmt", flag_value="hex",
              help="Print only the 8 fingerprint bytes as written after C3 01, in hex.")
@click.option("--int", "fmt", flag_value="int",
              help="Print only the fingerprint as a signed 64-bit long, as Java Avro prints it.")
def fingerprint(file: str, fmt: str | None) -> None:
    """Print FILE's single-object-encoding fingerprint (CRC-64-AVRO of its canonical form)."""
    from schemas.store import build_version, load_schema_file

    try:
        version = build_version("", 0, load_schema_file(Path(file)), Path(file))
    except LivefeatError as exc:
        _fail(exc, False)
    raw = version.fingerprint_bytes
    signed = int.from_bytes(raw, "little", signed=True)
    if fmt == "hex":
        click.echo(raw.hex())
    elif fmt == "int":
        click.echo(str(signed))
    else:
        click.echo(f"schema:       {version.name or version.canonical}")
        click.echo(f"canonical:    {version.canonical}")
        click.echo(f"fingerprint:  {raw.hex()}  (8 bytes, little-endian, as written after C3 01)")
        click.echo(f"as long:      {signed}  (as Java Avro prints it)")
        click.echo(f"header:       c301{raw.hex()}")
