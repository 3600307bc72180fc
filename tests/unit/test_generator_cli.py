"""``livefeat generate --dry-run``: options reach the generator, the manifest tells the truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.errors import ConfigError
from pipelines.generator import GeneratorOptions, generate_events
from pipelines.generator.manifest import MANIFEST_FORMAT, read_manifest

ARGS = ["--seed", "21", "--events", "4000", "--out-of-order", "0.04", "--late", "0.02",
        "--bad-undecodable", "0.01", "--bad-unknown-fingerprint", "0.01",
        "--bad-invalid", "0.02", "--shows", "10", "--fraud-rings-per-hour", "60"]


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIVEFEAT_CONFIG", raising=False)


def test_dry_run_writes_a_truthful_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["generate", *ARGS, "--dry-run", "--manifest", str(path)])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    manifest = read_manifest(path)
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["publish"] is None
    assert manifest["seed"] == 21 and manifest["records"] == 4000
    assert manifest["options"]["late"] == 0.02 and manifest["options"]["bound_ms"] == 5000

    # Recount the same run straight from the generator.
    records = list(generate_events(GeneratorOptions(
        seed=21, events=4000, out_of_order=0.04, late=0.02, bad_undecodable=0.01,
        bad_unknown_fingerprint=0.01, bad_invalid=0.02, shows=10, fraud_rings_per_hour=60)))
    by_topic_kind = Counter((r.topic, r.kind) for r in records)
    for topic, kinds in manifest["counts"]["by_topic"].items():
        for kind, n in kinds.items():
            assert n == by_topic_kind[(topic, kind)], (topic, kind)
    reasons = Counter((r.kind, r.reason) for r in records if r.reason)
    assert {(k, r): n for k, v in manifest["counts"]["by_reason"].items()
            for r, n in v.items()} == dict(reasons)
    interesting = [r for r in records if r.kind != "valid"]
    listed = manifest["records_of_interest"]
    assert [(e["seq"], e["topic"], e["partition"], e["kind"]) for e in listed] == [
        (r.seq, r.topic, r.partition, r.kind) for r in interesting]
    assert all(e["offset"] is None for e in listed)
    assert manifest["start_time_ms"] <= min(r.timestamp_ms for r in records)
    assert manifest["end_time_ms"] == max(r.timestamp_ms for r in records)
    assert manifest["fraud_user_ids"]
    profiles = {r.record["user_id"] for r in records
                if r.subject == "users.profile" and r.kind != "invalid" and r.record}
    assert set(manifest["fraud_user_ids"]) <= profiles


def test_default_manifest_goes_under_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "livefeat.yaml").write_text("stack:\n  state_dir: state\n")
    result = CliRunner().invoke(cli, ["generate", "--events", "100", "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    manifest = json.loads((tmp_path / "state" / "generate-manifest.json").read_text())
    assert manifest["records"] == 100


def test_events_and_duration_are_exclusive() -> None:
    result = CliRunner().invoke(cli, ["generate", "--events", "10", "--duration", "5",
                                      "--dry-run"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_fraction_out_of_range_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["generate", "--late", "1.5", "--dry-run"])
    assert result.exit_code == 2
    assert "--late" in result.output


def test_late_delay_inside_the_bound_is_a_config_error() -> None:
    result = CliRunner().invoke(cli, ["generate", "--late-delay", "2", "10", "--dry-run"])
    assert isinstance(result.exception, ConfigError)
    assert "late" in str(result.exception)
