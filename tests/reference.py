"""Independent reference for the marketplace features: plain SQL (DuckDB) over accepted events.

Written from the spec's feature table, not from the engine: range joins for the
windows ``t - L < e <= t`` and a ROW_NUMBER as-of join for profiles. Tests
compare the runtimes' output with this, value for value.

Use:
    ref = Reference(events_by_topic)          # accepted records per topic
    ref.as_of("user_features", [("u1", t1), ("u2", t2)])   -> list of dicts
    ref.changelog("user_features", horizon_ms)              -> list of dicts
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

_COLUMNS = {
    "viewers": ["event_id", "event_time", "stream_id", "seller_id", "user_id", "device"],
    "chats": [
        "event_id",
        "event_time",
        "stream_id",
        "seller_id",
        "user_id",
        "message_length",
        "flagged",
    ],
    "bids": [
        "event_id",
        "event_time",
        "stream_id",
        "seller_id",
        "auction_id",
        "user_id",
        "amount_cents",
        "currency",
    ],
    "orders": [
        "event_id",
        "event_time",
        "stream_id",
        "seller_id",
        "order_id",
        "user_id",
        "amount_cents",
        "currency",
        "payment_method_id",
        "shipping_country",
    ],
    "profiles": [
        "user_id",
        "updated_at",
        "account_created_at",
        "country",
        "is_verified",
        "risk_tier",
        "_partition",
        "_offset",
    ],
}
_TOPICS = {
    "viewers": "livestream.viewer_joined",
    "chats": "livestream.chat_message",
    "bids": "livestream.bid_placed",
    "orders": "livestream.order_placed",
    "profiles": "users.profile",
}


def _win(select: str, table: str, key: str, window: int) -> str:
    """SQL for an aggregate over ``table``'s events of entity c.k in the window (c.t - L, c.t]."""
    return (
        f"(SELECT {select} FROM {table} x WHERE x.{key} = c.k "
        f"AND x.event_time > c.t - {window} AND x.event_time <= c.t)"
    )


def _null_if_empty(numerator: str) -> str:
    return f"CASE WHEN count(*) = 0 THEN NULL ELSE ({numerator})::DOUBLE / count(*) END"


_NEW_BUYER = f"x.buyer_created IS NOT NULL AND x.event_time - x.buyer_created < {7 * DAY}"

# Per view: entity key, (table, window) pairs whose events and expirations are change
# points, and the SQL computing every feature at candidate time c.t for entity c.k.
_VIEWS: dict[str, dict[str, Any]] = {
    "user_features": {
        "key": "user_id",
        "windows": [("bids", 5 * MIN), ("bids", HOUR), ("orders", DAY), ("viewers", HOUR)],
        "versions": True,
        "features": {
            "user_bid_count_5m": _win("count(*)", "bids", "user_id", 5 * MIN),
            "user_bid_amount_sum_1h": _win(
                "coalesce(sum(x.amount_cents), 0)", "bids", "user_id", HOUR
            ),
            "user_order_count_24h": _win("count(*)", "orders", "user_id", DAY),
            "user_order_amount_avg_24h": _win(
                _null_if_empty("sum(x.amount_cents)"), "orders", "user_id", DAY
            ),
            "user_distinct_streams_1h": _win(
                "count(DISTINCT x.stream_id)", "viewers", "user_id", HOUR
            ),
            "user_distinct_payment_methods_24h": _win(
                "count(DISTINCT x.payment_method_id)", "orders", "user_id", DAY
            ),
            "user_account_created_at": "(SELECT p.account_created_at {asof})",
            "user_is_verified": "(SELECT p.is_verified {asof})",
            "user_risk_tier": "(SELECT p.risk_tier {asof})",
        },
    },
    "seller_features": {
        "key": "seller_id",
        "windows": [("orders", HOUR)],
        "versions": False,
        "features": {
            "seller_gmv_1h": _win("coalesce(sum(x.amount_cents), 0)", "orders", "seller_id", HOUR),
            "seller_order_count_1h": _win("count(*)", "orders", "seller_id", HOUR),
            "seller_unique_buyers_1h": _win(
                "count(DISTINCT x.user_id)", "orders", "seller_id", HOUR
            ),
            "seller_new_account_order_share_1h": _win(
                _null_if_empty(f"sum(CASE WHEN {_NEW_BUYER} THEN 1 ELSE 0 END)"),
                "orders_with_buyer",
                "seller_id",
                HOUR,
            ),
        },
    },
    "stream_features": {
        "key": "stream_id",
        "windows": [("viewers", 5 * MIN), ("chats", MIN), ("bids", MIN), ("chats", 5 * MIN)],
        "versions": False,
        "features": {
            "stream_viewers_5m": _win("count(DISTINCT x.user_id)", "viewers", "stream_id", 5 * MIN),
            "stream_chat_messages_1m": _win("count(*)", "chats", "stream_id", MIN),
            "stream_bids_1m": _win("count(*)", "bids", "stream_id", MIN),
            "stream_flagged_chat_ratio_5m": _win(
                _null_if_empty("sum(CASE WHEN x.flagged THEN 1 ELSE 0 END)"),
                "chats",
                "stream_id",
                5 * MIN,
            ),
        },
    },
}

