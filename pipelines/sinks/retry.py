"""Retries with backoff for sinks whose service may be away for a while.

A sink wraps each call to its service in :meth:`Retrier.call`. A *transient*
error (connection refused, timeout, a 5xx answer) starts or continues an
*outage*: the call is retried with exponential backoff and jitter until it
succeeds or the outage has lasted ``give_up_after_s`` seconds, at which point
:class:`~pipelines.errors.SinkError` is raised. Any other error is raised at
once. Outages are counted and logged once when they start and once when they
end (a WARNING with the outage's duration and the running count and total),
never once per retry. An outage lasts from the start of the first attempt that
failed, so a call that hung until its timeout counts the time it hung.

>>> r = Retrier("demo", RetryPolicy(give_up_after_s=1), is_transient=lambda e: False)
>>> r.call(lambda: 42, what="answer")
42
>>> r.stats.outages
0
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pipelines.errors import SinkError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry while a service is away.

    Attributes:
        initial_backoff_s: pause after the first failure.
        max_backoff_s: upper bound of the pause; pauses double up to it.
        give_up_after_s: an outage longer than this raises SinkError.
        jitter: each pause is multiplied by a random factor in ``[1 - jitter, 1]``.
    """

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    give_up_after_s: float = 300.0
    jitter: float = 0.3

    def backoff(self, attempt: int, rnd: random.Random) -> float:
        """Pause before retry number ``attempt`` (1 for the first retry)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return base * (1 - self.jitter * rnd.random())


@dataclass
class OutageStats:
    """What a :class:`Retrier` went through.

    Attributes:
        calls: calls that eventually succeeded.
        outages: outages seen (a run of failed attempts, ended by success or give-up).
        retries: failed attempts that were retried.
        outage_s: total seconds spent in outages that ended.
        gave_up: outages that ended in SinkError.
        last_error: the last transient error, as text.
    """

    calls: int = 0
    outages: int = 0
    retries: int = 0
    outage_s: float = 0.0
    gave_up: int = 0
    last_error: str = ""


class Retrier:
    """Runs calls to one service, riding out its outages.

    Args:
        service: what is called, for messages (``"online store (redis 127.0.0.1:6379)"``).
        policy: backoff and give-up time.
        is_transient: True for an error worth retrying (the service is away or busy).
        fix: what a person should do when the sink gives up.
        clock: monotonic seconds (tests pass a fake).
        sleep: pauses (tests pass a fake).
        seed: seeds the jitter.
    """

    def __init__(
        self,
        service: str,
        policy: RetryPolicy,
        is_transient: Callable[[BaseException], bool],
        *,
        fix: str = "check that the service runs and is reachable, then restart the job",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.service = service
        self.policy = policy
        self.is_transient = is_transient
        self.fix = fix
        self.clock = clock
        self.sleep = sleep
        self.stats = OutageStats()
        self._rnd = random.Random(seed)

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """``fn()``, retried while it fails with a transient error.

        Args:
            fn: the call; it must be safe to repeat (idempotent).
            what: what the call does, for messages (``"write 500 rows of user_features"``).

        Raises:
            SinkError: the outage outlasted ``policy.give_up_after_s``.
            Exception: any non-transient error from ``fn``, unchanged.
        """
        started: float | None = None
        attempt = 0
        while True:
            tried_at = self.clock()
            try:
                result = fn()
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                now = self.clock()
                attempt += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if started is None:
                    started = tried_at
                    self.stats.outages += 1
                    log.warning(
                        "%s unavailable (%s) while trying to %s; retrying with backoff "
                        "for up to %.0f s (outage #%d)",
                        self.service, self.stats.last_error, what,
                        self.policy.give_up_after_s, self.stats.outages,
                    )
                elapsed = now - started
                if elapsed >= self.policy.give_up_after_s:
                    self.stats.gave_up += 1
                    self.stats.outage_s += elapsed
                    log.error("%s still unavailable after %.1f s; giving up", self.service,
                              elapsed)
                    raise SinkError(
                        f"could not {what}: {self.service} unavailable for {elapsed:.1f} s "
                        f"({attempt} attempts); last error: {self.stats.last_error}",
                        where=self.service,
                        fix=self.fix,
                    ) from exc
                self.stats.retries += 1
                pause = self.policy.backoff(attempt, self._rnd)
                self.sleep(min(pause, max(0.0, self.policy.give_up_after_s - elapsed)))
                continue
            self.stats.calls += 1
            if started is not None:
                took = self.clock() - started
                self.stats.outage_s += took
                log.warning(
                    "%s available again after an outage of %.1f s (%d retries); outage #%d, "
                    "%.1f s of outages in total",
                    self.service, took, attempt, self.stats.outages, self.stats.outage_s,
                )
            return result
