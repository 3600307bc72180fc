"""Where validation results, held batches and released batches live (a local directory).

Layout under the results directory (default ``.livefeat/quality``)::

    results/YYYY-MM-DD.jsonl          one JSON object per validation or release (UTC day)
    held/<view>/<batch_id>.json       a blocked feature batch: its verdict and rows
    released/<view>/<batch_id>.json   a released batch, waiting for the sink
    materialized/<view>/<batch_id>.json  a released batch the sink has written

Result lines are appended with one ``write`` on a file opened in append mode, so
concurrent writers on one machine do not interleave lines. Batch files are written
under a temporary name and renamed, so a reader never sees half a batch.

Release protocol: :meth:`ResultStore.release` moves ``held/<view>/<id>.json`` to
``released/<view>/<id>.json`` and records a ``release`` line. A writer (``livefeat
quality release`` itself, :mod:`pipelines.sinks.release`) then takes each batch of
:meth:`ResultStore.pending_releases`, fixes the ``created_timestamp`` its rows get
(:meth:`ResultStore.write_stamp`, kept in the file so that a retry writes identical
rows), writes the rows as the stream's sinks write any feature batch, and calls
:meth:`ResultStore.mark_materialized`, which moves the file to ``materialized/`` and
records a ``materialize`` line. A batch found in ``released/`` is one whose writing
did not finish (or has not started): writing it again is safe, since the offline
changelog tolerates duplicates of identical rows and the online store never replaces a
newer value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import LivefeatError

_SAFE = re.compile(r"[^A-Za-z0-9._=-]")

STATES = ("held", "released", "materialized")
"""Where a feature batch of a block verdict can be, in the order it moves."""


def now_iso() -> str:
    """The current UTC time, ISO-8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def safe_name(batch_id: str) -> str:
    """A file name for a batch id (characters other than letters, digits, ``._=-`` become ``_``)."""
    return _SAFE.sub("_", batch_id) or "_"


@dataclass(frozen=True)
class StoredBatch:
    """A held or released feature batch."""

    view: str
    batch_id: str
    result_id: str
    rows: list[dict[str, Any]]
    state: str
    path: Path
    info: dict[str, Any]


