"""Helpers for end-to-end tests that check a streaming run against the SQL reference.

Shared by the exact-output test (tests/integration/test_stream_exact.py) and the crash
and outage tests (tests/integration/test_crash_restart.py):

* :func:`fresh_stack`: a private embedded stack (broker + S3 endpoint) for one module;
* :func:`generate`: reference traffic with every fault kind, through ``livefeat generate``;
* :func:`read_changelog_rows`, :func:`accepted_events`: what a run wrote, as dicts;
* :func:`assert_changelog_is_exact`, :func:`assert_online_is_exact`: a run's changelog and
  online store against :class:`tests.reference.Reference`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import yaml
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.config import Settings
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import load_events
from pipelines.sinks.parquet import read_dataset
from pipelines.sinks.s3 import s3_options_for
from pipelines.stack import StackManager, override_stack
from tests.conftest import free_port
from tests.reference import Reference

FAULTS = (
    "--out-of-order", "0.03", "--late", "0.01", "--bad-undecodable", "0.003",
    "--bad-unknown-fingerprint", "0.003", "--bad-invalid", "0.006",
)
"""``livefeat generate`` options that inject every fault kind."""


@contextlib.contextmanager
def fresh_stack(root: Path, **flink: Any) -> Iterator[Settings]:
    """Settings pointing at a new embedded stack under ``root`` (stopped on exit).

    The offline store is ``root/offline``, the online store ``root/online.db`` (a private
    one: the default in the working directory may hold newer rows for the same entity
    ids), checkpoints go to ``root/ckpt``; ``flink`` overrides further ``flink`` keys.
    """
    base = Settings()
    base = base.model_copy(
        update={
            "flink": base.flink.model_copy(update={"checkpoint_dir": root / "ckpt", **flink}),
            "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
            "online_store": base.online_store.model_copy(
                update={"sqlite_path": root / "online.db"}
            ),
        }
    )
    base = override_stack(
        base, broker_port=free_port(), s3_port=free_port(), state_dir=root / "state"
    )
    manager = StackManager(base)
    try:
        yield manager.up().apply(base)
    finally:
        manager.down()


def write_config(settings: Settings, path: Path) -> Path:
    """``settings`` as a ``livefeat.yaml`` at ``path`` (for the CLI and subprocesses)."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"source_file"})))
    return path


def generate(config: Path, manifest: Path, events: int, seed: int) -> dict[str, Any]:
    """Publish ``events`` records with every fault kind (:data:`FAULTS`); returns the manifest."""
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "generate", "--events", str(events), "--seed", str(seed),
         *FAULTS, "--quiet", "--manifest", str(manifest)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    manifest_data: dict[str, Any] = json.loads(manifest.read_text())
    return manifest_data


def read_changelog_rows(
    uri: str, view: Any, s3_options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A view's changelog as dicts (times in epoch ms), deduplicated on (key, event_timestamp)
    keeping the earliest created_timestamp, sorted by key and time."""
    table = read_dataset(uri, f"features/{view.name}", s3_options)
    for name in table.schema.names:
        if str(table.schema.field(name).type).startswith("timestamp"):
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(table.column(name), "int64")
            )
    key = view.entity.join_key
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in table.to_pylist():
        k = (row[key], row["event_timestamp"])
        if k not in best or row["created_timestamp"] < best[k]["created_timestamp"]:
            best[k] = row
    return [best[k] for k in sorted(best)]


def accepted_events(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The run's accepted-event log per topic (deduplicated on Kafka position)."""
    return load_events(
        settings.offline_store.uri, PIPELINE, None, None, s3_options_for(settings)
    )


def assert_changelog_is_exact(
    settings: Settings, view: str, horizon_ms: int, ref: Reference, *, min_rows: int = 50
) -> list[dict[str, Any]]:
    """Every deduplicated changelog row of ``view`` equals the reference's, in order; returns
    the rows."""
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    got = read_changelog_rows(
        settings.offline_store.uri, PIPELINE.view(view), s3_options_for(settings)
    )
    want = ref.changelog(view, horizon_ms)
    assert len(want) > min_rows  # the data must exercise the view
    got_rows = [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in got]
    want_rows = [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in want]
    if got_rows != want_rows:
        first = next((i for i, (g, w) in enumerate(zip(got_rows, want_rows, strict=False))
                      if g != w), min(len(got_rows), len(want_rows)))
        raise AssertionError(
            f"{view}: {len(got_rows)} changelog rows, reference {len(want_rows)}; first "
            f"difference at row {first}: got {got_rows[first:first + 3]}, "
            f"want {want_rows[first:first + 3]} (columns: key, time, {', '.join(names)})"
        )
    return got


def assert_online_is_exact(
    settings: Settings, view: str, horizon_ms: int, ref: Reference, keys: Sequence[str]
) -> None:
    """The online store holds, for each of ``keys``, the reference's as-of value at the horizon
    (an entity whose values are all empty may be absent)."""
    from pipelines.feast_repo import feature_store, read_online

    definition = PIPELINE.view(view)
    join_key = definition.entity.join_key
    want = {r[join_key]: r for r in ref.as_of(view, [(k, horizon_ms) for k in keys])}
    got = read_online(feature_store(settings), definition, list(keys))
    assert len(got) == len(keys)
    for values in got:
        expected = want[values.key]
        for name in ref.feature_names(view):
            value = values.values[name] if values.found else None
            if name == "user_account_created_at" and value is not None:
                # Feast stores timestamps in whole seconds
                assert int(value.timestamp()) == expected[name] // 1000, (values.key, name)
            elif values.found or expected[name] not in (0, None):
                assert value == expected[name], (values.key, name, value, expected[name])
