"""Reference profiles: what each feature column looked like in a period judged normal.

A profile is a JSON file ``quality/profiles/<view>.json`` with, per measured column,
the statistics the drift measures compare against (see :mod:`quality.measures`) and
a noise table (the margin each measure shows between the reference and batches
drawn from it, per batch size). Build one with :func:`build_profile` from rows, or
with :func:`profile_from_offline` (``livefeat quality profile``) from a time range of
the offline store's changelog.

Which columns are measured, and how, comes from the view's feature suite
(``expect_column_to_not_drift`` expectations and their ``meta.kind``); without a
suite, booleans and strings are categorical, other numbers numeric, and columns
named ``*_at`` or ``*_timestamp`` are not measured.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ConfigError
from quality import measures
from quality.suites import SUITES_DIR, batch_suites, load_suite_files

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
"""The reference profiles shipped with livefeat."""

FORMAT_VERSION = 1
NATURAL_MIN_BATCHES = 5
"""Fewer reference batches than this give no natural margin (sampling noise only)."""
_META_COLUMNS = ("event_timestamp", "created_timestamp")


@dataclass(frozen=True)
class Profile:
    """The reference of one feature view.

    Attributes:
        view: feature view name.
        rows: number of changelog rows the profile was built from.
        columns: per measured column, its JSON-ready statistics (``kind`` first).
        source: where the rows came from (offline URI, time range), for people.
        built_at: ISO-8601 UTC time of the build.
    """

    view: str
    rows: int
    columns: dict[str, dict[str, Any]]
    source: dict[str, Any] = field(default_factory=dict)
    built_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to ``profiles/<view>.json``."""
        return {
            "format": FORMAT_VERSION,
            "view": self.view,
            "rows": self.rows,
            "built_at": self.built_at,
            "source": self.source,
            "columns": self.columns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "profile") -> Profile:
        """Parse a profile document.

        Raises:
            ConfigError: the document is not a livefeat profile of a known format.
        """
        if data.get("format") != FORMAT_VERSION or not isinstance(data.get("columns"), dict):
            raise ConfigError(
                f"not a livefeat profile of format {FORMAT_VERSION}",
                where=where,
                fix="rebuild it with `livefeat quality profile VIEW --from ... --to ...`",
            )
        return cls(
            view=str(data["view"]),
            rows=int(data.get("rows", 0)),
            columns={str(k): dict(v) for k, v in data["columns"].items()},
            source=dict(data.get("source") or {}),
            built_at=str(data.get("built_at", "")),
        )

    def save(self, path: Path) -> Path:
        """Write the profile (atomically) and return the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)
        return path


def _infer_kind(name: str, values: Sequence[Any] | np.ndarray) -> str | None:
    if name.endswith(("_at", "_timestamp")):
        return None
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, bool | str):
        return "categorical"
    if isinstance(sample, int | float):
        return "numeric"
    return None


def measured_columns(view: str, suites_dir: Path | None = None) -> dict[str, str] | None:
    """``{column: kind}`` from the batch suite of ``view`` (a feature view, or a topic
    with an events suite), or None when it has none."""
    directory = suites_dir or SUITES_DIR
    suites = load_suite_files(directory) if directory.is_dir() else {}
    suite = batch_suites(suites).get(view)
    return suite.drift_columns if suite else None


def _numeric_profile(values: np.ndarray, seed: int) -> dict[str, Any]:
    finite = values[~np.isnan(values)]
    null_share = float(1 - finite.size / values.size) if values.size else 0.0
    profile: dict[str, Any] = {
        "kind": "numeric",
        "rows": int(values.size),
        "null_share": null_share,
    }
    if finite.size:
        quantiles = measures.sample_quantiles(finite)
        scale = measures.reference_scale(quantiles)
        profile.update(
            mean=float(finite.mean()),
            min=float(finite.min()),
            max=float(finite.max()),
            scale=scale,
            quantiles=[float(q) for q in quantiles],
        )
        qs_noise = measures.noise_table(
            "quantile_shift", values=finite, ref_quantiles=quantiles, scale=scale, seed=seed
        )
    else:
        qs_noise = []
    profile["noise"] = {
        "quantile_shift": qs_noise,
        "null_share": measures.noise_table("null_share", null_share=null_share, seed=seed),
    }
    return profile


def _categorical_profile(values: Sequence[Any] | np.ndarray, seed: int) -> dict[str, Any]:
    shares = measures.category_shares(values)
    return {
        "kind": "categorical",
        "rows": len(values),
        "shares": shares,
        "noise": {
            "category_shift": measures.noise_table("category_shift", shares=shares, seed=seed)
        },
    }


def batch_bounds(
    times: np.ndarray, max_rows: int, max_span_ms: int, aligned: bool = False
) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the micro-batches :class:`~quality.batcher.MicroBatcher`
    would cut from rows with these (sorted) event times (``aligned``: tumbling windows)."""
    if aligned:
        window = times // max_span_ms
        cuts = [0, *(np.flatnonzero(np.diff(window)) + 1).tolist(), len(times)]
        return [(a, b) for a, b in pairwise(cuts) if b > a]
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or i - start >= max_rows or times[i] - times[start] >= max_span_ms:
            bounds.append((start, i))
            start = i
    return bounds


