"""Account for every record of a run, from what was durably written.

Counts come from the offline store, not from in-memory counters, so the
summary proves nothing was lost: every record read from Kafka (offsets below
the run's end offsets) is either an accepted event or a quarantine row with a
reason. Replays may write a record twice; positions are deduplicated.

With the quality gate on, the gate's stored results say what became of each
view's changelog rows: every row the ``views`` step produced was validated in
one micro-batch, and is materialized (``pass``/``warn``) or held (``block``):
``produced = materialized + held`` per view (:attr:`RunSummary.gate_balanced`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from pipelines.features.definitions import Pipeline
from pipelines.sinks.parquet import read_dataset

ACTIONS = ("pass", "warn", "block")


def run_key(pipeline_name: str, end_offsets: Mapping[tuple[str, int], int] | None) -> str:
    """The name the gate stores a run's results under.

    A bounded run is named by its pipeline and end offsets, so the job and the summary
    (and a run resumed from a checkpoint, which reads to the same offsets) agree on it
    without passing it around; an unbounded run gets a random name.

    >>> run_key("marketplace", {("t", 0): 5}) == run_key("marketplace", {("t", 0): 5})
    True
    """
    if end_offsets is None:
        return f"{pipeline_name}-stream-{uuid.uuid4().hex[:12]}"
    ends = sorted([t, p, o] for (t, p), o in end_offsets.items())
    digest = hashlib.sha256(json.dumps([pipeline_name, ends]).encode()).hexdigest()
    return f"{pipeline_name}-{digest[:16]}"


@dataclass
class GateOutcome:
    """What the quality gate did with one view's changelog rows in a run.

    Attributes:
        batches: micro-batches per action (``pass``, ``warn``, ``block``).
        rows: changelog rows per action; their sum is what the ``views`` step produced.
        not_judged: batches checked for integrity only (too small, or no profile).
        drifted: batches with at least one drifted column.
        held_now: rows of this run's blocked batches still held (not released).
        released_written: rows of this run's blocked batches that ``livefeat quality
            release`` has written to the stores since (they are in the offline store now).
    """

    batches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    not_judged: int = 0
    drifted: int = 0
    held_now: int = 0
    released_written: int = 0

    @property
    def produced(self) -> int:
        """Rows the gate validated: every row the ``views`` step produced."""
        return sum(self.rows.values())

    @property
    def held(self) -> int:
        """Rows of blocked batches (held, or released by a person since)."""
        return self.rows.get("block", 0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batches": self.batches,
            "rows": self.rows,
            "not_judged": self.not_judged,
            "drifted": self.drifted,
            "held_now": self.held_now,
            "released_written": self.released_written,
            "produced": self.produced,
        }


def gate_results_dir(settings: Any) -> Path | None:
    """Where a job with these settings stores gate results; None when the gate is off."""
    quality = settings.quality
    return quality.results_in(settings.stack.state_dir) if quality.enabled else None


def gate_outcomes(results_dir: Path, run: str) -> dict[str, GateOutcome]:
    """Per view, the gate's outcomes of run ``run`` (see :func:`run_key`), from its results.

    A batch validated twice (a replay after a restore) counts once, with its last verdict.
    """
    from quality.results import ResultStore

    store = ResultStore(results_dir)
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for record in store.results("features"):
        if record.get("run") == run:
            last[(record["view"], record["batch_id"])] = record
    out: dict[str, GateOutcome] = {}
    for (view, _), record in sorted(last.items()):
        outcome = out.setdefault(view, GateOutcome())
        action = str(record["action"])
        outcome.batches[action] = outcome.batches.get(action, 0) + 1
        outcome.rows[action] = outcome.rows.get(action, 0) + int(record["rows"])
        outcome.not_judged += 0 if record.get("judged", True) else 1
        columns = record.get("columns") or {}
        outcome.drifted += any(c.get("drifted") for c in columns.values())
    blocked = {key for key, r in last.items() if r["action"] == "block"}
    for batch in store.held():
        if (batch.view, batch.batch_id) in blocked:
            out[batch.view].held_now += len(batch.rows)
    verdicts = {r.get("result_id") for key, r in last.items() if key in blocked}
    for batch in store.materialized():
        if batch.result_id in verdicts:  # the verdict of this run that held it
            out[batch.view].released_written += len(batch.rows)
    return out


@dataclass
class RunSummary:
    """What a bounded run read and produced."""

    read: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    changelog_rows: dict[str, int] = field(default_factory=dict)
    horizon_ms: int | None = None
    gate: dict[str, GateOutcome] = field(default_factory=dict)
    """Per view the gate validated: its outcomes (empty when the gate was off)."""

    @property
    def total_read(self) -> int:
        """Records read from Kafka."""
        return sum(self.read.values())

    @property
    def accounted(self) -> int:
        """Records that ended up accepted or quarantined."""
        return sum(self.accepted.values()) + sum(self.quarantined.values())

    @property
    def balanced(self) -> bool:
        """Every record read is accounted for exactly once."""
        return self.total_read == self.accounted

    def gate_unaccounted(self) -> dict[str, int]:
        """Per gated view, rows produced minus rows materialized and held (0: all found).

        Rows of blocked batches a release has written since count once, as stored."""
        return {
            view: g.produced - self.changelog_rows.get(view, 0) - (g.held - g.released_written)
            for view, g in self.gate.items()
        }

    @property
    def gate_balanced(self) -> bool:
        """Every changelog row the gate saw is materialized or held (True without a gate)."""
        return not any(self.gate_unaccounted().values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "read": self.read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "changelog_rows": self.changelog_rows,
            "horizon_ms": self.horizon_ms,
            "total_read": self.total_read,
            "accounted": self.accounted,
            "balanced": self.balanced,
            "gate": {view: g.as_dict() for view, g in self.gate.items()},
            "gate_balanced": self.gate_balanced,
        }


def _positions(
    uri: str,
    dataset: str,
    s3: dict[str, Any] | None,
    end_offsets: Mapping[tuple[str, int], int],
    topic: str | None,
) -> list[tuple[Any, ...]]:
    try:
        cols = ["_partition", "_offset"] if topic else ["topic", "partition", "offset", "reason"]
        table = read_dataset(uri, dataset, s3, columns=cols)
    except FileNotFoundError:
        return []
    if topic:
        rows = zip(
            [topic] * table.num_rows,
            table.column(0).to_pylist(),
            table.column(1).to_pylist(),
            [None] * table.num_rows,
            strict=True,
        )
    else:
        rows = zip(*(table.column(c).to_pylist() for c in cols), strict=True)
    return [r for r in rows if r[2] < end_offsets.get((r[0], r[1]), 0)]


def summarize(
    pipeline: Pipeline,
    uri: str,
    end_offsets: Mapping[tuple[str, int], int],
    start_offsets: Mapping[tuple[str, int], int] | None = None,
    s3_options: dict[str, Any] | None = None,
    horizon_ms: int | None = None,
    gate_results: Path | None = None,
) -> RunSummary:
    """Summary of a bounded run that read ``[start, end)`` of each partition.

    ``gate_results``: the quality gate's results directory when the gate was on; the
    summary then reports the gate's outcomes of this run (see :func:`run_key`).
    """
    start_offsets = start_offsets or {}
    summary = RunSummary(horizon_ms=horizon_ms)
    if gate_results is not None:
        summary.gate = gate_outcomes(gate_results, run_key(pipeline.name, end_offsets))
    for (topic, partition), end in end_offsets.items():
        n = end - start_offsets.get((topic, partition), 0)
        summary.read[topic] = summary.read.get(topic, 0) + n
    topics = sorted({t for t, _ in end_offsets})
    for topic in topics:
        seen = {
            (r[1], r[2])
            for r in _positions(uri, f"events/{topic}", s3_options, end_offsets, topic)
            if r[2] >= start_offsets.get((topic, r[1]), 0)
        }
        summary.accepted[topic] = len(seen)
    quarantine: dict[tuple[str, int, int], str] = {}
    for t, p, o, reason in _positions(uri, "quarantine", s3_options, end_offsets, None):
        if o >= start_offsets.get((t, p), 0):
            quarantine[(t, p, o)] = reason
    summary.quarantined = dict(sorted(Counter(quarantine.values()).items()))
    for view in pipeline.views:
        try:
            table = read_dataset(
                uri,
                f"features/{view.name}",
                s3_options,
                columns=[view.entity.join_key, "event_timestamp"],
            )
        except FileNotFoundError:
            summary.changelog_rows[view.name] = 0
            continue
        if horizon_ms is not None:
            limit = pc.cast(table.column("event_timestamp"), "int64")
            table = table.filter(pc.less_equal(limit, horizon_ms))
        keys = set(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
        summary.changelog_rows[view.name] = len(keys)
    return summary
