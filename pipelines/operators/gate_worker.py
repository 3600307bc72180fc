"""Where the stream's gate step validates: a Python process of its own, or else a thread.

In thread mode every Python step of a Flink task manager runs in one interpreter, so
they share one GIL: validation on a thread of that interpreter (and importing Great
Expectations, 4-15 s of CPU) takes turns with decoding, windowing and the sinks, and
adds its whole CPU time to the job's. :class:`GateWorker` therefore runs the gate in a
child process (``spawn``, the interpreter the workers run), where it loads and
validates on another core while the job goes on; batches go there pickled and verdicts
come back. The child exits with the step (or when its parent dies: its end of the
pipe closes).

When no child can be started (no usable interpreter path, an embedded interpreter
that cannot spawn) or the child dies, the worker falls back to a thread in this
interpreter, Python-started (never the task thread: in thread mode that is the JVM's,
and importing scipy's pybind11 extensions there deadlocks on the GIL); callers
resubmit the batches whose verdicts failed (:meth:`GateWorker.is_broken`).

Nothing here imports PyFlink: the child imports this module to run the gate.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from quality.config import GateConfig

log = logging.getLogger("livefeat.quality")

Verdict = tuple[Any, float]
"""A :class:`quality.verdicts.DriftVerdict` and the seconds the validation took."""


class GateWorker:
    """Loads the quality gate off the task thread and validates batches there.

    Args:
        quality_dir: directory with ``suites/`` and ``profiles/`` (None: the shipped ones).
        config: the gate settings.
        tags: stored with every result.
        python: interpreter for the child process (None or not executable: a thread).
    """

    def __init__(
        self,
        quality_dir: Path | None,
        config: GateConfig,
        tags: dict[str, str],
        python: str | None,
    ) -> None:
        self.args = (quality_dir, config, dict(tags))
        self.kind = "thread"
        self.gx_imported_before = False
        self.started = time.perf_counter()
        self.ready_at: float | None = None
        self.executor: Executor | None = None
        self.ready: Future[float] | None = None
        self.loading: Future[tuple[Any, float]] | None = None  # thread: (gate, seconds)
        if python and os.access(python, os.X_OK):
            try:
                self._start_process(python)
            except Exception as exc:  # any failure to spawn: use a thread
                log.warning("quality gate: no validation process (%s); validating on a "
                            "thread of the job's interpreter", exc)
                self.executor = self.ready = None
        if self.executor is None:
            self._start_thread()

    def _start_process(self, python: str) -> None:
        context = multiprocessing.get_context("spawn")
        context.set_executable(python)
        self.executor = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_child_init, initargs=self.args
        )
        self.kind = "process"
        self._watch(self.executor.submit(_child_ready))

    def _start_thread(self) -> None:
        self.kind = "thread"
        self.gx_imported_before = "great_expectations" in sys.modules
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livefeat-gate")
        self.loading = self.executor.submit(_thread_load, *self.args)
        self._watch(self.executor.submit(_thread_ready, self.loading))

    def _watch(self, ready: Future[float]) -> None:
        self.ready = ready

        def done(f: Future[float]) -> None:
            if not f.cancelled() and f.exception() is None:
                self.ready_at = time.perf_counter()

        ready.add_done_callback(done)

    @property
    def load_s(self) -> float | None:
        """Seconds from the start until the gate was ready (None: not yet)."""
        return None if self.ready_at is None else self.ready_at - self.started

    def submit(self, view: str, rows: list[dict[str, Any]], batch_id: str) -> Future[Verdict]:
        """Validate a batch; the future's result is ``(verdict, seconds)``."""
        assert self.executor is not None
        try:
            if self.kind == "process":
                return self.executor.submit(_child_check, view, rows, batch_id)
            assert self.loading is not None
            return self.executor.submit(_thread_check, self.loading, view, rows, batch_id)
        except BrokenProcessPool:
            self.fall_back()
            return self.submit(view, rows, batch_id)

    @staticmethod
    def is_broken(exc: BaseException) -> bool:
        """True when a verdict failed because the validation process died."""
        return isinstance(exc, BrokenProcessPool)

    def fall_back(self) -> None:
        """The validation process died: validate on a thread from now on (idempotent)."""
        if self.kind != "process":
            return
        log.warning("quality gate: the validation process died; validating on a thread of "
                    "the job's interpreter from now on")
        self.close()
        self.started, self.ready_at = time.perf_counter(), None
        self._start_thread()

    def close(self) -> None:
        """Stop the worker; validations not started are dropped (their rows are in state)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None


# -- in the child process: one gate --------------------------------------------------------

_CHILD: dict[str, Any] = {}


def _load(quality_dir: Path | None, config: GateConfig, tags: dict[str, str]) -> tuple[Any, float]:
    from quality.gate import QualityGate

    started = time.perf_counter()
    gate = QualityGate.load(quality_dir, config)
    gate.tags.update(tags)
    seconds = time.perf_counter() - started
    log.info("quality gate loaded in %.1f s", seconds)
    return gate, seconds


def _child_init(quality_dir: Path | None, config: GateConfig, tags: dict[str, str]) -> None:
    try:
        _CHILD["gate"], _CHILD["load_s"] = _load(quality_dir, config, tags)
    except BaseException as exc:  # raised with the first verdict instead: an
        _CHILD["error"] = exc  # initializer that raises would break the pool


def _child_gate() -> Any:
    error = _CHILD.get("error")
    if error is not None:
        raise error
    return _CHILD["gate"]


def _child_ready() -> float:
    _child_gate()
    return float(_CHILD["load_s"])


def _validate(gate: Any, view: str, rows: list[dict[str, Any]], batch_id: str) -> Verdict:
    started = time.perf_counter()
    verdict = gate.check_features(view, rows, batch_id)
    return verdict, time.perf_counter() - started


def _child_check(view: str, rows: list[dict[str, Any]], batch_id: str) -> Verdict:
    return _validate(_child_gate(), view, rows, batch_id)


# -- on a thread of this interpreter: one gate per worker -----------------------------------


def _thread_load(
    quality_dir: Path | None, config: GateConfig, tags: dict[str, str]
) -> tuple[Any, float]:
    return _load(quality_dir, config, tags)


def _thread_ready(loading: Future[tuple[Any, float]]) -> float:
    return loading.result()[1]


def _thread_check(
    loading: Future[tuple[Any, float]], view: str, rows: list[dict[str, Any]], batch_id: str
) -> Verdict:
    return _validate(loading.result()[0], view, rows, batch_id)


__all__ = ["GateWorker", "Verdict"]
