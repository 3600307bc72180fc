"""The quality gate: Great Expectations 1.x suites kept as files, reference profiles, verdicts.

``quality`` knows nothing about Flink. The stream calls it through this narrow
interface (a batch in, a verdict with structured failures out)::

    from quality import GateConfig, QualityGate

    gate = QualityGate.load(quality_dir=None, config=GateConfig())   # once per job

    # Row level: one call per micro-batch of decoded records of one topic.
    verdict = gate.check_rows("livestream.order_placed", records, reference_time_ms=watermark)
    for i in verdict.valid_indices:          # ascending: valid rows pass untouched, in order
        emit(records[i])
    for f in verdict.failures:               # one per rejected row
        quarantine(records[f.index], reason=f.reason, detail=f.detail,
                   expectation=f.expectation, values=f.values)

    # Batch level: one call per micro-batch of changelog rows of one view.
    drift = gate.check_features("user_features", changelog_rows, batch_id="user_features-...")
    if drift.action != "block":              # "pass" or "warn": materialize
        sink.write(changelog_rows)           # "block": the gate holds the rows

    gate.counters()                          # {(suite, outcome): count} for the metrics

* :meth:`QualityGate.load` reads ``suites/*.json`` and ``profiles/*.json`` of
  ``quality_dir`` (default: the ones shipped in this package) and builds one GX
  ephemeral context with one data asset and batch definition per suite.
* :meth:`QualityGate.check_rows` returns a :class:`RowVerdict`:
  ``valid_indices`` (ascending) and ``failures`` (:class:`RowFailure`: ``index``,
  ``reason``, ``expectation``, ``values``, ``detail``). A row failing several
  expectations gets one failure, the first in the priority order of
  :mod:`quality.rows`: ``empty_id`` (id columns in schema order),
  ``non_positive_amount``, ``unsupported_currency``, ``future_event_time``, then
  ``unknown_enum`` (GX only: in the stream, Avro decoding already rejects unknown
  symbols). If GX cannot evaluate a batch, every affected row fails with
  ``gate_error``: bad input never vanishes.
* :meth:`QualityGate.check_features` returns a :class:`DriftVerdict` with
  ``action`` in ``pass``/``warn``/``block``, per-column measures and the threshold,
  and ``result_id``. Every verdict is stored under ``config.results_dir``; a
  blocked batch is held there until ``livefeat quality release BATCH_ID`` moves
  it to ``released/<view>/`` for the sink (see :mod:`quality.results`). Given a
  topic with an events suite instead of a view, it judges a batch of that topic's
  accepted events (input drift) and only ever warns.
* :class:`MicroBatcher` cuts a stream of feature rows into micro-batches by size
  and event-time span (``GateConfig.batch_max_rows`` / ``batch_max_ms``), or into
  tumbling event-time windows (``aligned=True``: a topic's events).

Importing :mod:`quality` is cheap; Great Expectations is imported when the gate
is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quality.batcher import MicroBatch, MicroBatcher
    from quality.config import GateConfig
    from quality.gate import QualityGate
    from quality.profile import Profile, build_profile
    from quality.results import ResultStore
    from quality.verdicts import ColumnDrift, DriftVerdict, RowFailure, RowVerdict

_EXPORTS = {
    "GateConfig": "quality.config",
    "QualityGate": "quality.gate",
    "RowVerdict": "quality.verdicts",
    "RowFailure": "quality.verdicts",
    "DriftVerdict": "quality.verdicts",
    "ColumnDrift": "quality.verdicts",
    "Profile": "quality.profile",
    "build_profile": "quality.profile",
    "ResultStore": "quality.results",
    "MicroBatch": "quality.batcher",
    "MicroBatcher": "quality.batcher",
}

__all__ = [
    "ColumnDrift",
    "DriftVerdict",
    "GateConfig",
    "MicroBatch",
    "MicroBatcher",
    "Profile",
    "QualityGate",
    "ResultStore",
    "RowFailure",
    "RowVerdict",
    "build_profile",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quality' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
