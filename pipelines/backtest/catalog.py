"""What a rule can read: every feature of a pipeline, with its view, key, type and empty value.

Stored features come from the views' changelogs. Read-time features (declared
in :attr:`Pipeline.read_time_features`) are not stored: a read-time feature
derived from a timestamp feature is the *age in days* at the labelled event's
time, ``(t - stored) / 86,400,000`` as a float (null when the stored value is
null). That is how ``user_account_age_days`` is defined in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.errors import DefinitionError
from pipelines.features.definitions import DAY_MS, Pipeline, ValueType
from pipelines.features.engine import ViewEngine

__all__ = ["DAY_MS", "FeatureRef", "feature_catalog"]


@dataclass(frozen=True)
class FeatureRef:
    """One feature a rule may name.

    Attributes:
        name: feature name.
        view: the feature view (and changelog dataset ``features/<view>``) holding it.
        key: the view's entity key column (``user_id``, ``seller_id``, ``stream_id``).
        value_type: type of the value as rules see it.
        empty: the value for an entity with no history (0 for counts and sums, else None).
        derived_from: for a read-time feature, the stored timestamp feature it is computed
            from; None for stored features.
    """

    name: str
    view: str
    key: str
    value_type: ValueType
    empty: Any
    derived_from: str | None = None

    @property
    def stored(self) -> str:
        """The stored feature whose changelog column the value comes from."""
        return self.derived_from or self.name


def feature_catalog(pipeline: Pipeline) -> dict[str, FeatureRef]:
    """Every feature of ``pipeline`` that a rule may name, stored and read-time.

    Raises:
        DefinitionError: a read-time feature is declared over a view or feature that does
            not exist, or over a stored feature that is not a timestamp.
    """
    out: dict[str, FeatureRef] = {}
    for view in pipeline.views:
        empty = ViewEngine(view).empty_values()
        for feature, value in zip(view.features, empty, strict=True):
            out[feature.name] = FeatureRef(
                feature.name, view.name, view.entity.join_key, feature.value_type, value
            )
    for view_name, name, stored in pipeline.read_time_features:
        base = out.get(stored)
        where = f"pipeline {pipeline.name}, read-time feature {name}"
        if base is None or base.view != view_name:
            raise DefinitionError(
                f"derives from {stored!r}, which is not a feature of view {view_name!r}",
                where=where,
                fix="name a stored timestamp feature of the same view",
            )
        if base.value_type != "timestamp":
            raise DefinitionError(
                f"derives from {stored!r} of type {base.value_type}; read-time features are "
                "ages in days and need a timestamp",
                where=where,
                fix="derive it from a timestamp feature",
            )
        out[name] = FeatureRef(name, view_name, base.key, "float64", None, derived_from=stored)
    return out
