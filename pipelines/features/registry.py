"""Find pipelines by name and describe which schema fields their features read.

A pipeline is named ``marketplace`` (a module in :mod:`pipelines.jobs` with a
``PIPELINE`` attribute) or ``package.module:ATTRIBUTE``.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

from pipelines.errors import DefinitionError
from pipelines.features.definitions import AsOf, Pipeline, Share

DEFAULT_PIPELINE = "marketplace"


def load_pipeline(name: str = DEFAULT_PIPELINE) -> Pipeline:
    """Import and return the pipeline called ``name``."""
    module_name, _, attr = name.partition(":")
    if "." not in module_name:
        module_name = f"pipelines.jobs.{module_name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise DefinitionError(
            f"pipeline module {module_name!r} not found ({exc})",
            where=f"pipeline {name}",
            fix="use `marketplace`, or `package.module:ATTRIBUTE` of an importable module",
        ) from exc
    pipeline = getattr(module, attr or "PIPELINE", None)
    if not isinstance(pipeline, Pipeline):
        raise DefinitionError(
            f"{module_name} has no Pipeline called {attr or 'PIPELINE'}",
            where=f"pipeline {name}",
            fix="define PIPELINE = Pipeline(...) in the module",
        )
    return pipeline


def field_usage(pipeline: Pipeline | None = None) -> dict[str, dict[str, list[str]]]:
    """``{subject: {field: [features reading it]}}`` for the schema impact check."""
    pipeline = pipeline or load_pipeline()
    usage: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for view in pipeline.views:
        for feature in view.features:
            comp = feature.compute
            if isinstance(comp, AsOf):
                cl = comp.changelog
                for f in (comp.field, cl.key_field, cl.timestamp_field):
                    usage[cl.subject][f].add(feature.name)
                continue
            src = comp.source
            fields = {view.key_field_for(src.name), src.timestamp_field}
            if comp.input_field:
                fields.add(comp.input_field)
            for pred in (comp.where, comp.numerator if isinstance(comp, Share) else None):
                if pred is not None:
                    fields |= set(pred.fields())
            for e in src.enrichments:
                fields.add(e.on)
                attached = dict(zip(e.attached(), e.fields, strict=True))
                for a, f in attached.items():
                    if a in fields:
                        fields.discard(a)
                        usage[e.changelog.subject][f].add(feature.name)
                        usage[e.changelog.subject][e.changelog.key_field].add(feature.name)
                        usage[e.changelog.subject][e.changelog.timestamp_field].add(feature.name)
            for f in fields:
                usage[src.subject][f].add(feature.name)
    return {s: {f: sorted(names) for f, names in fs.items()} for s, fs in usage.items()}
