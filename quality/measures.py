"""Drift measures between a batch of feature values and a reference profile, and their noise.

Pure numpy; no Great Expectations here (the GX expectation in :mod:`quality.gx_drift`
calls these). Three measures, each in the unit of the threshold (a share, 0.05 = 5 %):

``quantile_shift`` (numeric columns, non-null values)
    The mean absolute difference between the batch's and the reference's quantile
    functions over the central 98 % (u from 0.01 to 0.99), divided by the
    reference's mean absolute quantile. Both quantile functions are the data's own
    values (inverted CDF, no interpolation), compared at 980 evenly spaced levels;
    the profile keeps the reference's 980 quantiles. Multiplying
    every value by 1.2 gives 0.20; adding a constant c gives c / scale. It is the
    Wasserstein-1 distance of the trimmed distributions in units of the
    reference's typical value: it sees shifts of location and of spread, works for
    small integer counts (where single quantiles jump), and the top and bottom 1 %
    of a batch are ignored, so a few outliers barely move it.
``null_share`` (numeric columns)
    The absolute difference of the share of nulls (means and ratios of empty
    windows are null), in percentage points.
``category_shift`` (bool and string columns; null is a category)
    Total variation distance: half the sum of absolute differences of category
    shares, i.e. the share of rows that would have to change category. Unlike PSI
    it is bounded, defined when a category is missing from the batch, and in the
    same unit as the other two.

Noise: a measure between a batch and the reference is not 0 even when nothing
changed. Two margins bound what "nothing changed" looks like:

* sampling noise, which shrinks like 1/sqrt(n): :func:`noise_table` estimates, by
  resampling the reference rows, mean + 4 standard deviations of the measure for a
  few batch sizes, and :func:`margin_at` interpolates it;
* natural variation: changelog rows of one minute are not a random sample (they
  come from the few entities active in that minute, e.g. the shows on air), so
  when the reference rows carry event times the profile also cuts the reference
  period into batches like the gate's and keeps mean + 4 standard deviations of
  their measures (``natural``).

A measure counts as drift only when it exceeds the threshold and both margins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GRID = 0.01 + (np.arange(980) + 0.5) * (0.98 / 980)
"""Levels at which ``quantile_shift`` compares the two quantile functions: fine enough
that, for small integer counts, one level flipping from 0 to 1 moves the measure by
only 1/980 of the step (single quantiles of counts jump; this integral does not)."""

NOISE_SIZES: tuple[int, ...] = (200, 500, 1000, 2000, 5000, 10_000, 20_000)
"""Batch sizes at which the noise margin is estimated when a profile is built."""

NOISE_REPLICATES = 200
NOISE_SIGMAS = 4.0
NULL = "<null>"
"""Category name of a null value in categorical shares."""


def numeric_values(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Values as float64 with nulls as NaN (booleans are not numeric here)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def category_key(value: Any) -> str:
    """The category a value counts in (``<null>`` for None and NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NULL
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def category_shares(values: Sequence[Any] | np.ndarray) -> dict[str, float]:
    """Share of each category among ``values`` (empty input: no shares).

    >>> category_shares([True, False, True, None])
    {'<null>': 0.25, 'false': 0.25, 'true': 0.5}
    """
    counts: dict[str, int] = {}
    for v in values:
        k = category_key(v)
        counts[k] = counts.get(k, 0) + 1
    total = sum(counts.values())
    return {k: c / total for k, c in sorted(counts.items())} if total else {}


def reference_curve(ref_quantiles: Sequence[float] | np.ndarray) -> np.ndarray:
    """The reference quantile function at :data:`GRID` (a profile keeps exactly these;
    other lengths are taken as evenly spaced levels over the same range and interpolated)."""
    q = np.asarray(ref_quantiles, dtype=np.float64)
    if q.size == GRID.size:
        return q
    return np.interp(GRID, np.linspace(GRID[0], GRID[-1], q.size), q)


def sample_quantiles(finite: np.ndarray) -> np.ndarray:
    """The empirical quantile function of non-null values at :data:`GRID` (inverted CDF)."""
    ordered = np.sort(finite)
    idx = np.ceil(GRID * ordered.size).astype(np.int64) - 1
    return ordered[np.clip(idx, 0, ordered.size - 1)]


def reference_scale(ref_quantiles: Sequence[float] | np.ndarray) -> float:
    """Denominator of ``quantile_shift``: mean |quantile| of the reference (1.0 if all zero)."""
    scale = float(np.mean(np.abs(reference_curve(ref_quantiles))))
    return scale if scale > 0 else 1.0


def quantile_shift(values: np.ndarray, ref_curve: np.ndarray, scale: float) -> float | None:
    """Relative trimmed Wasserstein-1 distance (see module doc); None without values.

    Args:
        values: the batch's values (NaN for null).
        ref_curve: :func:`reference_curve` of the profile's quantiles.
        scale: :func:`reference_scale` of the profile's quantiles.

    >>> ref = np.linspace(1.0, 100.0, 10_001)
    >>> q = sample_quantiles(ref)
    >>> round(quantile_shift(ref * 1.2, reference_curve(q), reference_scale(q)), 3)
    0.2
    """
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None
    return float(np.mean(np.abs(sample_quantiles(finite) - ref_curve)) / scale)


def null_share_shift(values: np.ndarray, ref_null_share: float) -> float:
    """|null share of the batch - null share of the reference|."""
    if values.size == 0:
        return 0.0
    return abs(float(np.isnan(values).mean()) - ref_null_share)


def category_shift(shares: Mapping[str, float], ref_shares: Mapping[str, float]) -> float:
    """Total variation distance between two category share maps."""
    keys = set(shares) | set(ref_shares)
    return 0.5 * sum(abs(shares.get(k, 0.0) - ref_shares.get(k, 0.0)) for k in keys)


def _margin(samples: list[float]) -> float:
    arr = np.asarray(samples, dtype=np.float64)
    return float(arr.mean() + NOISE_SIGMAS * arr.std())


def noise_table(
    kind: str,
    *,
    values: np.ndarray | None = None,
    ref_quantiles: np.ndarray | None = None,
    scale: float = 1.0,
    null_share: float = 0.0,
    shares: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[list[float]]:
    """``[[batch size, margin], ...]`` of one measure, by resampling the reference.

    Args:
        kind: ``quantile_shift`` (needs ``values``, the reference's non-null values,
            ``ref_quantiles`` and ``scale``), ``null_share`` (needs ``null_share``) or
            ``category_shift`` (needs ``shares``).
        seed: the resampling is deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    table: list[list[float]] = []
    for n in NOISE_SIZES:
        if kind == "quantile_shift":
            if values is None or ref_quantiles is None:
                raise ValueError("quantile_shift noise needs values and ref_quantiles")
            if values.size == 0:
                return []
            curve = reference_curve(ref_quantiles)
            reps = NOISE_REPLICATES if n <= 5000 else NOISE_REPLICATES // 2
            samples = [
                float(np.mean(np.abs(sample_quantiles(rng.choice(values, n)) - curve))) / scale
                for _ in range(reps)
            ]
        elif kind == "null_share":
            draws = rng.binomial(n, null_share, NOISE_REPLICATES) / n
            samples = list(np.abs(draws - null_share))
        elif kind == "category_shift":
            if not shares:
                return []
            names = list(shares)
            p = np.array([shares[k] for k in names], dtype=np.float64)
            p = p / p.sum()
            draws = rng.multinomial(n, p, NOISE_REPLICATES) / n
            samples = list(0.5 * np.abs(draws - p).sum(axis=1))
        else:
            raise ValueError(f"unknown measure {kind!r}")
        table.append([float(n), round(_margin(samples), 6)])
    return table


def margin_at(table: Sequence[Sequence[float]], n: int) -> float:
    """Noise margin at batch size ``n``: log-log interpolation, 1/sqrt(n) beyond the table."""
    if not table or n <= 0:
        return math.inf if n <= 0 else 0.0
    sizes = [float(row[0]) for row in table]
    margins = [max(float(row[1]), 1e-12) for row in table]
    if n <= sizes[0]:
        return margins[0] * math.sqrt(sizes[0] / n)
    if n >= sizes[-1]:
        return margins[-1] * math.sqrt(sizes[-1] / n)
    x = math.log(n)
    for (s0, m0), (s1, m1) in zip(
        zip(sizes, margins, strict=True), zip(sizes[1:], margins[1:], strict=True), strict=False
    ):
        if s0 <= n <= s1:
            w = (x - math.log(s0)) / (math.log(s1) - math.log(s0))
            return math.exp(math.log(m0) + w * (math.log(m1) - math.log(m0)))
    return margins[-1]


def column_measures(
    column_values: Any, reference: dict[str, Any] | None, shares: dict[str, float] | None = None
) -> dict[str, Any]:
    """Drift measures of a batch's column against its profile entry, with noise margins.

    The margin of a measure is the larger of the resampling margin at the batch's
    size (:func:`margin_at` of the entry's ``noise`` table) and the entry's
    ``natural`` margin (how much the reference period's own batches moved).

    Args:
        column_values: the batch's values of the column (nulls as None or NaN).
        reference: the column's entry of the profile.
        shares: category shares of the values, when already counted.

    Returns:
        ``{"rows": n, "measures": {name: {"value", "margin", "n"}}, "note": str}``;
        a measure that cannot be computed (no reference, no values) is left out and
        the note says why.
    """
    values = list(column_values) if not isinstance(column_values, np.ndarray) else column_values
    n = len(values)
    out: dict[str, Any] = {"rows": n, "measures": {}, "note": ""}
    if not reference or reference.get("kind") not in ("numeric", "categorical"):
        out["note"] = "no reference for this column in the profile"
        return out
    noise = reference.get("noise") or {}

    def natural(name: str) -> float:
        return float((reference.get("natural") or {}).get(name) or 0.0)

    found: dict[str, dict[str, float]] = out["measures"]
    if reference["kind"] == "numeric":
        arr = numeric_values(values)
        non_null = int((~np.isnan(arr)).sum())
        found["null_share"] = {
            "value": null_share_shift(arr, float(reference.get("null_share", 0.0))),
            "margin": max(margin_at(noise.get("null_share", []), n), natural("null_share")),
            "n": n,
        }
        quantiles = reference.get("quantiles")
        if quantiles and non_null:
            value = quantile_shift(
                arr, reference_curve(quantiles), float(reference.get("scale", 1.0))
            )
            found["quantile_shift"] = {
                "value": float(value or 0.0),
                "margin": max(
                    margin_at(noise.get("quantile_shift", []), non_null), natural("quantile_shift")
                ),
                "n": non_null,
            }
        elif not non_null:
            out["note"] = "no non-null values in the batch"
    else:
        if shares is None:
            shares = category_shares(values)
        found["category_shift"] = {
            "value": category_shift(shares, reference.get("shares") or {}),
            "margin": max(
                margin_at(noise.get("category_shift", []), n), natural("category_shift")
            ),
            "n": n,
        }
    return out
