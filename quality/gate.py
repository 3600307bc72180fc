"""The quality gate: row batches and feature micro-batches in, verdicts out.

See :mod:`quality` for the interface the stream calls, and docs/quality.md for the
rules, the drift measures and the actions.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DefinitionError
from quality.config import GateConfig
from quality.engine import GxRuntime, frame_of
from quality.gx_drift import register_reference
from quality.gx_rules import first_blank
from quality.profile import Profile, load_profiles
from quality.results import ResultStore, now_iso
from quality.suites import (
    BATCH_LEVELS,
    DRIFT_EXPECTATION,
    QUALITY_DIR,
    SuiteFile,
    batch_suites,
    event_suite_name,
    expectation_columns,
    expectation_label,
    feature_suite_name,
    load_suite_files,
    row_suite_name,
)
from quality.verdicts import (
    BatchFailure,
    ColumnDrift,
    DriftVerdict,
    MeasureResult,
    RowFailure,
    RowVerdict,
    row_detail,
)

log = logging.getLogger("livefeat.quality")

GATE_ERROR = "gate_error"
_INTEGRITY = ".integrity"

AlertHandler = Callable[[DriftVerdict], None]


Key = tuple[str, tuple[str, ...]]


def _key(expectation: dict[str, Any]) -> Key:
    return (str(expectation["type"]), tuple(expectation_columns(expectation)))


def _config(result: Any) -> dict[str, Any]:
    cfg = result.expectation_config
    return {"type": cfg.type, "kwargs": dict(cfg.kwargs)}


def _not_drift(expectation: dict[str, Any]) -> bool:
    return bool(expectation["type"] != DRIFT_EXPECTATION)


def _raised(result: Any) -> str | None:
    """The exception message when GX could not evaluate an expectation (None when it could).

    GX reports either one ``exception_info`` or one per metric that failed."""
    info = result.exception_info or {}
    if "raised_exception" in info:
        found = [info]
    else:
        found = [v for v in info.values() if isinstance(v, dict)]
    for item in found:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "exception")
    return None


class QualityGate:
    """Row-level and batch-level Great Expectations suites, applied to batches.

    Build with :meth:`load`; one instance is meant to live as long as the job.
    """

    def __init__(
        self,
        runtime: GxRuntime,
        suites: dict[str, SuiteFile],
        profiles: dict[str, Profile],
        config: GateConfig,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.profiles = profiles
        self.store = ResultStore(config.results_path)
        self.tags: dict[str, str] = {}
        """Added to every stored result, e.g. ``{"run": ...}`` to tell one run's results."""
        self._rows = {s.subject: s for s in suites.values() if s.level == "rows"}
        # views and topics with a batch suite (feature suites and input-drift suites)
        self._features = batch_suites(suites)
        self._positions: dict[str, dict[Key, int]] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._alert_handlers: list[AlertHandler] = []
        self._references: dict[str, dict[str, str]] = {}
        for view, profile in profiles.items():
            digest = uuid.uuid4().hex[:8]
            self._references[view] = {
                column: register_reference(f"{view}/{column}@{digest}", entry)
                for column, entry in profile.columns.items()
            }

    @classmethod
    def load(cls, quality_dir: Path | None = None, config: GateConfig | None = None) -> QualityGate:
        """Load the suites and profiles of ``quality_dir`` and build the GX runtime once.

        Args:
            quality_dir: a directory with ``suites/`` and ``profiles/`` (default: the
                ones shipped in the ``quality`` package).
            config: gate settings (default: :class:`GateConfig` defaults).

        Raises:
            ConfigError: a suite or profile file is invalid.
        """
        base = Path(quality_dir) if quality_dir is not None else QUALITY_DIR
        config = config or GateConfig()
        suites = load_suite_files(base / "suites")
        profiles = load_profiles(base / "profiles")
        runtime = GxRuntime()
        gate = cls(runtime, suites, profiles, config)
        for suite in suites.values():
            positions: dict[Key, int] = {}
            for i, e in enumerate(suite.expectations):
                key = _key(e)
                if key in positions:
                    raise ConfigError(
                        f"{expectation_label(e)} appears twice",
                        where=str(suite.path),
                        fix="keep one expectation per type and column",
                    )
                positions[key] = i
            gate._positions[suite.name] = positions
            runtime.add_suite(suite)
            if suite.level in BATCH_LEVELS:
                runtime.add_suite(suite, name=suite.name + _INTEGRITY, keep=_not_drift)
            if suite.level == "events":
                config.input_policy(suite.subject)  # raises on a block asked for
        for view in profiles:
            if view not in gate._features:
                log.warning("profile of %s has no batch suite; it is not used", view)
        return gate

    # -- public interface ------------------------------------------------------------
    @property
    def subjects(self) -> list[str]:
        """Topics with a row suite."""
        return sorted(self._rows)

    @property
    def views(self) -> list[str]:
        """Feature views, and topics, with a batch suite."""
        return sorted(self._features)

    def add_alert_handler(self, handler: AlertHandler) -> None:
        """Call ``handler(verdict)`` for every warn or block verdict (besides logging it)."""
        self._alert_handlers.append(handler)

    def counters(self) -> dict[tuple[str, str], int]:
        """Cumulative counts per (suite, outcome), for the pipeline's metrics.

        Outcomes of row suites: ``rows_passed``, ``rows_failed.<reason>``, ``batches``;
        of feature suites: ``pass``, ``warn``, ``block``, ``not_judged``.
        """
        with self._lock:
            return dict(self._counters)

    def _count(self, suite: str, outcome: str, n: int = 1) -> None:
        with self._lock:
            key = (suite, outcome)
            self._counters[key] = self._counters.get(key, 0) + n

    def check_rows(
        self, subject: str, rows: list[dict[str, Any]], reference_time_ms: int
    ) -> RowVerdict:
        """Validate a batch of decoded records of one topic with its row suite.

        Args:
            subject: the topic, e.g. ``livestream.bid_placed``.
            rows: decoded records (times as epoch-ms ints, enums as strings).
            reference_time_ms: the watermark; event times more than
                ``config.max_future_ms`` after it fail ``future_event_time``.

        Returns:
            The indices of the valid rows (ascending) and one failure per rejected
            row: the first expectation it fails in the suite's priority order.

        Raises:
            DefinitionError: no row suite exists for ``subject``.
        """
        suite = self._rows.get(subject)
        if suite is None:
            raise DefinitionError(
                f"no row suite for topic {subject}",
                where=f"quality/suites/{row_suite_name(subject)}.json",
                fix="add the suite, or do not route this topic through the gate",
            )
        result_id = uuid.uuid4().hex
        if not rows:
            return RowVerdict(subject, suite.name, result_id, 0, [], [])
        started = time.perf_counter()
        params = {
            "currencies": sorted(self.config.currencies),
            "max_event_time_ms": reference_time_ms + self.config.max_future_ms,
        }
        first: dict[int, int] = {}
        errored: dict[int, str] = {}
        error = ""
        summaries: list[dict[str, Any]] = []
        positions = self._positions[suite.name]
        n = len(rows)
        try:
            result = self.runtime.validate(suite.name, frame_of(rows, suite.columns), params)
            results = list(result.results)
        except Exception as exc:  # GX or pandas failed on this batch: quarantine it whole
            log.exception("row suite %s could not be evaluated", suite.name)
            results, error = [], f"{type(exc).__name__}: {exc}"
            first = dict.fromkeys(range(n), -1)
        for r in results:
            pos = positions[_key(_config(r))]
            label = expectation_label(suite.expectations[pos])
            raised = _raised(r)
            if raised:
                bad: range | list[int] = range(n)
                errored[pos] = raised
                log.error("%s %s raised: %s", suite.name, label, raised)
            else:
                bad = [int(i) for i in (r.result.get("unexpected_index_list") or [])]
            for i in bad:
                if first.get(i, len(positions)) > pos:
                    first[i] = pos
            summaries.append(
                {
                    "expectation": label,
                    "reason": suite.expectations[pos]["meta"]["reason"],
                    "success": bool(r.success),
                    "unexpected": len(bad),
                    "error": raised,
                }
            )
        failures = []
        for i in sorted(first):
            pos = first[i]
            if pos < 0:
                failures.append(RowFailure(i, GATE_ERROR, suite.name, {}, error))
                continue
            exp = suite.expectations[pos]
            column = first_blank(rows[i], expectation_columns(exp))
            value = rows[i].get(column)
            label = expectation_label(exp, column)
            if pos in errored:
                reason, detail = GATE_ERROR, f"{label} could not be evaluated: {errored[pos]}"
            else:
                reason = exp["meta"]["reason"]
                detail = row_detail(reason, column, value, reference_time_ms)
            failures.append(RowFailure(i, reason, label, {column: value}, detail))
        valid = [i for i in range(n) if i not in first]
        verdict = RowVerdict(subject, suite.name, result_id, n, valid, failures)
        by_reason = verdict.failed_by_reason
        self.store.append(
            {
                **self.tags,
                "kind": "rows",
                "result_id": result_id,
                "suite": suite.name,
                "subject": subject,
                "validated_at": now_iso(),
                "rows": n,
                "passed": len(valid),
                "failed": len(failures),
                "by_reason": by_reason,
                "reference_time_ms": reference_time_ms,
                "expectations": summaries,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
        self._count(suite.name, "batches")
        self._count(suite.name, "rows_passed", len(valid))
        for reason, count in by_reason.items():
            self._count(suite.name, f"rows_failed.{reason}", count)
        return verdict

    def check_features(self, view: str, rows: list[dict[str, Any]], batch_id: str) -> DriftVerdict:
        """Validate a micro-batch of changelog rows of ``view`` and take the view's action.

        Integrity expectations always run; drift is judged against the view's
        reference profile when the batch has at least ``min_rows`` rows. The
        verdict is stored; a ``block`` verdict also holds the rows (see
        :class:`~quality.results.ResultStore` for release).

        ``view`` may also be a topic with an events suite (input drift): its batch of
        accepted events is judged the same way, stored as an ``events`` result, and a
        failure is only recorded and alerted (``warn``), never held.

        Raises:
            DefinitionError: no feature or events suite exists for ``view``.
        """
        suite = self._features.get(view)
        if suite is None:
            raise DefinitionError(
                f"no feature suite for view {view}",
                where=f"quality/suites/{feature_suite_name(view)}.json "
                f"(or {event_suite_name(view)}.json for a topic)",
                fix="add the suite, or do not route this view through the gate",
            )
        events = suite.level == "events"
        policy = (self.config.input_policy(view, suite.batch_defaults) if events
                  else self.config.policy(view))
        profile = self.profiles.get(view)
        n = len(rows)
        started = time.perf_counter()
        note = ""
        if profile is None:
            note = (
                "no reference profile: drift not judged "
                f"(build one: livefeat quality profile {view})"
            )
        elif n < policy.min_rows:
            note = f"{n} rows < min_rows {policy.min_rows}: drift not judged"
        judged = not note
        params: dict[str, Any] = {"drift_threshold": policy.threshold}
        if judged and profile is not None:
            for column in suite.drift_columns:
                params[f"reference_{column}"] = self._references[view].get(column, "missing")
        columns: dict[str, ColumnDrift] = {}
        failures: list[BatchFailure] = []
        if n:
            name = suite.name if judged else suite.name + _INTEGRITY
            try:
                frame = frame_of(rows, suite.columns)
                results = list(self.runtime.validate(name, frame, params).results)
            except Exception as exc:  # the batch could not be evaluated: fail it, do not crash
                log.exception("feature suite %s could not be evaluated", name)
                results = []
                failures.append(BatchFailure(GATE_ERROR, "", n, [f"{type(exc).__name__}: {exc}"]))
            for r in results:
                self._read_feature_result(suite, r, n, columns, failures)
        failed = bool(failures) or any(c.drifted for c in columns.values())
        action = policy.action if failed else "pass"
        time_field = suite.time_field
        times = [r[time_field] for r in rows if r.get(time_field) is not None]
        verdict = DriftVerdict(
            view=view,
            batch_id=batch_id,
            result_id=uuid.uuid4().hex,
            action=action,
            rows=n,
            judged=judged,
            threshold=policy.threshold,
            columns=columns,
            failures=failures,
            note=note,
            event_time_min=min(times) if times else None,
            event_time_max=max(times) if times else None,
        )
        self.store.append(
            {
                **self.tags,
                "kind": suite.level,
                "suite": suite.name,
                "validated_at": now_iso(),
                "configured_action": policy.action,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                **verdict.to_json(),
            }
        )
        if action == "block":
            self.store.hold(view, batch_id, verdict.result_id, rows)
        self._count(suite.name, action)
        if not judged:
            self._count(suite.name, "not_judged")
        if action != "pass":
            self._alert(verdict)
        return verdict

    # -- helpers -----------------------------------------------------------------------
    def _read_feature_result(
        self,
        suite: SuiteFile,
        r: Any,
        n: int,
        columns: dict[str, ColumnDrift],
        failures: list[BatchFailure],
    ) -> None:
        cfg = _config(r)
        column = expectation_columns(cfg)[0]
        label = expectation_label(cfg)
        raised = _raised(r)
        if raised:
            failures.append(BatchFailure(label, column, n, [raised]))
        elif cfg["type"] == DRIFT_EXPECTATION:
            details = r.result.get("details") or {}
            measures = {
                k: MeasureResult(
                    value=float(m["value"]),
                    margin=float(m["margin"]),
                    limit=float(m["limit"]),
                    n=int(m["n"]),
                    drifted=bool(m["drifted"]),
                )
                for k, m in (details.get("measures") or {}).items()
            }
            columns[column] = ColumnDrift(
                column=column,
                kind=suite.drift_columns[column],
                drifted=not r.success,
                measures=measures,
                note=str(details.get("note", "")),
            )
        elif not r.success:
            # map expectations report unexpected rows; aggregates (min, max, ...) a value
            observed = r.result.get("observed_value")
            sample = r.result.get("unexpected_list") or ([] if observed is None else [observed])
            failures.append(
                BatchFailure(
                    expectation=label,
                    column=column,
                    unexpected_count=int(r.result.get("unexpected_count") or 0),
                    sample=list(sample[:5]),
                )
            )

    def _alert(self, verdict: DriftVerdict) -> None:
        what = ", ".join(verdict.drifted_columns) or "-"
        broken = ", ".join(f.expectation for f in verdict.failures) or "-"
        log.warning(
            "quality %s: view %s batch %s (%d rows): drifted columns %s; failed %s",
            verdict.action, verdict.view, verdict.batch_id, verdict.rows, what, broken,
        )
        for handler in self._alert_handlers:
            try:
                handler(verdict)
            except Exception:  # an alert hook must not stop the pipeline
                log.exception("alert handler %r failed", handler)

