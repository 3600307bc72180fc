"""Find the retained checkpoint or savepoint a job resumes from (``livefeat run --restore``).

Flink writes each completed checkpoint of a job to
``<flink.checkpoint_dir>/<job id>/chk-<n>/`` and writes that directory's
``_metadata`` file last, so a ``chk-<n>`` directory without ``_metadata`` is a
checkpoint that was still being written when the job stopped (or crashed) and
cannot be restored. A savepoint is any directory holding ``_metadata``.

:func:`resolve_restore` turns what the user typed (``latest``, a directory, its
``_metadata`` file, or a URI) into the value of Flink's
``execution.state-recovery.path``.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> for job, n in (("a1", 3), ("a1", 4), ("b2", 1)):
...     (root / job / f"chk-{n}").mkdir(parents=True)
>>> (root / "a1" / "chk-3" / "_metadata").touch()
>>> [c.number for c in complete_checkpoints(root)]   # chk-4 has no _metadata yet
[3]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import JobError

LATEST = "latest"
"""The ``--restore`` value that picks the newest complete checkpoint."""

METADATA = "_metadata"
"""The file Flink writes last into a checkpoint or savepoint directory."""

_CHECKPOINT_DIR = re.compile(r"^chk-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A complete, retained checkpoint.

    Attributes:
        path: the ``chk-<n>`` directory (what Flink restores from).
        job_id: the directory above it, named after the job that wrote it.
        number: ``n``, increasing within one job.
        completed_at: modification time of ``_metadata`` (seconds since the epoch).
    """

    path: Path
    job_id: str
    number: int
    completed_at: float


def complete_checkpoints(checkpoint_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every complete checkpoint under ``checkpoint_dir``, oldest first.

    Ordered by completion time, then job directory and number, so the last one is
    the newest whichever job wrote it. A missing directory has none.
    """
    root = Path(checkpoint_dir).expanduser()
    if not root.is_dir():
        return []
    found = []
    for job in root.iterdir():
        if not job.is_dir():
            continue
        for chk in job.iterdir():
            match = _CHECKPOINT_DIR.match(chk.name)
            metadata = chk / METADATA
            if match is None or not metadata.is_file():
                continue
            try:
                completed = metadata.stat().st_mtime
            except FileNotFoundError:  # deleted by the job that owns it since listing
                continue
            found.append(Checkpoint(chk.resolve(), job.name, int(match.group(1)), completed))
    return sorted(found, key=lambda c: (c.completed_at, c.job_id, c.number))


def latest_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> Checkpoint:
    """The newest complete checkpoint under ``checkpoint_dir``.

    Raises:
        JobError: there is none (no job ran with checkpoints there, or none completed one).
    """
    found = complete_checkpoints(checkpoint_dir)
    if not found:
        incomplete = sum(1 for _ in Path(checkpoint_dir).expanduser().glob("*/chk-*"))
        detail = (f"; {incomplete} checkpoint directories without {METADATA} "
                  "(never completed) were skipped" if incomplete else "")
        raise JobError(
            f"no complete checkpoint to restore from{detail}",
            where=f"flink.checkpoint_dir = {checkpoint_dir}",
            fix="run the job with checkpoints on (flink.checkpoint_interval_ms > 0) long enough "
            "for one to complete, point flink.checkpoint_dir at where its checkpoints are, or "
            "pass --restore a checkpoint or savepoint directory",
        )
    return found[-1]


def resolve_restore(value: str, checkpoint_dir: str | os.PathLike[str]) -> str:
    """The ``execution.state-recovery.path`` for a ``--restore`` value.

    Args:
        value: ``latest`` (newest complete checkpoint under ``checkpoint_dir``), a
            checkpoint or savepoint directory, its ``_metadata`` file, or a URI with a
            scheme (``file://``, ``s3://``, ...), passed to Flink unchecked.
        checkpoint_dir: ``flink.checkpoint_dir``.

    Returns:
        A URI Flink restores from.

    Raises:
        JobError: ``latest`` found no complete checkpoint, or a local path is not a
            complete checkpoint or savepoint.
    """
    if value == LATEST:
        return latest_checkpoint(checkpoint_dir).path.as_uri()
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if path.name == METADATA and path.is_file():
        path = path.parent
    if not (path / METADATA).is_file():
        why = "does not exist" if not path.exists() else f"holds no {METADATA} file"
        raise JobError(
            f"cannot restore from {value}: it {why}, so it is not a complete checkpoint "
            "or savepoint",
            where="--restore",
            fix=f"pass a chk-<n> directory (under {checkpoint_dir}/<job id>/) or a savepoint "
            f"directory that holds {METADATA}, or --restore {LATEST}",
        )
    return path.resolve().as_uri()
