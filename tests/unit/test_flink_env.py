"""The Flink environment: Java discovery, derived configuration, source options, patches.

Java discovery runs against JDK layouts built in a temporary directory (a
``release`` file, or a ``bin/java`` script that prints a version the way the
real one does). The tests marked ``integration`` start the real JVM.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipelines.config import FlinkSettings, KafkaSettings, Settings, StackSettings
from pipelines.errors import DefinitionError, StackError
from pipelines.runtime.flink_env import (
    RESTART_ATTEMPTS,
    SUPPORTED_JAVA,
    create_env,
    find_java_home,
    flink_configuration,
    java_version,
    project_root,
    worker_python_path,
)
from pipelines.sources.base import build_all
from pipelines.sources.kafka import KafkaTopicSource, offsets_option, watermark_expression


def _jdk(root: Path, name: str, *, release: str | None = None, prints: str | None = None) -> Path:
    """A JDK home: bin/java plus a release file, or a bin/java that reports ``prints``."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    script = "#!/bin/sh\n"
    if prints is not None:
        script += f"echo 'openjdk version \"{prints}\" 2025-01-01' >&2\n"
    java.write_text(script)
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    if release is not None:
        (home / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{release}"\n')
    return home


# -- Java --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("release", "prints", "major"),
    [("17.0.15", None, 17), ("1.8.0_392", None, 8), ("21", None, 21), (None, "11.0.2", 11),
     (None, "1.8.0_402", 8), (None, None, None)],
)
def test_java_version_from_release_file_or_java_itself(
    tmp_path: Path, release: str | None, prints: str | None, major: int | None
) -> None:
    assert java_version(_jdk(tmp_path, "jdk", release=release, prints=prints)) == major


def test_java_version_without_java_binary(tmp_path: Path) -> None:
    (tmp_path / "release").write_text('JAVA_VERSION="17.0.1"\n')
    assert java_version(tmp_path) is None


def test_java_home_wins_when_supported(tmp_path: Path) -> None:
    home = _jdk(tmp_path, "jdk17", release="17.0.9")
    assert find_java_home({"JAVA_HOME": str(home), "PATH": ""}, search=()) == home


def test_unsupported_java_home_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    old = _jdk(tmp_path, "jdk8", release="1.8.0_392")
    good = _jdk(tmp_path / "jvms", "jdk17", release="17.0.9")
    with pytest.raises(StackError) as err:
        find_java_home({"JAVA_HOME": str(old), "PATH": str(good / "bin")}, search=())
    text = str(err.value)
    assert f"JAVA_HOME={old}" in text
    assert "Java 8" in text
    assert "openjdk-17" in text  # says how to install


def test_java_home_without_java_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no bin/java there"):
        find_java_home({"JAVA_HOME": str(tmp_path / "nothing"), "PATH": ""}, search=())


def test_java_on_path_then_search_dirs_prefer_17(tmp_path: Path) -> None:
    on_path = _jdk(tmp_path, "jdk21", release="21.0.2")
    jvms = tmp_path / "jvms"
    _jdk(jvms, "jdk11", release="11.0.20")
    jdk17 = _jdk(jvms, "jdk17", release="17.0.9")
    env = {"PATH": str(on_path / "bin")}
    assert find_java_home(env, search=[jvms]) == jdk17
    assert find_java_home(env, search=[]) == on_path
    assert find_java_home({"PATH": ""}, search=[jvms]) == jdk17


def test_no_supported_java_says_how_to_install(tmp_path: Path) -> None:
    jvms = tmp_path / "jvms"
    _jdk(jvms, "jdk8", release="1.8.0_392")
    _jdk(jvms, "jdk25", release="25")
    with pytest.raises(StackError) as err:
        find_java_home({"PATH": ""}, search=[jvms])
    text = str(err.value)
    assert "(Java 8)" in text and "(Java 25)" in text
    assert "apt-get install openjdk-17" in text and "JAVA_HOME" in text


def test_the_java_of_this_machine_is_found() -> None:
    assert java_version(find_java_home()) in SUPPORTED_JAVA


# -- configuration -----------------------------------------------------------------------
def test_configuration_defaults(tmp_path: Path) -> None:
    flink = FlinkSettings(checkpoint_dir=tmp_path / "ck")
    conf = flink_configuration(flink, python_executable="/venv/bin/python",
                               python_path=["/project", "/venv/site-packages"])
    assert conf["parallelism.default"] == "1"
    assert conf["python.execution-mode"] == "thread"
    assert conf["python.executable"] == conf["python.client.executable"] == "/venv/bin/python"
    assert conf["python.pythonpath"] == f"/project{os.pathsep}/venv/site-packages"
    assert conf["execution.checkpointing.interval"] == "10000 ms"
    assert conf["execution.checkpointing.dir"] == f"file://{tmp_path}/ck"
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == (
        "RETAIN_ON_CANCELLATION")
    assert conf["restart-strategy.type"] == "fixed-delay"
    assert conf["restart-strategy.fixed-delay.attempts"] == str(RESTART_ATTEMPTS)
    assert "execution.state-recovery.path" not in conf


def test_configuration_relative_checkpoint_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = flink_configuration(FlinkSettings(), python_executable="py", python_path=[])
    assert conf["execution.checkpointing.dir"] == f"file://{tmp_path}/.livefeat/checkpoints"


def test_configuration_without_checkpoints_and_with_restore() -> None:
    flink = FlinkSettings(checkpoint_interval_ms=0, parallelism=3, execution_mode="process")
    conf = flink_configuration(flink, python_executable="py", python_path=[],
                               restore_from="file:///ck/job/chk-7")
    assert conf["parallelism.default"] == "3"
    assert conf["python.execution-mode"] == "process"
    assert not any(k.startswith("execution.checkpointing.") for k in conf)
    assert conf["restart-strategy.type"] == "none"
    assert conf["execution.state-recovery.path"] == "file:///ck/job/chk-7"


