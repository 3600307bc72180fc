"""How outages are measured and logged, and where worker log records go (no services)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.runtime import worker_logs
from pipelines.sinks.retry import Retrier, RetryPolicy


class SlowClock:
    """A fake monotonic clock whose sleeps pass instantly."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_an_outage_lasts_from_the_start_of_the_first_failed_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = SlowClock()
    calls = [0]

    def upload() -> str:
        calls[0] += 1
        if calls[0] <= 2:
            t.now += 3.0  # hung until the read timeout
            raise TimeoutError("read timed out")
        return "ok"

    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=1.0, give_up_after_s=60, jitter=0)
    r = Retrier("S3 endpoint x", policy, lambda e: isinstance(e, TimeoutError),
                clock=t.clock, sleep=t.sleep)
    with caplog.at_level(logging.WARNING, logger="pipelines.sinks.retry"):
        assert r.call(upload, what="upload 10 rows") == "ok"
    # 3 s hung + 0.5 s pause + 3 s hung + 1 s pause, counted from the first call's start
    assert r.stats.outage_s == pytest.approx(7.5)
    assert (r.stats.outages, r.stats.retries) == (1, 2)
    start, end = (m.getMessage() for m in caplog.records)
    assert "S3 endpoint x unavailable (TimeoutError: read timed out)" in start
    assert "outage #1" in start
    assert end == ("S3 endpoint x available again after an outage of 7.5 s (2 retries); "
                   "outage #1, 7.5 s of outages in total")
    assert all(m.levelno == logging.WARNING for m in caplog.records)


@pytest.fixture
def clean_pipelines_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(worker_logs.ROOT_LOGGER)
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_worker_records_go_to_a_file_next_to_the_flink_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_pipelines_logger: logging.Logger
) -> None:
    monkeypatch.setenv(worker_logs.LOG_DIR_ENV, str(tmp_path))
    assert not worker_logs.in_thread_mode_worker()  # a plain interpreter
    assert worker_logs.route_to_flink_log() is None  # ... is left alone
    path = worker_logs.route_to_flink_log(force=True)
    assert path == worker_logs.worker_log_path(tmp_path)
    assert worker_logs.route_to_flink_log(force=True) == path  # installed once
    logging.getLogger("pipelines.sinks.retry").warning("outage #%d over", 3)
    logging.getLogger("pipelines.sinks.online").info("online sink: 5 rows")
    logging.getLogger("pipelines.sinks.online").debug("not kept")
    for handler in clean_pipelines_logger.handlers:
        handler.flush()
    assert path is not None
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("WARNING pipelines.sinks.retry - outage #3 over")
    assert lines[1].endswith("INFO  pipelines.sinks.online - online sink: 5 rows")


def test_without_a_log_directory_nothing_is_installed(
    monkeypatch: pytest.MonkeyPatch, clean_pipelines_logger: logging.Logger
) -> None:
    monkeypatch.delenv(worker_logs.LOG_DIR_ENV, raising=False)
    assert worker_logs.route_to_flink_log(force=True) is None
    assert not any(isinstance(h, worker_logs.WorkerLogHandler)
                   for h in clean_pipelines_logger.handlers)