def _natural(
    out: dict[str, dict[str, Any]],
    data: dict[str, np.ndarray],
    times: np.ndarray,
    bounds: BatchBounds,
) -> dict[str, Any]:
    order = np.argsort(times, kind="stable")
    spans = [
        (a, b)
        for a, b in batch_bounds(times[order], bounds.max_rows, bounds.max_span_ms,
                                 bounds.aligned)
        if b - a >= bounds.min_rows
    ]
    info: dict[str, Any] = {**bounds.to_json(), "batches": len(spans)}
    if len(spans) < NATURAL_MIN_BATCHES:
        info["note"] = f"fewer than {NATURAL_MIN_BATCHES} reference batches: no natural margin"
        return info
    for name, entry in out.items():
        found: dict[str, list[float]] = {}
        for a, b in spans:
            got = measures.column_measures(data[name][order[a:b]], entry)
            for measure, m in got["measures"].items():
                found.setdefault(measure, []).append(float(m["value"]))
        entry["natural"] = {
            measure: round(float(np.mean(v) + measures.NOISE_SIGMAS * np.std(v)), 6)
            for measure, v in found.items()
        }
    return info


@dataclass(frozen=True)
class BatchBounds:
    """How the gate cuts micro-batches; the profile measures its reference the same way."""

    max_rows: int = 5000
    max_span_ms: int = 60_000
    min_rows: int = 1000
    aligned: bool = False
    """Tumbling event-time windows, as the gate cuts a topic's events (events suites)."""

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in the profile."""
        out: dict[str, Any] = {
            "batch_max_rows": self.max_rows,
            "batch_max_ms": self.max_span_ms,
            "min_rows": self.min_rows,
        }
        if self.aligned:
            out["aligned"] = True
        return out


def build_profile_from_columns(
    view: str,
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    kinds: Mapping[str, str] | None = None,
    source: Mapping[str, Any] | None = None,
    seed: int = 0,
    bounds: BatchBounds | None = None,
    time_field: str = "event_timestamp",
) -> Profile:
    """A profile from column-oriented data (see :func:`build_profile`); ``time_field``
    names the event-time column (epoch ms) the reference batches are cut by."""
    n = len(next(iter(columns.values()))) if columns else 0
    if kinds is None:
        kinds = measured_columns(view)
    if kinds is None:
        kinds = {
            name: kind
            for name, values in columns.items()
            if name not in _META_COLUMNS and (kind := _infer_kind(name, values)) is not None
        }
    out: dict[str, dict[str, Any]] = {}
    data: dict[str, np.ndarray] = {}
    for i, (name, kind) in enumerate(kinds.items()):
        values = columns.get(name)
        if values is None:
            continue
        if kind == "numeric":
            data[name] = measures.numeric_values(values)
            out[name] = _numeric_profile(data[name], seed + i)
        elif kind == "categorical":
            data[name] = np.asarray(values, dtype=object)
            out[name] = _categorical_profile(values, seed + i)
    info = dict(source or {})
    times = columns.get(time_field)
    if times is not None and n:
        info["natural"] = _natural(
            out, data, np.asarray(times, dtype=np.int64), bounds or BatchBounds()
        )
    return Profile(
        view=view,
        rows=n,
        columns=out,
        source=info,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def build_profile(
    view: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    kinds: Mapping[str, str] | None = None,
    source: Mapping[str, Any] | None = None,
    seed: int = 0,
    bounds: BatchBounds | None = None,
    time_field: str = "event_timestamp",
) -> Profile:
    """A reference profile from changelog rows (dicts as in docs/semantics.md), or from
    accepted events of a topic with an events suite (``time_field`` their event time).

    Args:
        view: the feature view.
        rows: reference rows; at least several thousand make a useful profile.
        kinds: ``{column: "numeric" | "categorical"}`` to measure; default: the
            view's feature suite, else inferred from the values.
        source: free-form description stored with the profile.
        seed: seed of the noise resampling (profiles are reproducible).
        bounds: how the gate will cut batches of this view; when the rows have
            ``event_timestamp``, the reference period is cut the same way and each
            column keeps a ``natural`` margin (see :mod:`quality.measures`).

    >>> p = build_profile("v", [{"k": "a", "x": i % 10, "ok": i % 3 == 0} for i in range(600)],
    ...                   kinds={"x": "numeric", "ok": "categorical"})
    >>> p.columns["x"]["kind"], round(p.columns["ok"]["shares"]["true"], 3)
    ('numeric', 0.333)
    """
    names: dict[str, None] = {}
    for r in rows[:1000]:
        names.update(dict.fromkeys(r))
    columns = {name: [r.get(name) for r in rows] for name in names}
    return build_profile_from_columns(
        view, columns, kinds=kinds, source=source, seed=seed, bounds=bounds,
        time_field=time_field,
    )


def profile_from_offline(
    uri: str,
    view: str,
    from_ms: int,
    to_ms: int,
    *,
    key: str | None = None,
    s3_options: dict[str, Any] | None = None,
    kinds: Mapping[str, str] | None = None,
    bounds: BatchBounds | None = None,
    time_field: str | None = None,
) -> Profile:
    """A profile from the offline rows with ``from_ms <= event time < to_ms``.

    By default ``view`` is a feature view: its changelog is read, and rows written twice
    (replays) are deduplicated on (key, event_timestamp), keeping the earliest
    ``created_timestamp``, as every reader of the changelog does. With ``time_field``,
    ``view`` is a topic with an events suite: its accepted-event log is read, filtered
    on ``time_field``, and deduplicated on the Kafka position (``_partition``, ``_offset``).

    Raises:
        ConfigError: the store has no such changelog (or event log), or none in the range.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.sinks.parquet import read_dataset

    events = time_field is not None
    dataset = f"events/{view}" if events else f"features/{view}"
    what = "accepted-event log of this topic" if events else "changelog of this view"
    try:
        table = read_dataset(uri, dataset, s3_options)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no {what} in the offline store",
            where=f"{uri}/{dataset}",
            fix="check --offline-uri and the name, or run the pipeline first",
        ) from exc
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):  # epoch ms, whatever unit the file uses
            ms = table.column(i).cast(pa.timestamp("ms", f.type.tz)).cast(pa.int64())
            table = table.set_column(i, pa.field(f.name, pa.int64()), ms)
    field = time_field or "event_timestamp"
    ts = table.column(field)
    keep = pc.and_(pc.greater_equal(ts, from_ms), pc.less(ts, to_ms))
    table = table.filter(keep)
    if table.num_rows == 0:
        raise ConfigError(
            f"no {'accepted events' if events else 'changelog rows'} in the chosen time range",
            where=f"{uri}/{dataset}",
            fix="widen --from/--to; the range is [from, to) in event time",
        )
    frame = table.to_pandas()
    if events:
        frame = frame.drop_duplicates(subset=["_partition", "_offset"], keep="first")
        frame = frame.sort_values(field, kind="stable")
    else:
        key = key or table.schema.names[0]
        frame = frame.sort_values("created_timestamp", kind="stable").drop_duplicates(
            subset=[key, "event_timestamp"], keep="first"
        )
    columns: dict[str, Sequence[Any] | np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if series.dtype.kind in "fiu":
            columns[name] = series.to_numpy(dtype=np.float64)
        else:
            columns[name] = [None if _is_missing(v) else v for v in series.tolist()]
    source = {
        "offline_uri": uri,
        "dataset": dataset,
        "from": _iso(from_ms),
        "to": _iso(to_ms),
        "rows_read": len(frame),
    }
    return build_profile_from_columns(view, columns, kinds=kinds, source=source, bounds=bounds,
                                      time_field=field)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def load_profiles(directory: Path | None = None) -> dict[str, Profile]:
    """Every ``<view>.json`` profile of ``directory`` (default: the shipped ones), by view.

    Raises:
        ConfigError: a file is not a readable profile.
    """
    directory = directory or PROFILES_DIR
    out: dict[str, Profile] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"not a readable profile: {exc}",
                where=str(path),
                fix="rebuild it with `livefeat quality profile`",
            ) from exc
        profile = Profile.from_json(data, where=str(path))
        out[profile.view] = profile
    return out
