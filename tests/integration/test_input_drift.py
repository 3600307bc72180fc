"""Input drift: order amounts raised 20 % for one batch of generated traffic are flagged there.

Generated traffic, decoded with the production codec and judged by the real gate (Great
Expectations, the shipped ``events.livestream.order_placed`` suite), batch by batch as
the stream cuts them, against a reference profile built from a *different* seed:

* the reference: 3 hours of steady traffic (seed 21, ``--steady --shows 80``, no fraud),
  profiled like ``livefeat quality profile livestream.order_placed`` profiles the event
  log (the gate's batches: tumbling 15-minute windows, so the natural margin is measured
  too);
* the run judged: 100 minutes of the same marketplace with another seed (22), order amounts
  x1.2 over exactly its 3rd full window and x1.03 over its 5th (noise within the 5 %
  threshold).

Expected: every full window judged; the 3rd, and only the 3rd, flagged (``amount_cents``,
``quantile_shift``), with the action ``warn``; nothing else drifts.

Why this scale: ``bench/drift_power.py`` shows a +20 % shift of the heavy-tailed order
amounts (coefficient of variation 1.1) is told from sampling noise only in batches of
about 1,000 orders or more; the reference marketplace (20 shows) makes 27 orders a minute,
so ten of its minutes hold 270. Eighty shows for 15 minutes give about 1,600.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.generator import Generation, GeneratorOptions
from pipelines.generator.drift import Drift
from pipelines.topics import ORDER_PLACED
from quality.batcher import MicroBatch, MicroBatcher
from quality.config import GateConfig, ViewPolicy
from quality.profile import BatchBounds, build_profile
from quality.suites import QUALITY_DIR, event_suite_name, load_suite_files
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore

SHOWS = 80
SPAN_MS = 15 * 60_000
MIN_ROWS = 500
DRIFTED, NOISE = 2, 4  # 0-based batch indexes: the 3rd and the 5th
TOPIC = ORDER_PLACED


def orders(seed: int, minutes: int, drifts: tuple[Drift, ...] = ()) -> list[dict[str, Any]]:
    """Decoded OrderPlaced records of a steady generated run, in publish (= event-time) order,
    event times as epoch ms (as the event log and the stream hold them)."""
    codec = SingleObjectCodec(SchemaStore.load())
    options = GeneratorOptions(seed=seed, duration_s=minutes * 60, shows=SHOWS, steady=True,
                               fraud_rings_per_hour=0, drifts=drifts)
    decoder = codec.decoder(TOPIC)
    out = []
    for rec in Generation(options, codec).records():
        if rec.topic == TOPIC:
            row = dict(decoder.decode(rec.value, topic=TOPIC))
            out.append({**row, "event_time": _ms(row["event_time"])})
    return out


def batches(rows: list[dict[str, Any]]) -> list[MicroBatch]:
    """The full windows the stream's gate cuts (tumbling, the suite's event-time field)."""
    batcher = MicroBatcher(TOPIC, max_rows=100_000, max_span_ms=SPAN_MS, time_field="event_time",
                           aligned=True)
    out = [b for row in rows for b in batcher.add(row)] + batcher.flush()
    return out[1:-1]  # the first and the last window are partial


def _ms(value: Any) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    from quality.gate import QualityGate

    base = tmp_path_factory.mktemp("input-drift")
    shutil.copytree(QUALITY_DIR / "suites", base / "suites")
    suite = load_suite_files(base / "suites")[event_suite_name(TOPIC)]
    profile = build_profile(TOPIC, orders(21, 180), kinds=suite.drift_columns,
                            bounds=BatchBounds(100_000, SPAN_MS, MIN_ROWS, aligned=True),
                            time_field="event_time")
    profile.save(base / "profiles" / f"{TOPIC}.json")

    start = GeneratorOptions(seed=22).start
    first_full = start - start % SPAN_MS + SPAN_MS

    def window(k: int) -> tuple[int, int]:
        return first_full + k * SPAN_MS, first_full + (k + 1) * SPAN_MS

    drifts = (Drift("amount_cents", 1.2, *window(DRIFTED), subject=TOPIC),
              Drift("amount_cents", 1.03, *window(NOISE), subject=TOPIC))
    judged = batches(orders(22, 100, drifts))
    assert [b.first_ms for b in judged] == [window(k)[0] for k in range(len(judged))]

    config = GateConfig(results_dir=base / "results",
                        views={TOPIC: ViewPolicy(batch_max_ms=SPAN_MS, min_rows=MIN_ROWS)})
    gate = QualityGate.load(base, config)
    yield [gate.check_features(TOPIC, b.rows, b.batch_id) for b in judged]


def test_every_full_batch_is_judged(verdicts: list[Any]) -> None:
    assert len(verdicts) >= NOISE + 1
    assert all(v.judged for v in verdicts), [v.note for v in verdicts]
    assert all(v.rows >= 1_000 for v in verdicts), [v.rows for v in verdicts]


def test_the_drifted_batch_and_only_it_is_flagged(verdicts: list[Any]) -> None:
    flagged = [i for i, v in enumerate(verdicts) if v.action != "pass"]
    measures = [v.columns["amount_cents"].measures["quantile_shift"] for v in verdicts]
    detail = [(round(m.value, 3), round(m.limit, 3)) for m in measures]
    assert flagged == [DRIFTED], detail
    drifted = verdicts[DRIFTED]
    assert drifted.action == "warn"  # events are never held: recorded and alerted
    assert drifted.columns["amount_cents"].drifted
    assert not drifted.failures
    assert measures[DRIFTED].value > measures[DRIFTED].limit
    assert measures[NOISE].value <= measures[NOISE].limit  # x1.03: within the threshold
