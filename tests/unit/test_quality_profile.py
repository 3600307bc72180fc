"""Drift measures, reference profiles from rows and from the offline store (Parquet on disk),
and ``livefeat quality profile``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli.quality_cmd import parse_time, quality
from pipelines.errors import ConfigError
from pipelines.jobs.marketplace import seller_features
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.tables import changelog_schema
from quality import measures
from quality.batcher import MicroBatcher
from quality.profile import BatchBounds, Profile, batch_bounds, build_profile, load_profiles

HOUR = 3_600_000
T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def test_quantile_shift_of_a_scaled_and_a_shifted_distribution() -> None:
    ref = np.arange(1, 100_001, dtype=np.float64)
    q = measures.sample_quantiles(ref)
    curve, scale = measures.reference_curve(q), measures.reference_scale(q)
    # every value x 1.2: every quantile moves by 20 % of itself
    assert measures.quantile_shift(ref * 1.2, curve, scale) == pytest.approx(0.2, abs=0.002)
    # + c: every quantile moves by c; the scale is the mean |quantile| over u in [0.01, 0.99]
    expected = 5000 / np.mean(np.linspace(1000, 99_000, 9801))
    assert measures.quantile_shift(ref + 5000, curve, scale) == pytest.approx(expected, rel=0.01)
    # nulls are ignored by quantile_shift and counted by null_share_shift
    with_nulls = np.concatenate([ref, np.full(25_000, np.nan)])
    assert measures.quantile_shift(with_nulls, curve, scale) == pytest.approx(0.0, abs=1e-3)
    assert measures.null_share_shift(with_nulls, 0.0) == pytest.approx(0.2)
    assert measures.quantile_shift(np.array([np.nan]), curve, scale) is None


def test_quantile_shift_of_small_counts_is_smooth() -> None:
    """A count that is 0 or 1: moving 2 % of the rows from 0 to 1 is 2 % of the values' range,
    i.e. 0.02 / mean, not a jump of a whole quantile."""
    rng = np.random.default_rng(0)
    ref = (rng.random(200_000) < 0.3).astype(float)
    q = measures.sample_quantiles(ref)
    batch = (rng.random(200_000) < 0.32).astype(float)
    got = measures.quantile_shift(batch, measures.reference_curve(q), measures.reference_scale(q))
    assert got == pytest.approx(0.02 / 0.3, abs=0.01)


def test_category_shift_is_total_variation() -> None:
    ref = {"LOW": 0.8, "MEDIUM": 0.15, "HIGH": 0.05}
    batch = measures.category_shares(["LOW"] * 6 + ["HIGH"] * 3 + [None])
    assert batch == {"<null>": 0.1, "HIGH": 0.3, "LOW": 0.6}
    # |0.6-0.8| + |0-0.15| + |0.3-0.05| + |0.1-0| = 0.7, halved
    assert measures.category_shift(batch, ref) == pytest.approx(0.35)
    assert measures.category_shift(ref, ref) == 0.0


def test_margin_interpolates_and_extrapolates_like_one_over_sqrt_n() -> None:
    table = [[100.0, 0.2], [400.0, 0.1]]
    assert measures.margin_at(table, 100) == pytest.approx(0.2)
    assert measures.margin_at(table, 200) == pytest.approx(math.sqrt(0.2 * 0.1))
    assert measures.margin_at(table, 1600) == pytest.approx(0.05)
    assert measures.margin_at(table, 25) == pytest.approx(0.4)


def test_noise_margin_covers_reference_like_batches() -> None:
    """Batches drawn from the reference stay under the margin (mean + 4 sd) at their size."""
    rng = np.random.default_rng(1)
    ref = rng.lognormal(8, 1, 100_000)
    q = measures.sample_quantiles(ref)
    curve, scale = measures.reference_curve(q), measures.reference_scale(q)
    table = measures.noise_table("quantile_shift", values=ref, ref_quantiles=q, scale=scale)
    over = sum(
        (measures.quantile_shift(rng.lognormal(8, 1, 2000), curve, scale) or 0.0)
        > measures.margin_at(table, 2000)
        for _ in range(300)
    )
    assert over <= 3


def test_profile_from_rows_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    n = 6000
    amounts = rng.lognormal(7, 0.8, n)
    rows = [
        {
            "user_id": f"u{i}",
            "event_timestamp": T0 + i * 10,
            "created_timestamp": T0 + i * 10,
            "user_order_amount_avg_24h": None if i % 4 == 0 else float(amounts[i]),
            "user_risk_tier": ["LOW", "LOW", "MEDIUM", "HIGH"][i % 4],
            "user_account_created_at": T0 - i,
        }
        for i in range(n)
    ]
    profile = build_profile("user_features", rows, bounds=BatchBounds(1000, 60_000, 500))
    avg = profile.columns["user_order_amount_avg_24h"]
    finite = np.array([r["user_order_amount_avg_24h"] for r in rows if i_not_none(r)])
    assert avg["kind"] == "numeric"
    assert avg["null_share"] == pytest.approx(0.25)
    assert avg["mean"] == pytest.approx(finite.mean())
    assert avg["quantiles"] == pytest.approx(
        np.quantile(finite, measures.GRID, method="inverted_cdf").tolist()
    )
    assert profile.columns["user_risk_tier"]["shares"] == {
        "HIGH": 0.25, "LOW": 0.5, "MEDIUM": 0.25
    }
    # the suite of user_features decides what is measured: no timestamps, no keys
    assert set(profile.columns) == {"user_order_amount_avg_24h", "user_risk_tier"}
    # 60 s of rows, 1000 rows per batch: 6 reference batches give a natural margin
    assert profile.source["natural"]["batches"] == 6
    assert set(avg["natural"]) == {"null_share", "quantile_shift"}
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again.columns == profile.columns


def i_not_none(row: dict[str, Any]) -> bool:
    return row["user_order_amount_avg_24h"] is not None


def test_batch_bounds_cut_like_the_micro_batcher() -> None:
    times = [0, 10, 20, 59_999, 60_000, 60_001, 60_002, 200_000]
    expected = [(0, 3), (3, 6), (6, 7), (7, 8)]  # 3 rows; 3 rows; span; end
    assert batch_bounds(np.array(times), 3, 60_000) == expected
    batcher = MicroBatcher("v", max_rows=3, max_span_ms=60_000)
    cut = [b for t in times for b in batcher.add({"event_timestamp": t})] + batcher.flush()
    assert [len(b.rows) for b in cut] == [end - start for start, end in expected]
    assert len({b.batch_id for b in cut}) == 4


def _seller_rows(hour: int, n: int, gmv: int, created: int) -> list[dict[str, Any]]:
    return [
        {
            "seller_id": f"s{i}",
            "event_timestamp": T0 + hour * HOUR + i * 1000,
            "created_timestamp": created,
            "seller_gmv_1h": gmv + i,
            "seller_order_count_1h": 1 + i % 7,
            "seller_unique_buyers_1h": 1 + i % 5,
            "seller_new_account_order_share_1h": None if i % 10 == 0 else (i % 4) / 4,
        }
        for i in range(n)
    ]


def test_profile_command_reads_the_offline_changelog(tmp_path: Path) -> None:
    """Rows outside [from, to) are ignored; a replayed row (same key and event_timestamp, later
    created_timestamp) counts once, with the value first written."""
    sink = ParquetSink(str(tmp_path / "offline"), writer_id="t")
    schema = changelog_schema(seller_features)
    before = _seller_rows(0, 50, gmv=10**9, created=T0)  # hour 0: outside the range
    inside = _seller_rows(1, 1200, gmv=1000, created=T0 + HOUR)
    replay = [{**r, "seller_gmv_1h": 10**9, "created_timestamp": T0 + 5 * HOUR}
              for r in inside[:300]]
    after = _seller_rows(3, 50, gmv=10**9, created=T0 + 3 * HOUR)  # hour 3: outside
    for rows in (before, inside, replay, after):
        sink.write("features/seller_features", schema, rows)

    out = tmp_path / "profile.json"
    result = CliRunner().invoke(
        quality,
        ["profile", "seller_features", "--from", "2024-05-01T01:00", "--to", "2024-05-01T03:00",
         "--offline-uri", str(tmp_path / "offline"), "--out", str(out),
         "--batch-max-ms", "600000", "--min-rows", "100"],
        obj={},
    )
    assert result.exit_code == 0, result.output
    profile = Profile.from_json(json.loads(out.read_text()))
    assert profile.rows == 1200
    gmv = profile.columns["seller_gmv_1h"]
    assert gmv["max"] == 1000 + 1199 and gmv["min"] == 1000
    assert gmv["mean"] == pytest.approx(np.mean([r["seller_gmv_1h"] for r in inside]))
    share = profile.columns["seller_new_account_order_share_1h"]
    assert share["null_share"] == pytest.approx(0.1)
    assert profile.source["natural"]["batches"] == 2  # 1200 s of rows, 600 s per batch
    assert profile.source["rows_read"] == 1200

    empty = CliRunner().invoke(
        quality,
        ["profile", "seller_features", "--from", "2024-06-01", "--to", "2024-06-02",
         "--offline-uri", str(tmp_path / "offline"), "--out", str(out)],
        obj={},
    )
    assert isinstance(empty.exception, ConfigError)
    assert "no changelog rows in the chosen time range" in str(empty.exception)


def test_parse_time() -> None:
    assert parse_time("2024-05-01T00:00", "--from") == T0
    assert parse_time("2024-05-01T02:00:00+02:00", "--from") == T0
    assert parse_time(str(T0), "--from") == T0


def test_shipped_profiles_cover_every_measured_column() -> None:
    from quality.suites import batch_suites, load_suite_files

    suites = batch_suites(load_suite_files())
    profiles = load_profiles()
    assert set(profiles) == {"user_features", "seller_features", "stream_features",
                             "livestream.order_placed"}
    assert set(profiles) == set(suites)
    for view, profile in profiles.items():
        wanted = suites[view].drift_columns
        assert {c: e["kind"] for c, e in profile.columns.items()} == wanted
