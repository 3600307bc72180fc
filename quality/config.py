"""Settings of the quality gate: thresholds, actions, micro-batch bounds, where results go.

:class:`GateConfig` is a frozen pydantic model, so it can be embedded as a section of
the pipeline's settings or built on its own with :meth:`GateConfig.from_mapping`,
which turns validation errors into a :class:`~pipelines.errors.ConfigError` that
names the file, the key and the fix.

>>> cfg = GateConfig.from_mapping({"views": {"user_features": {"action": "block"}}})
>>> cfg.policy("user_features").action, cfg.policy("seller_features").action
('block', 'warn')
>>> cfg.policy("user_features").threshold
0.05
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.errors import ConfigError
from quality.rows import HOUR_MS, RowRules

Action = Literal["warn", "block"]
DEFAULT_RESULTS_DIR = Path(".livefeat/quality")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ViewPolicy(_Model):
    """Per-view overrides; a field left unset takes the gate-wide value."""

    action: Action | None = None
    threshold: float | None = Field(default=None, gt=0, lt=1)
    min_rows: int | None = Field(default=None, ge=1)
    batch_max_rows: int | None = Field(default=None, ge=1)
    batch_max_ms: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class ResolvedPolicy:
    """What the gate does for one view (overrides applied)."""

    view: str
    action: Action
    threshold: float
    min_rows: int
    batch_max_rows: int
    batch_max_ms: int


class GateConfig(_Model):
    """Quality gate settings.

    Attributes:
        drift_threshold: a column drifts when a drift measure exceeds this (and the
            batch's noise margin); 0.05 = 5 %. See docs/quality.md for the measures.
        action: what a failed feature batch triggers unless the view overrides it:
            ``warn`` (materialize, record, alert) or ``block`` (hold in quarantine,
            record, alert; ``livefeat quality release`` hands it back).
        views: per-view overrides (action, threshold, min_rows, batch bounds).
        min_rows: feature batches with fewer rows are checked for integrity only;
            drift is not judged (the verdict says so).
        batch_max_rows: a feature micro-batch closes at this many rows...
        batch_max_ms: ...or when its event times span this many milliseconds.
        results_dir: where validation results, held and released batches are stored;
            None means :data:`DEFAULT_RESULTS_DIR` (the pipeline's settings resolve it
            to ``<stack.state_dir>/quality``). See :attr:`results_path`.
        currencies: ISO 4217 codes accepted by the row rules.
        max_future_ms: how far an event time may lie ahead of the watermark.
    """

    drift_threshold: float = Field(default=0.05, gt=0, lt=1)
    action: Action = "warn"
    views: dict[str, ViewPolicy] = Field(default_factory=dict)
    min_rows: int = Field(default=1000, ge=1)
    batch_max_rows: int = Field(default=5000, ge=1)
    batch_max_ms: int = Field(default=60_000, ge=1)
    results_dir: Path | None = None
    currencies: frozenset[str] = frozenset({"USD"})
    max_future_ms: int = Field(default=HOUR_MS, ge=0)

    @field_validator("currencies")
    @classmethod
    def _iso_codes(cls, value: frozenset[str]) -> frozenset[str]:
        if not value:
            raise ValueError("at least one currency is needed, e.g. [USD]")
        wrong = sorted(c for c in value if not _CURRENCY.match(c))
        if wrong:
            raise ValueError(f"{wrong} are not ISO 4217 codes (three capital letters, e.g. USD)")
        return value

    def policy(self, view: str) -> ResolvedPolicy:
        """The action, threshold, minimum batch size and batch bounds for ``view``."""
        own = self.views.get(view, ViewPolicy())
        return ResolvedPolicy(
            view=view,
            action=own.action or self.action,
            threshold=own.threshold if own.threshold is not None else self.drift_threshold,
            min_rows=own.min_rows or self.min_rows,
            batch_max_rows=own.batch_max_rows or self.batch_max_rows,
            batch_max_ms=own.batch_max_ms or self.batch_max_ms,
        )

    def input_policy(self, topic: str, defaults: Mapping[str, int] | None = None) -> ResolvedPolicy:
        """The policy of a topic's events suite (input drift): as :meth:`policy`, but the
        action is always ``warn``: by the time a batch of events is judged, its events
        have been applied to the features, so holding them would hold nothing back.
        ``defaults``: batch bounds the suite sets (``SuiteFile.batch_defaults``), used
        where ``views.<topic>`` leaves them unset.

        Raises:
            ConfigError: ``views.<topic>.action`` asks for ``block``.
        """
        own = self.views.get(topic)
        if own is not None and own.action == "block":
            raise ConfigError(
                f"events of {topic} cannot be blocked: by the time their batch is judged "
                "they have been applied to the features",
                where=f"quality.views.{topic}.action",
                fix="use warn (record and alert), or block the feature views they feed",
            )
        set_here = own or ViewPolicy()
        given = defaults or {}
        return replace(
            self.policy(topic),
            action="warn",
            min_rows=set_here.min_rows or given.get("min_rows") or self.min_rows,
            batch_max_rows=set_here.batch_max_rows or self.batch_max_rows,
            batch_max_ms=set_here.batch_max_ms or given.get("batch_max_ms") or self.batch_max_ms,
        )

    @property
    def results_path(self) -> Path:
        """Where results go: ``results_dir``, or :data:`DEFAULT_RESULTS_DIR` when unset."""
        return self.results_dir if self.results_dir is not None else DEFAULT_RESULTS_DIR

    def row_rules(self) -> RowRules:
        """The plain-Python row rules with the same currencies and future bound."""
        return RowRules(currencies=self.currencies, max_future_ms=self.max_future_ms)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "quality") -> GateConfig:
        """Validate a mapping (e.g. the ``quality`` section of a YAML file).

        Args:
            data: the settings; None means all defaults.
            where: how to name the source in errors, e.g. ``"livefeat.yaml, key quality"``.

        Raises:
            ConfigError: a key is unknown or a value is out of range.
        """
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                fix = f"remove or rename `{loc}`; docs/quality.md lists the valid keys"
            elif first["type"].startswith("literal_error"):
                fix = f"set `{loc}` to warn or block"
            else:
                fix = f"correct `{loc}` (see docs/quality.md, Configuration)"
            raise ConfigError(first["msg"], where=f"{where}.{loc}", fix=fix) from exc