def test_workers_can_import_the_project_and_this_environment() -> None:
    path = worker_python_path()
    assert path[0] == str(project_root())
    assert (project_root() / "pipelines" / "__init__.py").is_file()
    assert (project_root() / "schemas").is_dir()
    import pyflink

    assert any(Path(pyflink.__file__).is_relative_to(p) for p in path)
    assert len(path) == len(set(path))


# -- Kafka source options ----------------------------------------------------------------
def test_watermark_expression_is_bound_plus_one_millisecond() -> None:
    assert watermark_expression(5_000) == "`ts` - INTERVAL '0.001' SECOND * 5001"
    assert watermark_expression(0) == "`ts` - INTERVAL '0.001' SECOND * 1"


def test_offsets_option_is_sorted_by_partition() -> None:
    assert offsets_option({2: 7, 0: 42, 1: 0}) == (
        "partition:0,offset:42;partition:1,offset:0;partition:2,offset:7")


def test_source_options_bounded_and_unbounded() -> None:
    kafka = KafkaSettings(bootstrap_servers="h1:9092,h2:9092")
    flink = FlinkSettings(idleness_ms=1_500)
    bounded = KafkaTopicSource("bids", kafka, flink, bounded=True)
    opts = bounded.table_options(end_offsets={0: 10, 1: 3})
    assert bounded.name == "read_bids"
    assert opts["topic"] == "bids"
    assert opts["properties.bootstrap.servers"] == "h1:9092,h2:9092"
    assert opts["scan.startup.mode"] == "earliest-offset"
    assert opts["scan.bounded.mode"] == "specific-offsets"
    assert opts["scan.bounded.specific-offsets"] == "partition:0,offset:10;partition:1,offset:3"
    assert "scan.watermark.idle-timeout" not in opts  # idleness could make records late
    assert opts["scan.watermark.emit.strategy"] == "on-periodic"

    live = KafkaTopicSource("bids", kafka, flink, start="committed", group_id="g",
                            watermark_emit="per_record", step="read_bids_live")
    opts = live.table_options()
    assert live.name == "read_bids_live"
    assert "scan.bounded.mode" not in opts
    assert opts["scan.watermark.idle-timeout"] == "1500 ms"
    assert opts["scan.startup.mode"] == "group-offsets"
    assert opts["properties.auto.offset.reset"] == "earliest"
    assert opts["properties.group.id"] == "g"
    assert opts["scan.watermark.emit.strategy"] == "on-event"

    latest = KafkaTopicSource("bids", kafka, flink, start="latest")
    opts = latest.table_options(start_offsets={0: 5})
    assert opts["scan.startup.mode"] == "specific-offsets"
    assert opts["scan.startup.specific-offsets"] == "partition:0,offset:5"


def test_source_sasl_options_quote_the_secret() -> None:
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="svc", sasl_password='p"w\\d')  # type: ignore[arg-type]
    opts = KafkaTopicSource("t", kafka, FlinkSettings()).table_options()
    assert opts["properties.security.protocol"] == "SASL_SSL"
    assert opts["properties.sasl.mechanism"] == "SCRAM-SHA-512"
    assert opts["properties.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="svc" password="p\\"w\\\\d";')


def test_source_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="needs a consumer group"):
        KafkaTopicSource("t", KafkaSettings(), FlinkSettings(), start="committed")
    with pytest.raises(DefinitionError, match="needs a topic"):
        KafkaTopicSource("", KafkaSettings(), FlinkSettings())


def test_build_all_rejects_no_sources_and_duplicate_step_names() -> None:
    with pytest.raises(DefinitionError, match="at least one source"):
        build_all(None, [])
    twice = [KafkaTopicSource("t", KafkaSettings(), FlinkSettings()) for _ in range(2)]
    with pytest.raises(DefinitionError, match="used more than once: read_t"):
        build_all(None, twice)


# -- the real JVM ------------------------------------------------------------------------
@pytest.mark.integration
def test_create_env_applies_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        flink=FlinkSettings(parallelism=3, checkpoint_interval_ms=1_234,
                            checkpoint_dir=tmp_path / "ck"),
        stack=StackSettings(state_dir=tmp_path / "state"),
    )
    env = create_env(settings)
    assert env.get_parallelism() == 3
    assert env.get_checkpoint_interval() == 1_234
    assert os.environ["JAVA_HOME"]
    assert java_version(Path(os.environ["JAVA_HOME"])) in SUPPORTED_JAVA


@pytest.mark.integration
def test_kafka_patch_makes_specific_offsets_work(tmp_path: Path) -> None:
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaSource,
        KafkaTopicPartition,
    )

    from pipelines.runtime import pyflink_patches

    create_env(Settings(stack=StackSettings(state_dir=tmp_path / "state")))
    pyflink_patches.apply()  # a second time changes nothing
    assert pyflink_patches.kafka_patched()
    stop = KafkaOffsetsInitializer.offsets(
        {KafkaTopicPartition("t", 0): 5, KafkaTopicPartition("t", 1): 0},
        KafkaOffsetResetStrategy.EARLIEST,
    )
    source = (KafkaSource.builder().set_bootstrap_servers("127.0.0.1:9")
              .set_topics("t").set_bounded(stop)
              .set_value_only_deserializer(SimpleStringSchema()).build())
    assert str(source.get_java_function().getBoundedness()) == "BOUNDED"
    j_tp = KafkaTopicPartition("t", 1)._to_j_topic_partition()
    assert j_tp.getClass().getName() == "org.apache.kafka.common.TopicPartition"