_ASOF = (
    "FROM profiles p WHERE p.user_id = c.k AND p.updated_at <= c.t "
    "ORDER BY p.updated_at DESC, p._partition DESC, p._offset DESC LIMIT 1"
)


class Reference:
    """DuckDB tables of accepted events and SQL for every feature."""

    def __init__(self, events_by_topic: Mapping[str, Iterable[dict[str, Any]]]) -> None:
        self.db = duckdb.connect()
        for table, columns in _COLUMNS.items():
            rows = list(events_by_topic.get(_TOPICS[table], []))
            frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
            for c in (
                "event_time",
                "updated_at",
                "account_created_at",
                "amount_cents",
                "_partition",
                "_offset",
                "message_length",
            ):
                if c in frame:
                    frame[c] = frame[c].astype("int64")
            if "flagged" in frame or "is_verified" in frame:
                for c in ("flagged", "is_verified"):
                    if c in frame:
                        frame[c] = frame[c].astype("bool")
            self.db.register(f"{table}_df", frame)
            self.db.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_df")
        self.db.execute(
            "CREATE TABLE orders_with_buyer AS SELECT o.*, ("
            "SELECT p.account_created_at FROM profiles p WHERE p.user_id = o.user_id "
            "AND p.updated_at <= o.event_time "
            "ORDER BY p.updated_at DESC, p._partition DESC, p._offset DESC LIMIT 1"
            ") AS buyer_created FROM orders o"
        )

    def _select(self, view: str) -> str:
        spec = _VIEWS[view]
        cols = ", ".join(
            f"{sql.format(asof=_ASOF)} AS {name}" for name, sql in spec["features"].items()
        )
        return f"SELECT c.k AS {spec['key']}, c.t AS event_timestamp, {cols} FROM cand c"

    def feature_names(self, view: str) -> list[str]:
        """Feature names of ``view`` in the reference's order."""
        return list(_VIEWS[view]["features"])

    def as_of(self, view: str, points: Sequence[tuple[Any, int]]) -> list[dict[str, Any]]:
        """Feature values at each (entity key, time ms) point."""
        self.db.execute("CREATE OR REPLACE TEMP TABLE cand (k VARCHAR, t BIGINT)")
        self.db.executemany("INSERT INTO cand VALUES (?, ?)", [(str(k), int(t)) for k, t in points])
        return self._rows(self.db.execute(self._select(view) + " ORDER BY 1, 2"))

    def changelog(self, view: str, horizon_ms: int) -> list[dict[str, Any]]:
        """Every (key, time) at which some value changes, up to the horizon, with the values."""
        spec = _VIEWS[view]
        key = spec["key"]
        parts = []
        for table, window in spec["windows"]:
            parts.append(f"SELECT {key} AS k, event_time AS t FROM {table}")
            parts.append(f"SELECT {key} AS k, event_time + {window} AS t FROM {table}")
        if spec["versions"]:
            parts.append("SELECT user_id AS k, updated_at AS t FROM profiles")
        self.db.execute(
            "CREATE OR REPLACE TEMP TABLE cand AS SELECT DISTINCT k, t FROM ("
            + " UNION ALL ".join(parts)
            + f") WHERE t <= {int(horizon_ms)}"
        )
        rows = self._rows(self.db.execute(self._select(view) + " ORDER BY 1, 2"))
        names = self.feature_names(view)
        out, last_key, last_vals = [], object(), None
        for row in rows:
            vals = tuple(row[n] for n in names)
            if row[key] != last_key:
                last_key, last_vals = row[key], self._empty(view)
            if vals != last_vals:
                out.append(row)
                last_vals = vals
        return out

    def _empty(self, view: str) -> tuple[Any, ...]:
        """Values for an entity with nothing: counts/sums 0, everything else null."""
        empty = []
        for name in self.feature_names(view):
            zero = any(
                s in name
                for s in (
                    "_count_",
                    "_sum_",
                    "_distinct_",
                    "_gmv_",
                    "_unique_",
                    "_viewers_",
                    "_messages_",
                    "_bids_",
                )
            )
            empty.append(0 if zero else None)
        return tuple(empty)

    @staticmethod
    def _rows(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        cols = [d[0] for d in result.description]
        return [dict(zip(cols, r, strict=True)) for r in result.fetchall()]
