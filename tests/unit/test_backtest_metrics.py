"""Figures on a tiny example worked out by hand; the labels file; the outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.backtest import Rule, compile_rules
from pipelines.backtest.labelset import normalize_labels, read_labels
from pipelines.backtest.report import format_table, write_outputs
from pipelines.backtest.run import BacktestResult, run_backtest
from pipelines.errors import ConfigError
from pipelines.jobs.marketplace import PIPELINE
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema

D0 = 1_699_920_000_000  # 2023-11-14T00:00:00Z
H, M, DAY = 3_600_000, 60_000, 86_400_000
KEYS = ["user_id", "seller_id", "stream_id"]


def seller(key: str, t: int, gmv: int) -> dict[str, Any]:
    return {
        "seller_id": key,
        "event_timestamp": t,
        "created_timestamp": t,
        "seller_gmv_1h": gmv,
        "seller_order_count_1h": 1,
        "seller_unique_buyers_1h": 1,
        "seller_new_account_order_share_1h": None,
    }


# (seller, time, fraud) -> what the rule `seller_gmv_1h >= 500` sees and decides:
LABELLED = [
    ("s1", D0 + H + 5 * M, True),  # gmv 600: alert, fraud      -> tp
    ("s1", D0 + 4 * H, True),  # gmv 100: no alert, fraud   -> fn
    ("s2", D0 + 2 * H + M, False),  # gmv 50: no alert, honest   -> tn
    ("s1", D0 + 2 * H, False),  # gmv 600: alert, honest     -> fp
    ("s1", D0 + DAY + 2 * H, True),  # gmv 800: alert, fraud     -> tp (day 2)
    ("s3", D0 + DAY + 3 * H, False),  # no history: gmv 0        -> tn (day 2)
    ("s2", D0 + DAY + 4 * H, True),  # gmv 50: no alert, fraud   -> fn (day 2)
]


@pytest.fixture
def result(tmp_path: Path) -> BacktestResult:
    rows = [
        seller("s1", D0 + H, 600),
        seller("s1", D0 + 3 * H, 100),
        seller("s1", D0 + DAY + H, 800),
        seller("s2", D0 + 2 * H, 50),
    ]
    ParquetSink(str(tmp_path / "store")).write(
        "features/seller_features", changelog_schema(PIPELINE.view("seller_features")), rows
    )
    rules = compile_rules(
        [
            Rule("big_seller", "seller_gmv_1h >= 500", "GMV of 5 dollars or more in an hour"),
            Rule("never", "seller_order_count_1h > 100"),
        ],
        PIPELINE,
        "tiny_rules.py",
    )
    labels = normalize_labels(
        pa.table(
            {
                "seller_id": [s for s, _, _ in LABELLED],
                "event_time": [t for _, t, _ in LABELLED],
                "label": ["chargeback" if f else "ok" for _, _, f in LABELLED],
            }
        ),
        KEYS,
        "tiny.csv",
    )
    return run_backtest(rules, labels, str(tmp_path / "store"), from_ms=D0, to_ms=D0 + 2 * DAY)


def test_confusion_matrix_precision_recall_volume(result: BacktestResult) -> None:
    big, never = result.metrics
    assert (big.tp, big.fp, big.fn, big.tn) == (2, 1, 2, 2)
    assert big.precision == pytest.approx(2 / 3) and big.recall == 0.5
    assert big.labelled == 7 and big.positives == 4 and big.alerts == 3
    assert big.days == 2.0 and big.alerts_per_day == 1.5
    assert (never.alerts, never.tp, never.fn, never.tn) == (0, 0, 4, 3)
    assert never.precision is None and never.recall == 0.0 and never.alerts_per_day == 0.0


def test_daily_series(result: BacktestResult) -> None:
    days = [
        (d.day, d.labelled, d.positives, d.alerts, d.tp, d.precision)
        for d in result.daily
        if d.rule == "big_seller"
    ]
    assert days == [("2023-11-14", 4, 2, 2, 1, 0.5), ("2023-11-15", 3, 2, 1, 1, 1.0)]


def test_open_period_spans_the_labels(tmp_path: Path, result: BacktestResult) -> None:
    labels = result.labels
    rerun = run_backtest(result.ruleset, labels, str(tmp_path / "store"))
    first, last = D0 + H + 5 * M, D0 + DAY + 4 * H
    assert rerun.metrics[0].days == (last + 1 - first) / DAY
    assert [m.as_dict() | {"days": 0, "alerts_per_day": 0} for m in rerun.metrics] == [
        m.as_dict() | {"days": 0, "alerts_per_day": 0} for m in result.metrics
    ]


def test_outputs(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path / "out")
    rows = pq.read_table(paths["rows.parquet"]).to_pylist()
    assert [r["alert_big_seller"] for r in rows] == [True, False, False, True, True, False, False]
    assert [r["seller_gmv_1h"] for r in rows] == [600, 100, 50, 600, 800, 0, 50]
    document = json.loads(paths["metrics.json"].read_text())
    assert document["labelled"] == 7 and document["positives"] == 4
    assert document["rules_detail"][0]["tp"] == 2
    assert paths["metrics.csv"].read_text().splitlines()[1].startswith("big_seller,3,1.5,2,1,2,2,")
    assert len(paths["daily.csv"].read_text().splitlines()) == 1 + 2 * 2
    html = paths["report.html"].read_text()
    assert html.count("<svg") == 2 and "big_seller" in html
    assert "<script" not in html and 'src="' not in html and 'href="' not in html  # offline
    table = format_table(result)
    assert "7 labelled events, 4 fraud" in table
    line = next(row for row in table.splitlines() if row.startswith("big_seller"))
    assert line.split() == ["big_seller", "3", "1.5", "2", "1", "2", "2", "0.667", "0.500"]


def test_labels_csv_with_iso_times_and_words(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "user_id,event_time,label,order_id\n"
        "007,2024-05-01T12:00:00Z,Chargeback,o1\n"
        "008,2024-05-01 13:30:00.250,ok,o2\n"
        "009,1714572000000,not,o3\n"
        "010,2024-05-01T16:00:00+02:00,FRAUD,o4\n"
    )
    labels = read_labels(path, KEYS)
    assert labels.keys == ("user_id",)
    assert labels.table.column("user_id").to_pylist() == ["007", "008", "009", "010"]
    assert labels.times.tolist() == [1714564800000, 1714570200250, 1714572000000, 1714572000000]
    assert labels.positives.tolist() == [True, False, False, True]
    assert labels.table.column("order_id").to_pylist() == ["o1", "o2", "o3", "o4"]
    window = read_labels(path, KEYS, from_ms=1714570200250, to_ms=1714572000000)
    assert window.table.column("order_id").to_pylist() == ["o2"]


def test_labels_parquet_timestamps_and_ints(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table(
            {
                "stream_id": ["a", "b"],
                "event_time": pa.array([1_000_000, 2_000_000], pa.timestamp("us")),
                "label": [1, 0],
            }
        ),
        path,
    )
    labels = read_labels(path, KEYS)
    assert labels.times.tolist() == [1_000, 2_000] and labels.positives.tolist() == [True, False]


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "user_id,event_time,label\nu,2024-05-01,maybe\nu,2024-05-01,ok\n",
            "1 rows have an unreadable label ['maybe'] (rows 1)",
        ),
        (
            "user_id,event_time,label\nu,2024-05-01,ok\nu,yesterday,ok\nu,,ok\n",
            "2 rows have no readable event_time (rows 2, 3)",
        ),
        ("user_id,label\nu,ok\n", "no 'event_time' column"),
        ("account,event_time,label\nu,1,ok\n", "no entity key column"),
        ("user_id,event_time,label\nu,1,ok\n", "no labelled event in the chosen period"),
    ],
)
def test_bad_labels_fail_naming_rows(tmp_path: Path, csv: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    with pytest.raises(ConfigError) as info:
        read_labels(path, KEYS, from_ms=0 if "period" not in message else 10)
    assert message in str(info.value) and str(path) in str(info.value)


def test_labels_must_carry_the_keys_the_rules_need(tmp_path: Path) -> None:
    rules = compile_rules([Rule("streamy", "stream_bids_1m > 3")], PIPELINE, "r.py")
    labels = normalize_labels(
        pa.table({"user_id": ["u"], "event_time": [1], "label": [True]}), KEYS, "l.csv"
    )
    with pytest.raises(ConfigError, match=r"rule 'streamy' reads stream_bids_1m .* no stream_id"):
        run_backtest(rules, labels, str(tmp_path / "no-store"))
