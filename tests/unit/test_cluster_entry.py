"""Submitting a pipeline by name: target resolution, the entry module, checkpoint URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cluster.submit import ENTRY_MODULE, is_pipeline_name, resolve_target
from pipelines.config import FlinkSettings, Settings, load_config
from pipelines.errors import ConfigError, DefinitionError
from pipelines.runtime.entry import absolute_paths, cluster_restart_strategy, parse_args
from pipelines.runtime.flink_env import checkpoint_uri, flink_configuration


def test_a_pipeline_name_runs_the_entry_module(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lf.yaml").write_text("{}\n")
    assert resolve_target("marketplace", config=Path("lf.yaml"), bounded=True) == (
        ENTRY_MODULE,
        ["--pipeline", "marketplace", "--config", str(tmp_path / "lf.yaml"), "--bounded"],
    )
    assert resolve_target("pipelines.jobs.marketplace:PIPELINE") == (
        ENTRY_MODULE, ["--pipeline", "pipelines.jobs.marketplace:PIPELINE"])
    assert ENTRY_MODULE == "pipelines.runtime.entry"


def test_files_and_modules_run_as_they_are(tmp_path: Path) -> None:
    assert resolve_target("pipelines.cluster.probe") == ("pipelines.cluster.probe", [])
    assert resolve_target(str(tmp_path / "job.py")) == (str(tmp_path / "job.py"), [])
    assert not is_pipeline_name("probe")  # no pipelines.jobs.probe: a top-level module
    assert is_pipeline_name("marketplace")
    with pytest.raises(ConfigError, match="--bounded applies to livefeat pipelines"):
        resolve_target("pipelines.cluster.probe", bounded=True)


def test_an_unknown_pipeline_fails_before_java_starts() -> None:
    with pytest.raises(DefinitionError, match="has no Pipeline called NOPE"):
        resolve_target("pipelines.jobs.marketplace:NOPE")


def test_entry_arguments() -> None:
    args = parse_args(["--pipeline", "marketplace", "--config", "/c/lf.yaml", "--bounded"])
    assert (args.pipeline, args.config, args.bounded) == ("marketplace", "/c/lf.yaml", True)
    assert parse_args([]).pipeline == "marketplace" and not parse_args([]).bounded


def test_local_paths_become_absolute_and_uris_stay(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = absolute_paths(Settings())
    assert local.offline_store.uri == str(tmp_path / ".livefeat" / "offline")
    assert local.flink.checkpoint_dir == tmp_path / ".livefeat" / "checkpoints"
    assert local.online_store.sqlite_path == tmp_path / ".livefeat" / "online.db"
    assert local.stack.state_dir == tmp_path / ".livefeat"
    assert local.schemas.dir is None and local.online_store.registry_path is None

    config = tmp_path / "k8s.yaml"
    config.write_text("flink:\n  checkpoint_dir: s3://livefeat-flink/marketplace/checkpoints\n"
                      "offline_store:\n  uri: s3://livefeat-offline/marketplace\n")
    remote = absolute_paths(load_config(config))
    assert remote.flink.checkpoint_dir == "s3://livefeat-flink/marketplace/checkpoints"
    assert remote.offline_store.uri == "s3://livefeat-offline/marketplace"


def test_the_clusters_restart_strategy_wins(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "restart-strategy:\n  type: fixed-delay\n  fixed-delay:\n    attempts: 10\n"
        "restart-strategy.fixed-delay.delay: 10 s\nrest.port: 8081\n")
    assert cluster_restart_strategy({"FLINK_CONF_DIR": str(tmp_path)}) == {
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "10",
        "restart-strategy.fixed-delay.delay": "10 s",
    }
    assert cluster_restart_strategy({"FLINK_CONF_DIR": str(tmp_path / "missing")}) == {}
    assert cluster_restart_strategy({}) == {}


def test_an_s3_checkpoint_dir_is_passed_to_flink_unchanged(tmp_path: Path) -> None:
    config = tmp_path / "lf.yaml"
    config.write_text("flink:\n  checkpoint_dir: s3://livefeat-flink/marketplace/checkpoints\n")
    flink = load_config(config).flink
    assert flink.checkpoint_dir == "s3://livefeat-flink/marketplace/checkpoints"
    conf = flink_configuration(flink, python_executable="py", python_path=[])
    assert conf["execution.checkpointing.dir"] == "s3://livefeat-flink/marketplace/checkpoints"
    assert checkpoint_uri("file:///shared/ckpt") == "file:///shared/ckpt"
    assert checkpoint_uri(tmp_path / "ckpt") == (tmp_path / "ckpt").as_uri()
    assert FlinkSettings(checkpoint_dir="ckpt").checkpoint_dir == Path("ckpt")


@pytest.mark.parametrize(("value", "message"), [
    ("ftp://host/ckpt", "URI scheme 'ftp', which is not a Flink file system"),
    ("s3:/livefeat-flink/ckpt", "names no bucket or host"),
])
def test_a_bad_checkpoint_uri_names_the_key(tmp_path: Path, value: str, message: str) -> None:
    config = tmp_path / "lf.yaml"
    config.write_text(f"flink:\n  checkpoint_dir: {value}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(config)
    assert info.value.where is not None and "flink.checkpoint_dir" in info.value.where
