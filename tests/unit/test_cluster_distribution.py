"""Finding the Flink distribution in the PyFlink wheel, and a Java that can run it."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from pipelines.cluster.distribution import (
    find_java,
    java_major,
    locate_distribution,
    parse_java_properties,
)
from pipelines.errors import StackError


def _fake_jdk(root: Path, spec_version: str, exit_code: int = 0) -> Path:
    """A directory shaped like a JDK whose bin/java prints the given version's properties."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(
        "#!/bin/sh\n"
        "cat >&2 <<EOF\n"
        "Property settings:\n"
        f"    java.home = {root}\n"
        f"    java.specification.version = {spec_version}\n"
        f"    java.version = {spec_version}.0.9\n"
        "EOF\n"
        f"exit {exit_code}\n"
    )
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return root


def test_properties_and_major_versions() -> None:
    text = "Property settings:\n    java.home = /opt/jdk-17\n    java.version = 17.0.15\n" \
           "    java.specification.version = 17\n    user.dir = /tmp\n"
    assert parse_java_properties(text) == {
        "java.home": "/opt/jdk-17", "java.version": "17.0.15",
        "java.specification.version": "17",
    }
    assert [java_major(v) for v in ("1.8", "11", "17", "21", "")] == [8, 11, 17, 21, None]


def test_java_17_from_java_home(tmp_path: Path) -> None:
    jdk = _fake_jdk(tmp_path / "jdk17", "17")
    java = find_java({"JAVA_HOME": str(jdk), "PATH": os.environ.get("PATH", "")})
    assert (java.home, java.major, java.version) == (jdk, 17, "17.0.9")


@pytest.mark.parametrize("version", ["1.8", "9", "25"])
def test_unsupported_java_says_how_to_install_17(tmp_path: Path, version: str) -> None:
    jdk = _fake_jdk(tmp_path / "jdk", version)
    with pytest.raises(StackError) as info:
        find_java({"JAVA_HOME": str(jdk)})
    assert f"Java {java_major(version)}" in info.value.problem
    assert info.value.where == f"JAVA_HOME={jdk}"
    assert info.value.fix is not None and "openjdk-17" in info.value.fix
    assert "JAVA_HOME" in info.value.fix


def test_java_home_without_java(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no bin/java") as info:
        find_java({"JAVA_HOME": str(tmp_path)})
    assert info.value.fix is not None and "install a JDK 17" in info.value.fix


def test_java_that_fails(tmp_path: Path) -> None:
    jdk = _fake_jdk(tmp_path / "broken", "17", exit_code=1)
    with pytest.raises(StackError, match="did not report a Java version"):
        find_java({"JAVA_HOME": str(jdk)})


def test_no_java_home_and_no_java_on_path(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no Java found") as info:
        find_java({"PATH": str(tmp_path)})
    assert info.value.where == "PATH (JAVA_HOME is not set)"


def test_java_on_path_when_java_home_is_unset(tmp_path: Path) -> None:
    jdk = _fake_jdk(tmp_path / "jdk21", "21")
    path = f"{jdk / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    assert find_java({"PATH": path}).major == 21


@pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
                    reason="no Java on this machine")
def test_this_machine_java_is_found() -> None:
    java = find_java()
    assert java.major in (17, 21, 11)
    assert (java.home / "bin" / "java").is_file()


def test_the_wheel_distribution_is_complete() -> None:
    dist = locate_distribution()
    for script in ("jobmanager.sh", "taskmanager.sh", "flink", "flink-daemon.sh"):
        assert dist.script(script).is_file()
    assert (dist.plugins / "metrics-prometheus").is_dir()
    assert any((dist.plugins / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))


def test_a_directory_that_is_no_distribution(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"not a Flink distribution: bin/jobmanager\.sh"):
        locate_distribution(tmp_path)
    with pytest.raises(StackError, match=r"has no bin/nope\.sh"):
        locate_distribution().script("nope.sh")