class ResultStore:
    """Read and write the gate's results under one directory.

    Args:
        root: the results directory; created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- results ---------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Append one result line (``record`` must be JSON-ready)."""
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        directory = self.root / "results"
        directory.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        fd = os.open(directory / f"{day}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def results(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored result, oldest file first (``kind``: rows, features or release)."""
        directory = self.root / "results"
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.jsonl")):
            with path.open() as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash: skip it, keep the rest
                    if kind is None or record.get("kind") == kind:
                        yield record

    # -- held and released batches ---------------------------------------------------
    def _write_batch(self, path: Path, doc: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, default=str))
        os.replace(tmp, path)

    def hold(
        self, view: str, batch_id: str, result_id: str, rows: list[dict[str, Any]]
    ) -> Path:
        """Keep a blocked batch (its rows, unchanged) until a person releases it."""
        path = self.root / "held" / view / f"{safe_name(batch_id)}.json"
        doc = {
            "view": view,
            "batch_id": batch_id,
            "result_id": result_id,
            "held_at": now_iso(),
            "rows": rows,
        }
        self._write_batch(path, doc)
        return path

    def _batches(
        self, state: str, view: str | None = None, name: str = "*"
    ) -> list[StoredBatch]:
        base = self.root / state
        if not base.is_dir():
            return []
        out = []
        for path in sorted(base.glob(f"{view or '*'}/{name}.json")):
            try:
                doc = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # moved on by another process since the listing
            path = path.absolute()
            info = {k: v for k, v in doc.items() if k != "rows"}
            out.append(
                StoredBatch(
                    view=doc["view"],
                    batch_id=doc["batch_id"],
                    result_id=doc.get("result_id", ""),
                    rows=doc["rows"],
                    state=state,
                    path=path,
                    info=info,
                )
            )
        return out

    def held(self, view: str | None = None) -> list[StoredBatch]:
        """Batches waiting for a person's decision."""
        return self._batches("held", view)

    def pending_releases(self, view: str | None = None) -> list[StoredBatch]:
        """Released batches the sink has not written yet."""
        return self._batches("released", view)

    def materialized(self, view: str | None = None) -> list[StoredBatch]:
        """Released batches whose rows have been written to the stores."""
        return self._batches("materialized", view)

    def find(self, batch_id: str, view: str | None = None) -> list[StoredBatch]:
        """Every stored batch with this id (held, released or materialized; any view)."""
        name = safe_name(batch_id)
        return [b for state in STATES for b in self._batches(state, view, name)]

    def unknown_batch(self, batch_id: str, view: str | None = None) -> LivefeatError:
        """The error for a batch id nothing holds, naming a few held ids to choose from."""
        held = sorted(self.held(view), key=lambda b: (b.view, b.batch_id))
        some = ", ".join(b.batch_id for b in held[:5]) + (", ..." if len(held) > 5 else "")
        scope = f" of view {view}" if view else ""
        return LivefeatError(
            f"no held or released batch{scope} has this id",
            where=f"{self.root}, batch {batch_id}",
            fix=(f"held now: {some} (`livefeat quality held` lists them all)" if held
                 else "nothing is held here; check --results-dir / quality.results_dir"),
        )

    def release(self, batch_id: str, view: str | None = None, by: str = "") -> StoredBatch:
        """Release a held batch: move it to ``released/`` for the sink and record it.

        Raises:
            LivefeatError: no held batch has this id (or several views hold one).
        """
        name = safe_name(batch_id)  # letters, digits, ._=- only: no glob pattern
        found = self._batches("held", view, name)
        if not found:
            if self._batches("released", view, name) or self._batches("materialized", view, name):
                raise LivefeatError(
                    "already released",
                    where=f"{self.root}, batch {batch_id}",
                    fix="`livefeat quality release BATCH_ID` finishes writing a released batch",
                )
            raise self.unknown_batch(batch_id, view)
        if len(found) > 1:
            raise LivefeatError(
                f"views {sorted(b.view for b in found)} each hold a batch with this id",
                where=f"{self.root}, batch {batch_id}",
                fix="name the view with --view",
            )
        batch = found[0]
        earlier = self._batches("released", batch.view, name)
        if earlier:
            # An earlier release stopped between writing released/ and removing held/
            # (the record comes last, so it is missing): finish that one.
            released = earlier[0]
        else:
            doc = {**batch.info, "released_at": now_iso(), "released_by": by,
                   "rows": batch.rows}
            target = (self.root / "released" / batch.view / batch.path.name).absolute()
            self._write_batch(target, doc)
            released = StoredBatch(
                batch.view, batch.batch_id, batch.result_id, batch.rows, "released", target,
                {k: v for k, v in doc.items() if k != "rows"},
            )
        batch.path.unlink()
        self.append(
            {
                "kind": "release",
                "view": batch.view,
                "batch_id": batch.batch_id,
                "result_id": released.result_id,
                "rows": len(released.rows),
                "released_at": released.info.get("released_at"),
                "released_by": released.info.get("released_by", by),
            }
        )
        return released

    def write_stamp(self, batch: StoredBatch) -> int:
        """The ``created_timestamp`` (epoch ms) the rows of a released batch are written with.

        Fixed at the first call and kept in the batch's file (``written_at_ms``), so that
        a write interrupted and run again writes identical rows.
        """
        if batch.state != "released":
            raise LivefeatError(
                f"batch is {batch.state}, not released",
                where=f"{batch.path}",
                fix="release it first (`livefeat quality release BATCH_ID`)",
            )
        stamp = batch.info.get("written_at_ms")
        if stamp is not None:
            return int(stamp)
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        batch.info["written_at_ms"] = stamp
        self._write_batch(batch.path, {**batch.info, "rows": batch.rows})
        return stamp

    def mark_materialized(
        self, batch: StoredBatch, details: dict[str, Any] | None = None
    ) -> Path:
        """The sink wrote a released batch: move its file to ``materialized/``.

        With ``details`` (JSON-ready: what was written where), a ``materialize`` result
        line is recorded too. Marking a batch another process marked already is a no-op.
        """
        target = self.root / "materialized" / batch.view / batch.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(batch.path, target)
        except FileNotFoundError:
            if target.exists():
                return target
            raise
        if details is not None:
            self.append(
                {
                    "kind": "materialize",
                    "view": batch.view,
                    "batch_id": batch.batch_id,
                    "result_id": batch.result_id,
                    "rows": len(batch.rows),
                    "materialized_at": now_iso(),
                    **details,
                }
            )
        return target

