"""Drift injection (``livefeat generate --drift``): parsing, what changes, what does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines import topics
from pipelines.cli.main import cli
from pipelines.errors import ConfigError
from pipelines.generator import GeneratedRecord, Generation, GeneratorOptions
from pipelines.generator.drift import FOREVER_MS, Drift, parse_drift
from pipelines.generator.options import default_start_ms

SEED = 4
START = default_start_ms(SEED)


def _records(drifts: tuple[Drift, ...]) -> tuple[Generation, list[GeneratedRecord]]:
    generation = Generation(GeneratorOptions(seed=SEED, events=4_000, bad_invalid=0.01,
                                             late=0.01, drifts=drifts))
    return generation, list(generation.records())


def test_specs_parse_absolute_relative_and_open_ended_periods() -> None:
    d = parse_drift("amount_cents=0.5@2024-05-01T00:00:00Z..1714521660000", START)
    assert (d.subject, d.field, d.factor) == (None, "amount_cents", 0.5)
    assert (d.start_ms, d.end_ms) == (1_714_521_600_000, 1_714_521_660_000)
    d = parse_drift(f"{topics.ORDER_PLACED}.amount_cents=1.2@+90s..", START)
    assert (d.subject, d.start_ms, d.end_ms) == (topics.ORDER_PLACED, START + 90_000, FOREVER_MS)
    assert parse_drift("amount_cents=2@+1.5m..+2h", 0).end_ms == 7_200_000


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("amount_cents@+1m..", "expected"),
        ("amount_cents=x@+1m..", "not a number"),
        ("amount_cents=-1@+1m..", "positive"),
        ("amount_cents=2@+5m..+1m", "empty"),
        ("amount_cents=2@yesterday..", "not ISO-8601"),
        ("livestream.nope.amount_cents=2@+1m..", "not a reference topic"),
    ],
)
def test_bad_specs_name_the_option_and_the_fix(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_drift(spec, START)
    assert problem in str(err.value) and "--drift" in str(err.value) and err.value.fix


def test_a_drift_must_name_a_number_field() -> None:
    for spec in ("currency=2@+1m..", f"{topics.BID_PLACED}.event_time=2@+1m.."):
        with pytest.raises(ConfigError, match="no numeric field"):
            Generation(GeneratorOptions(seed=SEED, events=10, drifts=(parse_drift(spec, START),)))


def test_drift_changes_only_the_field_in_the_period_and_is_deterministic() -> None:
    drift = parse_drift(f"{topics.ORDER_PLACED}.amount_cents=1.2@+20s..+2m", START)
    _, plain = _records(())
    generation, drifted = _records((drift,))
    _, again = _records((drift,))
    assert [r.value for r in drifted] == [r.value for r in again]
    changed = 0
    for a, b in zip(plain, drifted, strict=True):
        assert (a.topic, a.partition, a.key, a.timestamp_ms, a.kind) == (
            b.topic, b.partition, b.key, b.timestamp_ms, b.kind)
        ra, rb = a.record, b.record
        if ra is None or ra == rb:
            continue
        changed += 1
        assert a.subject == topics.ORDER_PLACED
        assert drift.start_ms <= ra["event_time"] < drift.end_ms
        assert rb == {**ra, "amount_cents": round(ra["amount_cents"] * 1.2)}
    valid_in_period = len([
        r for r in plain
        if r.kind in ("valid", "late", "out_of_order")
        and r.subject == topics.ORDER_PLACED
        and drift.start_ms <= r.timestamp_ms < drift.end_ms
    ])
    assert generation.drifted == [valid_in_period] and valid_in_period > 5
    assert changed >= valid_in_period


def test_cli_records_drifts_in_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    result = CliRunner().invoke(cli, [
        "generate", "--dry-run", "--quiet", "--seed", str(SEED), "--events", "3000",
        "--manifest", str(manifest),
        "--drift", f"{topics.ORDER_PLACED}.amount_cents=1.2@+20s..+60s",
        "--drift", "amount_cents=0.9@+60s..",
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(manifest.read_text())
    first, second = data["drifted"]
    assert first["subject"] == topics.ORDER_PLACED and first["start_ms"] == START + 20_000
    assert second["subject"] is None and second["end_ms"] is None
    assert first["events"] > 0 and second["events"] > first["events"]  # bids drift too
    assert data["options"]["drifts"] == [
        {k: v for k, v in d.items() if k != "events"} for d in (first, second)]
