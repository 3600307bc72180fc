"""The engine (through the batch runtime) against the independent SQL reference, every feature."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipelines import topics
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.batch import max_event_time, run_pipeline
from tests.reference import DAY, HOUR, MIN, Reference

T0 = 1_700_000_000_000


def random_events(
    seed: int, n: int = 1500, span_ms: int = 3 * HOUR
) -> dict[str, list[dict[str, Any]]]:
    """Dense random traffic over few entities; times on a coarse grid so collisions and
    exact window edges (e and e + L coinciding with other events) happen often."""
    rnd = random.Random(seed)
    users = [f"u{i}" for i in range(8)]
    sellers = [f"s{i}" for i in range(3)]
    streams = [f"st{i}" for i in range(4)]

    def t() -> int:
        return (
            T0 + rnd.randrange(0, span_ms // 15_000) * 15_000
        )  # 15 s grid: divides 1m, 5m, 1h, 24h

    out: dict[str, list[dict[str, Any]]] = {tp: [] for tp in topics.REFERENCE_TOPICS}
    for i in range(n):
        kind = rnd.random()
        base = {
            "event_id": f"e{i}",
            "event_time": t(),
            "stream_id": rnd.choice(streams),
            "seller_id": rnd.choice(sellers),
            "user_id": rnd.choice(users),
        }
        if kind < 0.25:
            out[topics.VIEWER_JOINED].append({**base, "device": rnd.choice(["IOS", "WEB"])})
        elif kind < 0.5:
            out[topics.CHAT_MESSAGE].append(
                {**base, "message_length": rnd.randint(1, 80), "flagged": rnd.random() < 0.2}
            )
        elif kind < 0.75:
            out[topics.BID_PLACED].append(
                {
                    **base,
                    "auction_id": f"a{rnd.randint(0, 9)}",
                    "amount_cents": rnd.randint(1, 50_000),
                    "currency": "USD",
                }
            )
        else:
            out[topics.ORDER_PLACED].append(
                {
                    **base,
                    "order_id": f"o{i}",
                    "amount_cents": rnd.randint(1, 90_000),
                    "currency": "USD",
                    "payment_method_id": f"pm{rnd.randint(0, 5)}",
                    "shipping_country": "US",
                }
            )
    for offset, u in enumerate(users[:6] * 2):  # two versions for most users, none for two
        created = T0 - rnd.choice([1, 3, 6, 8, 30]) * DAY + rnd.randrange(0, DAY)
        out[topics.USER_PROFILE].append(
            {
                "user_id": u,
                "updated_at": t(),
                "account_created_at": created,
                "country": "US",
                "is_verified": rnd.random() < 0.5,
                "risk_tier": rnd.choice(["LOW", "MEDIUM", "HIGH"]),
                "_partition": 0,
                "_offset": offset,
            }
        )
    return out


def _normalise(rows: list[dict[str, Any]], names: list[str], key: str) -> list[tuple[Any, ...]]:
    return [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in rows]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("view", ["user_features", "seller_features", "stream_features"])
def test_changelog_equals_sql_reference(seed: int, view: str) -> None:
    events = random_events(seed)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    ref = Reference(events)
    names = ref.feature_names(view)
    key = PIPELINE.view(view).entity.join_key
    got = run_pipeline(PIPELINE, events, horizon_ms=horizon)[view].rows
    want = ref.changelog(view, horizon)
    assert len(want) > 50  # the data must exercise the view
    assert _normalise(got, names, key) == _normalise(want, names, key)


@pytest.mark.parametrize("view", ["user_features", "seller_features", "stream_features"])
def test_latest_row_at_or_before_t_is_the_as_of_value(view: str) -> None:
    events = random_events(4)
    horizon = max_event_time(PIPELINE, events)
    assert horizon is not None
    rows = run_pipeline(PIPELINE, events, horizon_ms=horizon)[view].rows
    ref = Reference(events)
    names = ref.feature_names(view)
    key = PIPELINE.view(view).entity.join_key
    rnd = random.Random(9)
    keys = sorted({r[key] for r in rows})
    points = [
        (rnd.choice(keys), T0 - MIN + rnd.randrange(0, horizon - T0 + MIN)) for _ in range(400)
    ]
    # also probe exactly at and around change points
    for r in rows[::7]:
        points += [(r[key], r["event_timestamp"]), (r[key], r["event_timestamp"] - 1)]
    empty = Reference({}).as_of(view, [("nobody", T0)])[0]
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r[key], []).append(r)
    expected = {(r[key], r["event_timestamp"]): r for r in ref.as_of(view, points)}
    for k, t in points:
        history = [r for r in by_key.get(k, []) if r["event_timestamp"] <= t]
        got = history[-1] if history else empty
        want = expected[(str(k), t)]
        assert [got[n] for n in names] == [want[n] for n in names], (k, t)
