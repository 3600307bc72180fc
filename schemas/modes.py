"""Compatibility modes and the per-subject mode configuration (``schemas/compatibility.yaml``).

A mode says which earlier versions a new version of a subject is compared
with, and in which direction:

======================  ====================================  =====================
mode                    the new version must ...              earlier versions
======================  ====================================  =====================
BACKWARD (default)      read data written with (new reader)   the previous one
BACKWARD_TRANSITIVE     read data written with                all earlier ones
FORWARD                 be readable by (new writer)           the previous one
FORWARD_TRANSITIVE      be readable by                        all earlier ones
FULL                    both                                  the previous one
FULL_TRANSITIVE         both                                  all earlier ones
NONE                    nothing                               none
======================  ====================================  =====================

The configuration file::

    default: BACKWARD
    subjects:
      users.profile: BACKWARD_TRANSITIVE

>>> Mode.parse("full_transitive").directions
('backward', 'forward')
>>> Mode.BACKWARD.baseline(["v1", "v2"]), Mode.BACKWARD_TRANSITIVE.baseline(["v1", "v2"])
(['v2'], ['v1', 'v2'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pipelines.errors import ConfigError

T = TypeVar("T")

CONFIG_FILE = "compatibility.yaml"


class Mode(StrEnum):
    """A subject's compatibility mode (the names schema registries use)."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @classmethod
    def parse(cls, value: Any, *, where: str = "compatibility mode") -> Mode:
        """The mode named ``value`` (case-insensitive); :class:`ConfigError` otherwise."""
        text = value.strip().upper() if isinstance(value, str) else ""
        if text in cls.__members__:
            return cls[text]
        raise ConfigError(
            f"unknown compatibility mode {value!r}", where=where,
            fix=f"use one of {', '.join(m.value for m in cls)}",
        )

    @property
    def transitive(self) -> bool:
        """True when the new version is compared with every earlier version."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def directions(self) -> tuple[str, ...]:
        """``"backward"`` (new reads old) and/or ``"forward"`` (old reads new)."""
        if self is Mode.NONE:
            return ()
        if self.value.startswith("BACKWARD"):
            return ("backward",)
        if self.value.startswith("FORWARD"):
            return ("forward",)
        return ("backward", "forward")

    def baseline(self, earlier: Sequence[T]) -> list[T]:
        """The earlier versions (oldest first) a new version is compared with under this mode."""
        if self is Mode.NONE or not earlier:
            return []
        return list(earlier) if self.transitive else [earlier[-1]]


DEFAULT_MODE = Mode.BACKWARD


@dataclass(frozen=True)
class ModeConfig:
    """The mode of each subject: an explicit entry, else the default."""

    default: Mode = DEFAULT_MODE
    subjects: Mapping[str, Mode] = field(default_factory=dict)
    path: Path | None = None

    def mode_for(self, subject: str) -> Mode:
        """The mode ``subject`` is checked under."""
        return self.subjects.get(subject, self.default)


def parse_mode_config(data: Any, path: Path | None = None) -> ModeConfig:
    """Validate the parsed YAML of a mode configuration file.

    Raises:
        ConfigError: naming the file and key, for an unknown key or mode.
    """
    where = str(path) if path else CONFIG_FILE
    if data is None:
        return ModeConfig(path=path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with keys `default` and `subjects`", where=where,
                          fix="see docs/schema-changes.md for the file's format")
    unknown = sorted(set(map(str, data)) - {"default", "subjects"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}", where=f"{where}, key {unknown[0]}",
                          fix="use only `default` and `subjects`")
    default = Mode.parse(data.get("default", DEFAULT_MODE.value), where=f"{where}, key default")
    subjects_raw = data.get("subjects") or {}
    if not isinstance(subjects_raw, dict):
        raise ConfigError("expected a mapping of subject name to mode",
                          where=f"{where}, key subjects",
                          fix="write one `<subject>: <MODE>` line per subject")
    subjects = {
        str(name): Mode.parse(mode, where=f"{where}, key subjects.{name}")
        for name, mode in subjects_raw.items()
    }
    return ModeConfig(default=default, subjects=subjects, path=path)


def load_mode_config(path: Path, known_subjects: Sequence[str] | None = None) -> ModeConfig:
    """Read ``compatibility.yaml``; a missing file means BACKWARD for every subject.

    Args:
        path: the configuration file.
        known_subjects: when given, an entry for any other subject is an error
            (most likely a typo that would silently fall back to the default).

    Raises:
        ConfigError: unreadable YAML, unknown key, unknown mode or unknown subject.
    """
    import yaml  # only the check needs YAML

    if not path.exists():
        return ModeConfig(path=None)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read YAML: {exc}", where=str(path),
                          fix="fix the YAML syntax") from exc
    config = parse_mode_config(data, path)
    if known_subjects is not None:
        for name in config.subjects:
            if name not in known_subjects:
                raise ConfigError(
                    f"no subject {name!r} under the schema directory",
                    where=f"{path}, key subjects.{name}",
                    fix=f"use one of {', '.join(sorted(known_subjects))}, or add {name}/v1.avsc",
                )
    return config
