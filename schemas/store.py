"""Every Avro schema version kept in ``schemas/avro``, parsed once and indexed by fingerprint.

Layout on disk: ``schemas/avro/<subject>/v<N>.avsc``. A subject is the Kafka
topic the records travel on (``livestream.bid_placed``); versions are numbered
from 1 with no gaps. The fingerprint of a version is the CRC-64-AVRO of its
Parsing Canonical Form, as Avro single-object encoding uses it.

>>> store = SchemaStore.load()
>>> store.latest("livestream.bid_placed").name
'livefeat.livestream.BidPlaced'
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from pipelines.errors import SchemaError

DEFAULT_ROOT = Path(__file__).resolve().parent / "avro"
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")

# CRC-64-AVRO (Rabin fingerprint), as defined in the Avro specification.
_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit CRC-64-AVRO fingerprint of ``data``, as an unsigned int."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any) -> str:
    """The Avro Parsing Canonical Form of a schema given as parsed JSON."""
    return str(to_parsing_canonical_form(schema))


def strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` annotations.

    The pipeline carries timestamps as epoch milliseconds (ints); reading the
    underlying ``long`` directly is faster than building datetimes and gives
    the same bytes, fingerprint and canonical form.
    """
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    """One kept version of a subject's schema."""

    subject: str
    version: int
    path: Path
    schema: Any = field(repr=False)
    parsed: Any = field(repr=False, compare=False)
    canonical: str = field(repr=False)
    fingerprint: int

    @property
    def name(self) -> str:
        """Full name of the top-level named type (e.g. ``livefeat.livestream.BidPlaced``)."""
        return str(self.parsed.get("name", "")) if isinstance(self.parsed, dict) else ""

    @property
    def fingerprint_bytes(self) -> bytes:
        """The fingerprint as single-object encoding writes it: 8 bytes, little-endian."""
        return self.fingerprint.to_bytes(8, "little")

    @property
    def field_names(self) -> list[str]:
        """Names of the top-level record's fields (empty for non-records)."""
        if isinstance(self.schema, dict):
            return [f["name"] for f in self.schema.get("fields", [])]
        return []


def build_version(subject: str, version: int, schema: Any, path: Path) -> SchemaVersion:
    """Parse and fingerprint one schema. Raises :class:`SchemaError` when it is not valid Avro."""
    try:
        # A fresh named-type namespace per version: v1 and v2 of a subject
        # define the same record name and must not collide.
        parsed = parse_schema(strip_logical_types(copy.deepcopy(schema)), named_schemas={})
        canonical = canonical_form(schema)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise SchemaError(
            f"not a valid Avro schema: {exc}",
            where=str(path),
            fix="check the schema against the Avro specification",
        ) from exc
    return SchemaVersion(
        subject=subject,
        version=version,
        path=path,
        schema=schema,
        parsed=parsed,
        canonical=canonical,
        fingerprint=crc64_avro(canonical.encode()),
    )


def load_schema_file(path: Path) -> Any:
    """Read a ``.avsc`` file as JSON, raising :class:`SchemaError` with the path on failure."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(
            f"cannot read schema: {exc}", where=str(path), fix="fix the JSON"
        ) from exc


class SchemaStore:
    """All kept versions of all subjects, with a fingerprint index."""

    def __init__(self, versions: list[SchemaVersion], root: Path) -> None:
        self.root = root
        self._by_subject: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: (v.subject, v.version)):
            self._by_subject.setdefault(v.subject, []).append(v)
            other = self._by_fingerprint.get(v.fingerprint_bytes)
            if other is not None and other.subject != v.subject:
                raise SchemaError(
                    f"same fingerprint as {other.path}; two subjects cannot share one schema",
                    where=str(v.path),
                    fix="give each subject its own record name",
                )
            self._by_fingerprint.setdefault(v.fingerprint_bytes, v)

    @classmethod
    def load(cls, root: Path | str | None = None) -> SchemaStore:
        """Load every ``<subject>/v<N>.avsc`` under ``root`` (default: the shipped schemas)."""
        base = Path(root) if root is not None else DEFAULT_ROOT
        if not base.is_dir():
            raise SchemaError("schema directory not found", where=str(base), fix="create it")
        versions = []
        for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            numbered = []
            for path in sorted(subject_dir.glob("*.avsc")):
                match = _VERSION_FILE.match(path.name)
                if not match:
                    raise SchemaError(
                        "schema file name must be v<N>.avsc",
                        where=str(path),
                        fix=f"rename it, e.g. {subject_dir / 'v1.avsc'}",
                    )
                numbered.append((int(match.group(1)), path))
            numbered.sort()
            expected = list(range(1, len(numbered) + 1))
            if [n for n, _ in numbered] != expected:
                raise SchemaError(
                    "versions must be numbered 1..N without gaps, "
                    f"found {[n for n, _ in numbered]}",
                    where=str(subject_dir),
                    fix="rename the files so that versions are consecutive",
                )
            for number, path in numbered:
                versions.append(
                    build_version(subject_dir.name, number, load_schema_file(path), path)
                )
        return cls(versions, base)

    def subjects(self) -> list[str]:
        """Subject names, sorted."""
        return sorted(self._by_subject)

    def versions(self, subject: str) -> list[SchemaVersion]:
        """All versions of ``subject``, oldest first."""
        try:
            return list(self._by_subject[subject])
        except KeyError:
            raise SchemaError(
                f"unknown subject {subject!r}",
                where=str(self.root),
                fix=f"use one of {', '.join(self.subjects())} or add {subject}/v1.avsc",
            ) from None

    def get(self, subject: str, version: int | None = None) -> SchemaVersion:
        """A version of ``subject`` (the newest when ``version`` is None)."""
        versions = self.versions(subject)
        if version is None:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        raise SchemaError(
            f"subject {subject!r} has no version {version}",
            where=str(self.root / subject),
            fix=f"use one of {[v.version for v in versions]}",
        )

    def latest(self, subject: str) -> SchemaVersion:
        """The newest version of ``subject``."""
        return self.get(subject)

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version whose 8-byte little-endian fingerprint this is, or None."""
        return self._by_fingerprint.get(fingerprint)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for subject in self.subjects():
            yield from self._by_subject[subject]
