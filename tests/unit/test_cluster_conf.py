"""The local cluster's configuration: rendering, the private conf and lib directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.cluster.conf import (
    PROMETHEUS_FACTORY,
    ClusterOptions,
    ClusterPaths,
    flatten,
    read_shipped,
    render_config,
    write_conf_dir,
    write_lib_dir,
)
from pipelines.cluster.distribution import locate_distribution
from pipelines.errors import ConfigError, StackError


def _options(**values: object) -> ClusterOptions:
    return ClusterOptions(python="/opt/venv/bin/python", pythonpath=("/src",), **values)  # type: ignore[arg-type]


def test_flatten_joins_nested_keys_and_keeps_flat_ones() -> None:
    tree = {"taskmanager": {"memory": {"process": {"size": "1728m"}}, "numberOfTaskSlots": 1},
            "rest.port": 8081, "env": {"java": {"opts": {"all": "--add-opens=x"}}}}
    assert flatten(tree) == {
        "taskmanager.memory.process.size": "1728m",
        "taskmanager.numberOfTaskSlots": 1,
        "rest.port": 8081,
        "env.java.opts.all": "--add-opens=x",
    }


def test_render_overrides_shipped_values_and_keeps_the_rest(tmp_path: Path) -> None:
    shipped = {"taskmanager": {"numberOfTaskSlots": 1, "memory": {"process": {"size": "1728m"}}},
               "rest": {"address": "localhost"}, "env": {"java": {"opts": {"all": "--x"}}}}
    paths = ClusterPaths(tmp_path)
    conf = render_config(shipped, _options(slots=3, rest_port=18081, rpc_port=16123,
                                           taskmanager_memory="3g"), paths)
    assert conf["taskmanager.numberOfTaskSlots"] == 3
    assert conf["taskmanager.memory.process.size"] == "3g"
    assert conf["rest.port"] == 18081
    assert conf["jobmanager.rpc.port"] == 16123
    assert conf["rest.address"] == conf["rest.bind-address"] == "127.0.0.1"
    assert conf["env.java.opts.all"] == "--x"  # shipped JVM options survive
    assert conf["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    assert conf["metrics.reporter.prom.port"] == "9249-9260"
    assert conf["python.executable"] == conf["python.client.executable"] == "/opt/venv/bin/python"
    assert conf["restart-strategy.type"] == "fixed-delay"
    assert conf["execution.checkpointing.dir"] == (tmp_path / "flink" / "checkpoints").as_uri()
    assert conf["execution.checkpointing.savepoint-dir"] == (
        tmp_path / "flink" / "savepoints").as_uri()
    assert conf["env.pid.dir"] == str(tmp_path / "flink" / "script-pids")
    crash_file = f"-XX:ErrorFile={tmp_path / 'flink' / 'log'}/hs_err_pid%p.log"
    assert conf["env.java.opts.taskmanager"] == conf["env.java.opts.jobmanager"] == crash_file
    assert list(conf) == sorted(conf)


def test_extra_options_apply_last(tmp_path: Path) -> None:
    conf = render_config({}, _options(extra={"rest.port": 1, "state.backend.type": "rocksdb"}),
                         ClusterPaths(tmp_path))
    assert conf["rest.port"] == 1
    assert conf["state.backend.type"] == "rocksdb"


def test_write_conf_dir_copies_the_wheel_conf_and_writes_flat_yaml(tmp_path: Path) -> None:
    dist = locate_distribution()
    paths = ClusterPaths(tmp_path)
    target = write_conf_dir(dist.conf, _options(slots=4), paths)
    shipped_files = {p.name for p in dist.conf.iterdir()}
    assert shipped_files <= {p.name for p in paths.conf.iterdir()}
    text = target.read_text()
    assert text.startswith("# Written by `livefeat cluster up`")
    written = yaml.safe_load(text)
    assert written["taskmanager.numberOfTaskSlots"] == 4
    # Every shipped value is kept unless the cluster sets it.
    for key, value in flatten(read_shipped(dist.conf)).items():
        if key not in ("taskmanager.numberOfTaskSlots", "taskmanager.memory.process.size",
                       "jobmanager.memory.process.size", "jobmanager.rpc.address",
                       "jobmanager.rpc.port", "jobmanager.bind-host", "taskmanager.bind-host",
                       "taskmanager.host", "rest.address", "rest.bind-address", "rest.port",
                       "parallelism.default"):
            assert written[key] == value, key
    # The wheel's own file is untouched.
    assert yaml.safe_load((dist.conf / "config.yaml").read_text())["taskmanager"][
        "numberOfTaskSlots"] == 1
    for directory in (paths.logs, paths.script_pids, paths.tmp, paths.checkpoints,
                      paths.savepoints):
        assert directory.is_dir()


def test_write_lib_dir_links_lib_jars_and_flink_python(tmp_path: Path) -> None:
    dist = locate_distribution()
    paths = ClusterPaths(tmp_path)
    write_lib_dir(dist.home, paths)
    names = {p.name for p in paths.lib.iterdir()}
    assert {p.name for p in (dist.home / "lib").glob("*.jar")} < names
    assert any(name.startswith("flink-python") for name in names)
    assert all((paths.lib / name).resolve().is_file() for name in names)
    write_lib_dir(dist.home, paths)  # rebuilt in place on the next `up`
    assert {p.name for p in paths.lib.iterdir()} == names


def test_write_lib_dir_without_flink_python_says_so(tmp_path: Path) -> None:
    home = tmp_path / "flink"
    (home / "lib").mkdir(parents=True)
    (home / "opt").mkdir()
    with pytest.raises(StackError, match="no opt/flink-python"):
        write_lib_dir(home, ClusterPaths(tmp_path / "state"))


def test_read_shipped_rejects_a_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(StackError, match="not a YAML mapping") as info:
        read_shipped(tmp_path)
    assert info.value.where == str(tmp_path / "config.yaml")


@pytest.mark.parametrize(("values", "where", "message"), [
    ({"taskmanagers": 0}, "--taskmanagers", "cannot start 0 TaskManagers"),
    ({"slots": 0}, "--slots", "0 slots per TaskManager"),
    ({"rest_port": 70000}, "--rest-port", "not a TCP port"),
    ({"rest_port": 9000, "rpc_port": 9000}, "--rest-port / --rpc-port", "both 9000"),
])
def test_invalid_options_name_the_flag(values: dict[str, int], where: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _options(**values)
    assert info.value.where == where
    assert info.value.fix


def test_rest_url() -> None:
    assert _options(rest_port=18081).rest_url == "http://127.0.0.1:18081"
