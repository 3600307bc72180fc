"""Compatibility modes over version histories, and the mode configuration file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError
from schemas.check import check_repository
from schemas.impact import FieldUsage
from schemas.modes import Mode, load_mode_config, parse_mode_config

A = {"name": "a", "type": "string"}
B = {"name": "b", "type": "string"}
B_DEFAULT = {"name": "b", "type": "string", "default": "x"}
A_INT = {"name": "a", "type": "int"}
A_LONG = {"name": "a", "type": "long"}


def bid(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Bid", "namespace": "t", "fields": list(fields)}


def kind(*symbols: str) -> dict[str, Any]:
    return bid({"name": "k", "type": {"type": "enum", "name": "K", "symbols": list(symbols)}})


def write_repo(root: Path, versions: list[Any], mode: Mode | None = None,
               subject: str = "shop.bids") -> None:
    folder = root / "schemas" / "avro" / subject
    folder.mkdir(parents=True, exist_ok=True)
    for n, schema in enumerate(versions, 1):
        (folder / f"v{n}.avsc").write_text(json.dumps(schema, indent=2))
    if mode is not None:
        (root / "schemas" / "compatibility.yaml").write_text(
            f"default: BACKWARD\nsubjects:\n  {subject}: {mode.value}\n")


def no_usage() -> FieldUsage:
    return FieldUsage({}, None)


# (id, mode, versions, expected (direction-agnostic) rule ids of the problems)
HISTORIES = [
    ("BACKWARD: add optional field with default", Mode.BACKWARD, [bid(A), bid(A, B_DEFAULT)], []),
    ("BACKWARD: add field without default", Mode.BACKWARD, [bid(A), bid(A, B)],
     ["record.missing_default"]),
    ("BACKWARD: remove field (writer-only fields are skipped)", Mode.BACKWARD,
     [bid(A, B), bid(A)], []),
    ("BACKWARD: widen int to long", Mode.BACKWARD, [bid(A_INT), bid(A_LONG)], []),
    ("BACKWARD: add enum symbol", Mode.BACKWARD, [kind("X"), kind("X", "Y")], []),
    ("FORWARD: add field without default (old reader skips it)", Mode.FORWARD,
     [bid(A), bid(A, B)], []),
    ("FORWARD: remove field the old reader has no default for", Mode.FORWARD,
     [bid(A, B), bid(A)], ["record.missing_default"]),
    ("FORWARD: remove field the old reader has a default for", Mode.FORWARD,
     [bid(A, B_DEFAULT), bid(A)], []),
    ("FORWARD: widen int to long (old reader cannot narrow)", Mode.FORWARD,
     [bid(A_INT), bid(A_LONG)], ["type.mismatch"]),
    ("FORWARD: add enum symbol the old reader lacks", Mode.FORWARD,
     [kind("X"), kind("X", "Y")], ["enum.missing_symbol"]),
    ("FULL: add optional field with default", Mode.FULL, [bid(A), bid(A, B_DEFAULT)], []),
    ("FULL: add field without default fails backward", Mode.FULL, [bid(A), bid(A, B)],
     ["record.missing_default"]),
    ("FULL: remove field without default fails forward", Mode.FULL, [bid(A, B), bid(A)],
     ["record.missing_default"]),
    ("NONE: any change passes", Mode.NONE, [bid(A), bid(A_INT, B)], []),
    ("BACKWARD: v3 reads v2 but not v1 (only v2 checked)", Mode.BACKWARD,
     [bid(A), bid(A, B_DEFAULT), bid(A, B)], []),
    ("BACKWARD_TRANSITIVE: v3 reads v2 but not v1", Mode.BACKWARD_TRANSITIVE,
     [bid(A), bid(A, B_DEFAULT), bid(A, B)], ["record.missing_default"]),
    ("FORWARD: v3 readable by v2 but not by v1 (only v2 checked)", Mode.FORWARD,
     [bid(A, B), bid(A, B_DEFAULT), bid(A)], []),
    ("FORWARD_TRANSITIVE: v3 readable by v2 but not by v1", Mode.FORWARD_TRANSITIVE,
     [bid(A, B), bid(A, B_DEFAULT), bid(A)], ["record.missing_default"]),
    ("FULL: v3 both ways with v2, not with v1", Mode.FULL,
     [bid(A), bid(A, B_DEFAULT), bid(A, B)], []),
    ("FULL_TRANSITIVE: v3 both ways with v2, not with v1", Mode.FULL_TRANSITIVE,
     [bid(A), bid(A, B_DEFAULT), bid(A, B)], ["record.missing_default"]),
]


@pytest.mark.parametrize(("mode", "versions", "rules"), [h[1:] for h in HISTORIES],
                         ids=[h[0] for h in HISTORIES])
def test_mode_over_history(tmp_path: Path, mode: Mode, versions: list[Any],
                           rules: list[str]) -> None:
    write_repo(tmp_path, versions, mode)
    report = check_repository(tmp_path, usage_provider=no_usage)
    (sub,) = report.subjects
    assert sub.mode is mode
    assert [p.rule for p in sub.problems] == rules
    assert report.ok is (not rules)
    for problem in sub.problems:
        # Locations point into the new version, the file a person edits.
        assert problem.location.startswith(str(tmp_path / "schemas/avro/shop.bids" /
                                               f"v{len(versions)}.avsc"))
        assert mode.value in problem.message


def test_transitive_compares_with_every_earlier_version(tmp_path: Path) -> None:
    write_repo(tmp_path, [bid(A), bid(A, B_DEFAULT), bid(A, B)], Mode.FULL_TRANSITIVE)
    (sub,) = check_repository(tmp_path, usage_provider=no_usage).subjects
    pairs = {(c.direction, c.reader, c.writer) for c in sub.comparisons}
    assert pairs == {("backward", "v3", "v1"), ("forward", "v1", "v3"),
                     ("backward", "v3", "v2"), ("forward", "v2", "v3")}
    failing = [(c.direction, c.reader, c.writer) for c in sub.comparisons
               if not c.result.compatible]
    assert failing == [("backward", "v3", "v1")]


def test_non_transitive_compares_with_previous_only(tmp_path: Path) -> None:
    write_repo(tmp_path, [bid(A), bid(A, B_DEFAULT), bid(A, B)], Mode.BACKWARD)
    (sub,) = check_repository(tmp_path, usage_provider=no_usage).subjects
    assert [(c.direction, c.reader, c.writer) for c in sub.comparisons] == [
        ("backward", "v3", "v2")]


def test_forward_fix_speaks_of_the_writer(tmp_path: Path) -> None:
    write_repo(tmp_path, [bid(A, B), bid(A)], Mode.FORWARD)
    (problem,) = check_repository(tmp_path, usage_provider=no_usage).problems
    assert "consumers still reading with v1" in problem.message
    assert problem.fix == "keep writing field `b` (the reader has no default for it)"


def test_default_mode_without_config_is_backward(tmp_path: Path) -> None:
    write_repo(tmp_path, [bid(A), bid(A, B)])
    report = check_repository(tmp_path, usage_provider=no_usage)
    assert report.subjects[0].mode is Mode.BACKWARD
    assert [p.rule for p in report.problems] == ["record.missing_default"]


@pytest.mark.parametrize(("mode", "directions", "transitive"), [
    (Mode.BACKWARD, ("backward",), False), (Mode.BACKWARD_TRANSITIVE, ("backward",), True),
    (Mode.FORWARD, ("forward",), False), (Mode.FORWARD_TRANSITIVE, ("forward",), True),
    (Mode.FULL, ("backward", "forward"), False),
    (Mode.FULL_TRANSITIVE, ("backward", "forward"), True), (Mode.NONE, (), False),
])
def test_mode_properties(mode: Mode, directions: tuple[str, ...], transitive: bool) -> None:
    assert mode.directions == directions
    assert mode.transitive is transitive
    expected = [] if mode is Mode.NONE else ([1, 2, 3] if transitive else [3])
    assert mode.baseline([1, 2, 3]) == expected


def test_shipped_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "schemas"
    subjects = [p.name for p in (root / "avro").iterdir() if p.is_dir()]
    config = load_mode_config(root / "compatibility.yaml", subjects)
    assert config.default is Mode.BACKWARD
    assert config.mode_for("users.profile") is Mode.BACKWARD_TRANSITIVE


@pytest.mark.parametrize(("text", "key"), [
    ("default: SIDEWAYS\n", "key default"),
    ("subjects:\n  shop.bids: full-ish\n", "key subjects.shop.bids"),
    ("defaults: BACKWARD\n", "key defaults"),
    ("subjects: [a, b]\n", "key subjects"),
    ("subjects:\n  shop.bidz: FULL\n", "key subjects.shop.bidz"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "compatibility.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mode_config(path, ["shop.bids"])
    assert f"{path}, {key}" in str(info.value)
    assert info.value.fix


def test_unreadable_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "compatibility.yaml"
    path.write_text("default: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read YAML"):
        load_mode_config(path)


def test_modes_are_case_insensitive() -> None:
    config = parse_mode_config({"default": "full", "subjects": {"x": "forward_transitive"}})
    assert config.default is Mode.FULL
    assert config.mode_for("x") is Mode.FORWARD_TRANSITIVE
    assert config.mode_for("y") is Mode.FULL
