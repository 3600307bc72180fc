"""The repository schema check behind ``livefeat schemas check``.

For every subject under ``<root>/schemas/avro`` (``<subject>/v<N>.avsc``):

1. versions are immutable: with a git ref, every version released at the ref
   must still exist with the same Parsing Canonical Form (records written with
   it carry its fingerprint; change a schema by adding ``v<N+1>.avsc``);
2. new versions are compatible under the subject's mode from
   ``schemas/compatibility.yaml``: without a ref, the newest version is checked
   against the earlier versions in the tree; with a ref, every version added
   since the ref is checked against its predecessors, and the newest one also
   against the newest version at the ref (a subject absent there is new);
3. no feature breaks: the features that read a field the change removes,
   renames or retypes are named (see :mod:`schemas.impact`), and so are
   features reading a field the newest version does not have.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, SchemaError
from schemas.compat import CompatibilityResult, check_nodes, validate
from schemas.impact import (
    FeatureImpact,
    FieldUsage,
    FieldUsageMap,
    feature_impact,
    load_field_usage,
)
from schemas.modes import CONFIG_FILE, Mode, load_mode_config
from schemas.nodes import parse
from schemas.store import SchemaStore, canonical_form

SCHEMA_DIR = Path("schemas") / "avro"
_VERSION_PATH = re.compile(r"^(?P<subject>[^/]+)/v(?P<n>\d+)\.avsc$")


@dataclass(frozen=True)
class Problem:
    """One reason the check fails, with a fix a person can act on."""

    subject: str
    kind: str
    message: str
    fix: str
    location: str = ""
    rule: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Comparison:
    """One reader/writer resolution the mode asked for."""

    direction: str
    reader: str
    writer: str
    result: CompatibilityResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"direction": self.direction, "reader": self.reader, "writer": self.writer,
                **self.result.to_dict()}


@dataclass
class SubjectReport:
    """What the check found for one subject."""

    subject: str
    mode: Mode
    versions: list[int]
    ref_versions: list[int] | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    impacts: list[FeatureImpact] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "subject": self.subject, "mode": self.mode.value, "versions": self.versions,
            "ref_versions": self.ref_versions, "ok": not self.problems,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "problems": [p.to_dict() for p in self.problems],
            "feature_impact": [i.to_dict() for i in self.impacts],
        }


@dataclass
class CheckReport:
    """The outcome of the repository check."""

    root: str
    against: str | None
    subjects: list[SubjectReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    usage_source: str | None = None

    @property
    def problems(self) -> list[Problem]:
        """Every problem, subject by subject."""
        return [p for s in self.subjects for p in s.problems]

    @property
    def ok(self) -> bool:
        """True when nothing fails."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ok": self.ok, "root": self.root, "against": self.against,
                "problem_count": len(self.problems), "notes": self.notes,
                "field_usage_source": self.usage_source,
                "subjects": [s.to_dict() for s in self.subjects]}


class GitRef:
    """Schema files as they are at a git ref, read with ``git`` itself."""

    def __init__(self, root: Path, ref: str) -> None:
        self.ref = ref
        # A commit id is shortened in labels and messages; git commands use it whole.
        self.name = ref[:12] if re.fullmatch(r"[0-9a-f]{40}", ref) else ref
        where = f"--against {ref}"
        top = self._git(root, "rev-parse", "--show-toplevel", where=where).strip()
        self.top = Path(top)
        try:
            self.prefix = (root.resolve() / SCHEMA_DIR).relative_to(self.top.resolve()).as_posix()
        except ValueError:
            raise ConfigError(f"{root} is not inside the git work tree {top}", where=where,
                              fix="run the check inside the repository, or pass --root") from None
        self._git(self.top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}",
                  where=where, missing=True)

    def _git(self, cwd: Path, *args: str, where: str = "git", missing: bool = False) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                  check=False)
        except OSError as exc:
            raise ConfigError(f"cannot run git: {exc}", where=where,
                              fix="install git, or run the check without --against") from exc
        if done.returncode != 0:
            if missing:
                raise ConfigError(
                    f"git ref {self.ref!r} not found", where=where,
                    fix="fetch it first (in CI: check out with full history, e.g. fetch-depth: 0)",
                )
            raise ConfigError(f"git {' '.join(args)} failed: {done.stderr.strip()}", where=where,
                              fix="run the check inside a git repository, or without --against")
        return done.stdout

    def versions(self) -> dict[str, dict[int, str]]:
        """``{subject: {version: path in the repository}}`` at the ref."""
        listing = self._git(self.top, "ls-tree", "-r", "--name-only", self.ref, "--",
                            self.prefix, where=f"--against {self.ref}")
        found: dict[str, dict[int, str]] = {}
        for line in listing.splitlines():
            relative = line[len(self.prefix) + 1:] if line.startswith(self.prefix + "/") else line
            match = _VERSION_PATH.match(relative)
            if match:
                found.setdefault(match["subject"], {})[int(match["n"])] = line
        return found

    def read(self, path: str) -> str:
        """The text of ``path`` at the ref."""
        return self._git(self.top, "show", f"{self.ref}:{path}", where=f"{self.ref}:{path}")


