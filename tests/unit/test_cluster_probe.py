"""The probe job's output checks (the job itself runs in tests/integration/test_cluster.py)."""

from __future__ import annotations

from pathlib import Path

from pipelines.cluster.probe import CountLine, read_counts, violations


def test_read_counts_skips_a_line_still_being_written(tmp_path: Path) -> None:
    (tmp_path / "counts-a.txt").write_text("1 1 1\n2 1 2\n1 2 5\n3 1")
    (tmp_path / "counts-b.txt").write_text("0 1 0\n")
    (tmp_path / "other.txt").write_text("9 9 9\n")
    lines = read_counts(tmp_path)
    assert [(ln.key, ln.count, ln.n, ln.file) for ln in lines] == [
        (1, 1, 1, "counts-a.txt"), (2, 1, 2, "counts-a.txt"), (1, 2, 5, "counts-a.txt"),
        (0, 1, 0, "counts-b.txt")]


def test_violations_are_lines_whose_count_does_not_follow_from_n() -> None:
    # With 4 keys, n = 13 is the 4th number of key 1 (1, 5, 9, 13).
    good = CountLine(1, 4, 13, "f")
    lost_state = CountLine(1, 1, 13, "f")
    wrong_key = CountLine(2, 4, 13, "f")
    assert violations([good, lost_state, wrong_key], keys=4) == [lost_state, wrong_key]
