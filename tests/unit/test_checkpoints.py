"""Finding the checkpoint ``livefeat run --restore`` resumes from, and the accounting that
tells when a resumed bounded run has written everything (no Flink needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.errors import JobError
from pipelines.runtime.checkpoints import (
    complete_checkpoints,
    latest_checkpoint,
    resolve_restore,
)


def _checkpoint(root: Path, job: str, n: int, *, mtime: float | None = None,
                complete: bool = True) -> Path:
    """A ``<root>/<job>/chk-<n>`` directory the way Flink leaves it."""
    path = root / job / f"chk-{n}"
    path.mkdir(parents=True)
    (path / "state-file").write_bytes(b"x")
    if complete:
        metadata = path / "_metadata"
        metadata.write_bytes(b"m")
        if mtime is not None:
            os.utime(metadata, (mtime, mtime))
    return path


def test_latest_is_the_newest_complete_checkpoint_of_any_job(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "job-a", 7, mtime=1_000)
    newest = _checkpoint(tmp_path, "job-b", 2, mtime=2_000)
    _checkpoint(tmp_path, "job-b", 3, complete=False)  # being written when the job died
    _checkpoint(tmp_path, "job-a", 8, mtime=1_500)
    (tmp_path / "job-b" / "shared").mkdir()  # Flink's other directories are not checkpoints
    (tmp_path / "job-b" / "taskowned").mkdir()
    found = latest_checkpoint(tmp_path)
    assert (found.path, found.job_id, found.number) == (newest.resolve(), "job-b", 2)
    assert [(c.job_id, c.number) for c in complete_checkpoints(tmp_path)] == [
        ("job-a", 7), ("job-a", 8), ("job-b", 2)]


def test_ties_in_completion_time_go_to_the_higher_number(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "job", 9, mtime=5_000)
    _checkpoint(tmp_path, "job", 10, mtime=5_000)
    assert latest_checkpoint(tmp_path).number == 10


@pytest.mark.parametrize("layout", ["missing", "empty", "only_incomplete"])
def test_no_complete_checkpoint_is_a_clear_error(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "ckpt"
    if layout != "missing":
        root.mkdir()
    if layout == "only_incomplete":
        _checkpoint(root, "job", 1, complete=False)
    with pytest.raises(JobError, match="no complete checkpoint") as err:
        resolve_restore("latest", root)
    assert str(root) in str(err.value) and "fix:" in str(err.value)
    if layout == "only_incomplete":
        assert "1 checkpoint directories without _metadata" in str(err.value)


def test_latest_resolves_to_a_file_uri_of_the_directory(tmp_path: Path) -> None:
    chk = _checkpoint(tmp_path, "job", 4)
    assert resolve_restore("latest", tmp_path) == chk.resolve().as_uri()


def test_a_path_must_be_a_complete_checkpoint_or_savepoint(tmp_path: Path) -> None:
    chk = _checkpoint(tmp_path, "job", 4)
    savepoint = tmp_path / "savepoint-1a2b"
    savepoint.mkdir()
    (savepoint / "_metadata").write_bytes(b"m")
    assert resolve_restore(str(chk), tmp_path) == chk.resolve().as_uri()
    assert resolve_restore(str(chk / "_metadata"), tmp_path) == chk.resolve().as_uri()
    assert resolve_restore(str(savepoint), tmp_path) == savepoint.resolve().as_uri()
    with pytest.raises(JobError, match="does not exist"):
        resolve_restore(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(JobError, match="holds no _metadata"):
        resolve_restore(str(_checkpoint(tmp_path, "job", 5, complete=False)), tmp_path)


def test_uris_are_passed_through_for_flink_to_resolve() -> None:
    assert resolve_restore("s3://bucket/ckpt/job/chk-3", Path("unused")) == (
        "s3://bucket/ckpt/job/chk-3")


def test_run_restore_latest_without_checkpoints_fails_before_starting_flink(
    tmp_path: Path,
) -> None:
    config = tmp_path / "livefeat.yaml"
    config.write_text(f"flink:\n  checkpoint_dir: {tmp_path / 'ckpt'}\n")
    result = CliRunner().invoke(
        cli, ["--config", str(config), "run", "marketplace", "--bounded", "--restore", "latest"]
    )
    assert isinstance(result.exception, JobError)
    assert "no complete checkpoint to restore from" in str(result.exception)


def _write(root: Path, dataset: str, name: str, columns: dict[str, list[object]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = root / dataset / "date=2024-01-01" / "hour=00"
    where.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), where / name)


def test_unaccounted_counts_positions_once_and_only_below_the_end(tmp_path: Path) -> None:
    from pipelines.runtime.restored_run import unaccounted

    ends = {("bids", 0): 3, ("bids", 1): 2, ("orders", 0): 2}
    assert unaccounted(str(tmp_path), ends) == 7  # nothing written yet
    _write(tmp_path, "events/bids", "part-a.parquet",
           {"_partition": [0, 0, 1], "_offset": [0, 1, 0]})
    # a replay wrote offset 1 again; offset 9 is beyond this run's end
    _write(tmp_path, "events/bids", "part-b.parquet", {"_partition": [0, 0], "_offset": [1, 9]})
    _write(tmp_path, "quarantine", "part-c.parquet",
           {"topic": ["bids", "orders"], "partition": [0, 0], "offset": [2, 0],
            "reason": ["late", "undecodable"]})
    assert unaccounted(str(tmp_path), ends) == 2  # bids[1]@1 and orders[0]@1
    _write(tmp_path, "events/orders", "part-d.parquet", {"_partition": [0], "_offset": [1]})
    _write(tmp_path, "events/bids", "part-e.parquet", {"_partition": [1], "_offset": [1]})
    assert unaccounted(str(tmp_path), ends) == 0