def _without_docs(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_docs(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [_without_docs(v) for v in schema]
    return schema


@dataclass(frozen=True)
class _Version:
    label: str
    path: str
    schema: Any
    canonical: str

    @property
    def resolution_key(self) -> str:
        """Equal for schemas that read alike: the canonical form drops defaults and aliases."""
        return json.dumps(_without_docs(self.schema), sort_keys=True)


def _ref_version(git: GitRef, path: str, label: str, notes: list[str]) -> _Version | None:
    try:
        schema = json.loads(git.read(path))
        validate(schema, f"{git.ref}:{path}")
    except (json.JSONDecodeError, SchemaError) as exc:  # invalid at the ref: say so, go on
        notes.append(f"{git.ref}:{path} is not a valid schema, not compared ({exc})")
        return None
    return _Version(label, f"{git.ref}:{path}", schema, canonical_form(schema))


def _compare(report: SubjectReport, new: _Version, old: _Version) -> None:
    for direction in report.mode.directions:
        reader, writer = (new, old) if direction == "backward" else (old, new)
        result = check_nodes(parse(reader.schema), parse(writer.schema))
        report.comparisons.append(Comparison(direction, reader.label, writer.label, result))
        if direction == "backward":
            why = (f"consumers reading with {new.label} could not read records "
                   f"written with {old.label}")
        else:
            why = (f"consumers still reading with {old.label} could not read records "
                   f"written with {new.label}")
        for inc in result.incompatibilities:
            pointer = inc.location if direction == "backward" else inc.writer_location
            report.problems.append(Problem(
                report.subject, "incompatible",
                f"{report.mode.value}: {why}: {inc.problem}",
                inc.fix if direction == "backward" else inc.writer_fix,
                f"{new.path}#{pointer}", inc.rule,
            ))


def _check_released(report: SubjectReport, git: GitRef, released: dict[int, str],
                    tree: dict[int, _Version], notes: list[str]) -> dict[int, _Version]:
    at_ref: dict[int, _Version] = {}
    for number, path in sorted(released.items()):
        old = _ref_version(git, path, f"{git.name}:v{number}", notes)
        if old is None:
            continue
        at_ref[number] = old
        current = tree.get(number)
        if current is None:
            report.problems.append(Problem(
                report.subject, "deleted_release",
                f"v{number} exists at {git.name} but not in the tree; released versions are "
                "immutable: records written with it can no longer be decoded.",
                f"restore {path} (git checkout {git.ref} -- {path})", path, "version.deleted"))
        elif current.canonical != old.canonical:
            report.problems.append(Problem(
                report.subject, "modified_release",
                f"v{number} differs from its released version at {git.name} (its Parsing "
                "Canonical Form, and so its fingerprint, changed); released versions are "
                "immutable: records already written name the old fingerprint.",
                f"restore {path} (git checkout {git.ref} -- {path}) and put the change in a new "
                f"version v{max(tree) + 1}.avsc", current.path, "version.modified"))
        elif current.resolution_key != old.resolution_key:
            notes.append(f"{current.path}: defaults or aliases differ from {git.name} (the "
                         "fingerprint is unchanged); readers already deployed keep the old ones")
    return at_ref


def _check_features(report: SubjectReport, baseline: _Version | None, newest: _Version,
                    usage: FieldUsageMap) -> None:
    if baseline is not None and baseline.resolution_key != newest.resolution_key:
        report.impacts = feature_impact(report.subject, baseline.schema, newest.schema, usage)
    for impact in report.impacts:
        if impact.breaking:
            since = f" (from {baseline.label} to {newest.label})" if baseline else ""
            report.problems.append(Problem(
                report.subject, "feature_break", impact.message.rstrip(".") + since + ".",
                impact.fix, newest.path, f"field.{impact.change}"))
    reported = {i.field for i in report.impacts}
    present = {f.name for f in parse(newest.schema).fields}
    for name, features in sorted((usage.get(report.subject) or {}).items()):
        if name not in present and name not in reported and features:
            names = ", ".join(sorted(set(features)))
            report.problems.append(Problem(
                report.subject, "feature_break",
                f"feature(s) {names} read field `{name}`, which {newest.label} does not have.",
                f"add field `{name}` back, or change {names} to read an existing field",
                newest.path, "field.missing"))


def _check_subject(sub: SubjectReport, store: SchemaStore, git: GitRef | None,
                   released: dict[int, str] | None, usage: FieldUsageMap | None,
                   notes: list[str]) -> SubjectReport:
    tree = {v.version: _Version(f"v{v.version}", str(v.path), v.schema, v.canonical)
            for v in store.versions(sub.subject)}
    numbers = sub.versions = sorted(tree)
    at_ref: dict[int, _Version] = {}
    if git is not None and released:
        sub.ref_versions = sorted(released)
        at_ref = _check_released(sub, git, released, tree, notes)
    newest = tree[numbers[-1]]
    ref_newest = at_ref[max(at_ref)] if at_ref else None
    if git is None:
        new_numbers = numbers[-1:]  # the tree alone: the newest version is the change
    else:  # every version added since the ref
        new_numbers = [n for n in numbers if n > max(released or {0: ""})]
    pairs = [(tree[n], tree[o]) for n in new_numbers
             for o in sub.mode.baseline([m for m in numbers if m < n])]
    if ref_newest is not None and sub.mode.directions:
        pairs.append((newest, ref_newest))
    done: set[tuple[str, str]] = set()
    for new, old in pairs:
        key = (new.resolution_key, old.resolution_key)
        if key not in done and key[0] != key[1]:
            done.add(key)
            _compare(sub, new, old)
    if usage is not None:
        baseline = ref_newest or (tree[numbers[-2]] if len(numbers) > 1 else None)
        _check_features(sub, baseline, newest, usage)
    return sub


def check_repository(root: Path | str = ".", against: str | None = None, *,
                     usage: FieldUsageMap | None = None, usage_source: str = "given",
                     usage_provider: Callable[[], FieldUsage] = load_field_usage) -> CheckReport:
    """Run the schema check on a repository.

    Args:
        root: the repository root (holding ``schemas/avro`` and ``schemas/compatibility.yaml``).
        against: a git ref to compare with (e.g. ``origin/main``), or None for the tree alone.
        usage: the field usage of the features; when None, ``usage_provider`` is asked.
        usage_source: where ``usage`` comes from, for the report.
        usage_provider: returns the field usage or a note why there is none.

    Raises:
        SchemaError: a schema file in the tree is unreadable or invalid.
        ConfigError: the mode configuration is invalid, or the git ref cannot be read.
    """
    base = Path(root)
    store = SchemaStore.load(base / SCHEMA_DIR)
    subjects = store.subjects()
    modes = load_mode_config(base / "schemas" / CONFIG_FILE, subjects)
    report = CheckReport(str(base), against)
    git = GitRef(base, against) if against else None
    released = git.versions() if git else {}
    if usage is None:
        provided = usage_provider()
        usage, usage_source = provided.usage, provided.source
        if provided.note:
            report.notes.append(provided.note)
    report.usage_source = usage_source if usage is not None else None
    if usage is not None:
        for name in sorted(set(usage) - set(subjects)):
            report.notes.append(f"field usage names subject {name!r}, which has no schemas")

    for subject in sorted(set(subjects) | set(released)):
        if subject not in subjects:
            report.subjects.append(SubjectReport(subject, modes.mode_for(subject), [],
                                                 sorted(released[subject]), problems=[Problem(
                subject, "deleted_release",
                f"subject {subject} exists at {against} but its schemas were deleted; records "
                "already written with them can no longer be decoded.",
                f"restore {SCHEMA_DIR / subject} (git checkout {against} -- <path>)",
                str(SCHEMA_DIR / subject), "version.deleted")]))
            continue
        report.subjects.append(_check_subject(
            SubjectReport(subject, modes.mode_for(subject), []), store, git,
            released.get(subject), usage, report.notes))
    return report
