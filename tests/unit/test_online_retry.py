"""Retrier semantics (backoff, outage counting, give-up) with a fake clock, and error classes."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable

import pytest
import redis.exceptions

from pipelines.errors import SinkError
from pipelines.sinks.online import is_transient_online_error
from pipelines.sinks.retry import Retrier, RetryPolicy


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def _flaky(failures: int, exc: Exception) -> tuple[list[int], Callable[[], str]]:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise exc
        return "done"

    return calls, fn


def _retrier(t: FakeTime, policy: RetryPolicy) -> Retrier:
    return Retrier("test service", policy, lambda e: isinstance(e, ConnectionError),
                   clock=t.clock, sleep=t.sleep, seed=1)


def test_transient_failures_are_retried_with_doubling_capped_backoff() -> None:
    t = FakeTime()
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=2.0, give_up_after_s=60, jitter=0)
    r = _retrier(t, policy)
    calls, fn = _flaky(5, ConnectionError("refused"))
    assert r.call(fn, what="write") == "done"
    assert calls[0] == 6
    assert t.pauses == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert (r.stats.outages, r.stats.retries, r.stats.calls) == (1, 5, 1)
    assert r.stats.outage_s == pytest.approx(7.5)
    # a second outage is counted separately
    calls, fn = _flaky(1, ConnectionError("refused"))
    r.call(fn, what="write")
    assert (r.stats.outages, r.stats.retries, r.stats.calls) == (2, 6, 2)


def test_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=8.0, jitter=0.3)
    rnd = random.Random(3)
    for attempt in range(1, 8):
        base = min(8.0, 2 ** (attempt - 1))
        pause = policy.backoff(attempt, rnd)
        assert 0.7 * base <= pause <= base


def test_gives_up_with_sink_error_after_the_give_up_time() -> None:
    t = FakeTime()
    r = _retrier(t, RetryPolicy(initial_backoff_s=1, max_backoff_s=4, give_up_after_s=10,
                                jitter=0))
    _calls, fn = _flaky(10**9, ConnectionError("still refused"))
    with pytest.raises(SinkError) as err:
        r.call(fn, what="write 3 rows")
    assert "could not write 3 rows" in str(err.value)
    assert "still refused" in str(err.value)
    assert err.value.fix
    assert t.now == pytest.approx(10)  # never sleeps past the give-up time
    assert (r.stats.outages, r.stats.gave_up) == (1, 1)


def test_other_errors_are_raised_at_once() -> None:
    t = FakeTime()
    r = _retrier(t, RetryPolicy())
    calls, fn = _flaky(1, ValueError("bad row"))
    with pytest.raises(ValueError, match="bad row"):
        r.call(fn, what="write")
    assert calls[0] == 1
    assert r.stats.outages == 0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (redis.exceptions.ConnectionError("Connection refused"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (redis.exceptions.BusyLoadingError("LOADING"), True),
        (redis.exceptions.ResponseError("BUSY Redis is busy running a script"), True),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: x"), False),
        (ConnectionRefusedError(), True),
        (ValueError("x"), False),
    ],
)
def test_online_error_classes(exc: BaseException, transient: bool) -> None:
    assert is_transient_online_error(exc) is transient
