"""How large a batch the drift gate needs to see +20 % on money amounts of the reference traffic.

The quality gate flags a numeric column when its ``quantile_shift`` exceeds the threshold
(5 %) and the noise margins (docs/quality.md, "When a measure counts as drift"). Whether a
given shift can be told from noise at all is a question of batch size, and this script
answers it for the amounts of the reference marketplace, with the gate's own measure and
margin functions and no Flink:

1. simulate ``--hours`` of stationary reference traffic (``--steady``, no fraud) and keep
   the ``amount_cents`` of every OrderPlaced and BidPlaced with its event time;
2. build the reference (quantiles, scale, sampling margin by resampling) from the first
   half, exactly as ``livefeat quality profile`` does;
3. for each batch size n, draw batches from the *second* half (so the batch never
   compares with itself), score them unchanged, x1.03 (noise the gate must accept) and
   x1.2 (the drift it should flag), and report how often each crosses the gate's limit;
4. cut the second half into consecutive batches of 1, 10 and 60 minutes of event time,
   as the gate would, and report their sizes and measures.

Run:  .venv/bin/python bench/drift_power.py [--hours 12] [--shows 20] [--draws 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# the repository first: this directory holds a bench/quality.py that would shadow quality/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.generator.entities import MarketParams
from pipelines.generator.model import Marketplace
from pipelines.machine import machine
from pipelines.topics import BID_PLACED, ORDER_PLACED
from quality.measures import (
    margin_at,
    noise_table,
    quantile_shift,
    reference_curve,
    reference_scale,
    sample_quantiles,
)

THRESHOLD = 0.05
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE_MS = 60_000
SIZES = (100, 300, 1_000, 3_000, 10_000)


def simulate(hours: float, shows: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Event times and amounts of orders and bids in ``hours`` of steady traffic."""
    market = Marketplace(seed, START_MS, shows, 0.0, MarketParams(steady=True))
    kept: dict[str, tuple[list[int], list[float]]] = {ORDER_PLACED: ([], []),
                                                       BID_PLACED: ([], [])}
    for event in market.events(until_ms=START_MS + int(hours * 60 * MINUTE_MS)):
        if event.subject in kept:
            times, amounts = kept[event.subject]
            times.append(event.time_ms)
            amounts.append(float(event.record["amount_cents"]))
    return {s: (np.asarray(t, dtype=np.int64), np.asarray(a)) for s, (t, a) in kept.items()}


class Reference:
    """A profile entry for one amount column, built the way ``quality profile`` builds it."""

    def __init__(self, values: np.ndarray) -> None:
        quantiles = sample_quantiles(values)
        self.curve = reference_curve(quantiles)
        self.scale = reference_scale(quantiles)
        self.noise = noise_table("quantile_shift", values=values, ref_quantiles=quantiles,
                                 scale=self.scale)

    def limit(self, n: int) -> float:
        """What a batch of ``n`` values must exceed to count as drift (no natural margin)."""
        return max(THRESHOLD, margin_at(self.noise, n))

    def shift(self, batch: np.ndarray) -> float:
        value = quantile_shift(batch, self.curve, self.scale)
        return 0.0 if value is None else value


def power_table(ref: Reference, pool: np.ndarray, draws: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = [f"  {'n':>7} {'limit':>6} {'x1.00 med':>9} {'x1.03 flagged':>14} "
             f"{'x1.2 med':>8} {'x1.2 flagged':>13}"]
    for n in SIZES:
        limit = ref.limit(n)
        batches = [rng.choice(pool, n) for _ in range(draws)]
        same = [ref.shift(b) for b in batches]
        noise = [ref.shift(b * 1.03) for b in batches]
        drift = [ref.shift(b * 1.2) for b in batches]
        lines.append(f"  {n:>7,} {limit:>6.3f} {np.median(same):>9.3f} "
                     f"{_share(noise, limit):>14} {np.median(drift):>8.3f} "
                     f"{_share(drift, limit):>13}")
    return lines


def _share(values: Sequence[float], limit: float) -> str:
    return f"{100.0 * sum(v > limit for v in values) / len(values):.1f} %"


def natural_batches(ref: Reference, times: np.ndarray, amounts: np.ndarray,
                    minutes: int) -> str:
    """Consecutive event-time batches of the held-out half, as the gate cuts them."""
    span = minutes * MINUTE_MS
    keys = (times - times[0]) // span
    sizes, shifts, flagged_same, flagged_drift = [], [], 0, 0
    for key in np.unique(keys)[:-1]:  # the last batch is partial
        batch = amounts[keys == key]
        limit = ref.limit(batch.size)
        sizes.append(batch.size)
        shifts.append(ref.shift(batch))
        flagged_same += ref.shift(batch) > limit
        flagged_drift += ref.shift(batch * 1.2) > limit
    count = len(sizes)
    return (f"  {minutes:>3}-minute batches: {count} batches of {int(np.median(sizes)):,} "
            f"values (median); measure median {np.median(shifts):.3f}; flagged unchanged "
            f"{flagged_same}/{count}, x1.2 {flagged_drift}/{count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=12.0,
                        help="hours of traffic; the first half is the reference")
    parser.add_argument("--shows", type=float, default=20.0, help="shows on air (scale)")
    parser.add_argument("--draws", type=int, default=400, help="batches per size")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    started = time.perf_counter()
    data = simulate(args.hours, args.shows, args.seed)
    print(f"simulated {args.hours:g} h of steady traffic, {args.shows:g} shows, "
          f"in {time.perf_counter() - started:.1f} s; threshold {THRESHOLD:.0%}")
    half_ms = START_MS + int(args.hours * 30 * MINUTE_MS)
    for subject, (times, amounts) in data.items():
        first, second = times < half_ms, times >= half_ms
        ref = Reference(amounts[first])
        per_minute = amounts.size / (args.hours * 60)
        cv = float(amounts.std() / amounts.mean())
        print(f"\n{subject}.amount_cents: {per_minute:.1f} a minute, "
              f"coefficient of variation {cv:.2f}")
        print("  resampled batches of the held-out half (share of batches over the limit):")
        for line in power_table(ref, amounts[second], args.draws, args.seed):
            print(line)
        for minutes in (1, 10, 60):
            print(natural_batches(ref, times[second], amounts[second], minutes))


if __name__ == "__main__":
    main()
