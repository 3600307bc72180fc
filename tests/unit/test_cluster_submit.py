"""Building the `flink run` command line, and the submit command's input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.cluster_cmd import jobs, submit
from pipelines.cluster.distribution import locate_distribution
from pipelines.cluster.submit import (
    check_jobmanager,
    client_environment,
    flink_run_argv,
    parse_job_id,
    pipeline_option,
    savepoint_uri,
)
from pipelines.errors import ConfigError, StackError
from tests.conftest import free_port

# The tail of what `flink run --detached -py job.py` printed against a real cluster.
CLIENT_OUTPUT = """\
WARNING: Unknown module: jdk.compiler specified to --add-exports
Job has been submitted with JobID 315ce7fb44a182f90f6527a4b3b8e729
"""


def test_job_id_is_read_from_the_client_output() -> None:
    assert parse_job_id(CLIENT_OUTPUT) == "315ce7fb44a182f90f6527a4b3b8e729"
    assert parse_job_id("Caused by: java.net.ConnectException: Connection refused") is None


def test_file_or_module(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("print('hi')\n")
    assert pipeline_option(str(job)) == ["-py", str(job.resolve())]
    assert pipeline_option("pipelines.cluster.probe") == ["-pym", "pipelines.cluster.probe"]
    with pytest.raises(ConfigError, match="no such pipeline file") as info:
        pipeline_option(str(tmp_path / "missing.py"))
    assert info.value.where == str(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match=r"neither a \.py file nor a Python module name"):
        pipeline_option("not a module")


@pytest.mark.parametrize(("given", "expected"), [
    ("127.0.0.1:8081", "127.0.0.1:8081"), ("http://flink-jm:8081/", "flink-jm:8081"),
])
def test_jobmanager_address(given: str, expected: str) -> None:
    assert check_jobmanager(given) == expected


@pytest.mark.parametrize("bad", ["localhost", ":8081", "host:port", "host:99999"])
def test_bad_jobmanager_address(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not HOST:PORT") as info:
        check_jobmanager(bad)
    assert info.value.where == "--jobmanager"


def test_savepoint_locations(tmp_path: Path) -> None:
    assert savepoint_uri("s3://bucket/sp/savepoint-1") == "s3://bucket/sp/savepoint-1"
    assert savepoint_uri("file:/x/savepoint-1") == "file:/x/savepoint-1"
    assert savepoint_uri(str(tmp_path / "sp")) == str((tmp_path / "sp").resolve())


def test_flink_run_command_line() -> None:
    dist = locate_distribution()
    argv = flink_run_argv(
        dist, "pipelines.cluster.probe", "127.0.0.1:18081", python="/venv/bin/python",
        savepoint="s3://b/sp-1", allow_non_restored_state=True, pyfiles=(),
        job_args=("--out", "/tmp/x"),
    )
    assert argv == [
        str(dist.bin / "flink"), "run", "-m", "127.0.0.1:18081", "-pyexec", "/venv/bin/python",
        "-pyclientexec", "/venv/bin/python", "-s", "s3://b/sp-1", "--allowNonRestoredState",
        "--detached", "-pym", "pipelines.cluster.probe", "--out", "/tmp/x",
    ]
    attached = flink_run_argv(dist, "pipelines.cluster.probe", "h:1", python="p",
                              detached=False)
    assert "--detached" not in attached and "-s" not in attached


def test_client_environment(tmp_path: Path) -> None:
    env = client_environment(Path("/jdk"), conf_dir=None, log_dir=tmp_path,
                             environ={"PYTHONPATH": "/mine", "FLINK_CONF_DIR": "/elsewhere"})
    assert env["JAVA_HOME"] == "/jdk"
    assert env["FLINK_LOG_DIR"] == str(tmp_path)
    assert "FLINK_CONF_DIR" not in env  # the distribution's own conf, not a stray one
    parts = env["PYTHONPATH"].split(":")
    assert str(Path(__file__).resolve().parents[2]) in parts and parts[-1] == "/mine"
    env = client_environment(Path("/jdk"), conf_dir=tmp_path / "conf", log_dir=tmp_path,
                             environ={})
    assert env["FLINK_CONF_DIR"] == str(tmp_path / "conf")


def test_submit_command_rejects_a_missing_file_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(submit, [str(tmp_path / "nope.py"), "--state-dir",
                                         str(tmp_path), "--jobmanager", "127.0.0.1:1"])
    assert isinstance(result.exception, ConfigError)
    assert "no such pipeline file" in str(result.exception)
    assert not (tmp_path / "flink" / "log").exists()


def test_jobs_list_without_a_cluster(tmp_path: Path) -> None:
    port = free_port()
    result = CliRunner().invoke(jobs, ["list", "--state-dir", str(tmp_path),
                                       "--jobmanager", f"127.0.0.1:{port}"])
    assert isinstance(result.exception, StackError)
    assert "cannot reach the Flink REST API" in str(result.exception)
