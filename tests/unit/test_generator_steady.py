"""``--steady``: stationary traffic at the minute scale, and the default mode left as it was."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.generator import Generation, GeneratorOptions, generate_events
from pipelines.topics import ORDER_PLACED, VIEWER_JOINED

SHOWS = 10
MINUTES = 45
SETTLED = 15  # audiences fill in about two viewer stays (mean 7 min); judge after that


class SteadyRun:
    """Per-minute counts of one steady run, and the number of shows on air at each record."""

    def __init__(self, seed: int) -> None:
        generation = Generation(GeneratorOptions(seed=seed, duration_s=MINUTES * 60,
                                                 shows=SHOWS, fraud_rings_per_hour=0,
                                                 steady=True))
        start = generation.options.start
        self.live: set[int] = set()
        self.per_minute: dict[str, Counter[int]] = {VIEWER_JOINED: Counter(),
                                                    ORDER_PLACED: Counter()}
        for rec in generation.records():
            self.live.add(generation.market.live_shows)
            if rec.subject in self.per_minute:
                self.per_minute[rec.subject][(rec.timestamp_ms - start) // 60_000] += 1

    def counts(self, subject: str) -> list[int]:
        """Records of ``subject`` per settled minute."""
        return [self.per_minute[subject][m] for m in range(SETTLED, MINUTES)]


@pytest.fixture(scope="module")
def runs() -> dict[int, SteadyRun]:
    return {seed: SteadyRun(seed) for seed in (1, 2)}


def test_exactly_the_asked_number_of_shows_is_on_air_all_the_time(
    runs: dict[int, SteadyRun],
) -> None:
    for run in runs.values():
        assert run.live == {SHOWS}


def test_arrivals_and_orders_per_minute_vary_no_more_than_a_poisson_count(
    runs: dict[int, SteadyRun],
) -> None:
    means = []
    for run in runs.values():
        for subject in (VIEWER_JOINED, ORDER_PLACED):
            counts = run.counts(subject)
            mean = sum(counts) / len(counts)
            variance = sum((c - mean) ** 2 for c in counts) / len(counts)
            # a Poisson count has variance = mean; bursts (shows starting and ending,
            # popular sellers, opening crowds) would make it several times larger
            assert variance < 2.0 * mean, (subject, mean, variance)
            half = len(counts) // 2
            first, second = sum(counts[:half]) / half, sum(counts[half:]) / (len(counts) - half)
            assert abs(first - second) < 0.2 * mean, (subject, first, second)
        means.append(sum(run.counts(VIEWER_JOINED)) / (MINUTES - SETTLED))
    # every show draws viewers at the same rate, whatever the seed
    assert abs(means[0] - means[1]) < 0.1 * max(means)


def test_steady_is_deterministic_and_differs_from_the_default_mode() -> None:
    def records(steady: bool) -> list[tuple[str, int, bytes]]:
        options = GeneratorOptions(seed=3, events=1_500, steady=steady)
        return [(r.topic, r.timestamp_ms, r.value) for r in generate_events(options)]

    assert records(steady=True) == records(steady=True)
    assert records(steady=True) != records(steady=False)


def test_the_manifest_names_steady_only_when_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIVEFEAT_CONFIG", raising=False)
    options = {}
    for flag in ([], ["--steady"]):
        path = tmp_path / f"m{len(flag)}.json"
        result = CliRunner().invoke(cli, ["generate", "--seed", "5", "--events", "300",
                                          "--dry-run", "--quiet", "--manifest", str(path),
                                          *flag])
        assert result.exit_code == 0, result.output
        options[bool(flag)] = json.loads(path.read_text())["options"]
    assert "steady" not in options[False]  # default manifests are unchanged
    assert options[True]["steady"] is True
    assert {k: v for k, v in options[True].items() if k != "steady"} == options[False]
