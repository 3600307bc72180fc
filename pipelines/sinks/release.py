"""Write released quality-gate batches to the stores, as the stream's sinks would have.

A ``block`` verdict keeps a micro-batch of changelog rows out of the stores
(``held/<view>/<batch_id>.json`` under the gate's results directory, see
:mod:`quality.results`). When a person releases it, :class:`ReleaseWriter` writes its
rows through the configured stores, the same writers the streaming job uses:

* **offline**: the view's changelog ``features/<view>`` of ``offline_store.uri`` (local
  directory or ``s3://``), one atomic Parquet file per date/hour partition
  (:func:`pipelines.sinks.s3.offline_sink`). Rows keep their ``event_timestamp``;
  ``created_timestamp`` becomes the time they are written (fixed once per batch, see
  :meth:`quality.results.ResultStore.write_stamp`).
* **online** (when ``online_store.enabled``): the newest row per entity, through
  :class:`pipelines.sinks.online.OnlineSink`, whose stores write a value only when its
  event time (ms) is later than the stored one: a released row never replaces a newer
  value the stream (or another release) wrote.

Then the batch is marked materialized. Every step can be repeated: a release
interrupted after writing and before marking is finished by running it again, which
writes the same rows with the same ``created_timestamp`` (the offline changelog allows
duplicates of identical rows; readers deduplicate) and lets the online store keep what
is newer.

>>> from pipelines.config import Settings
>>> writer = ReleaseWriter(Settings())   # opens the stores on first write
>>> writer.pipeline.name
'marketplace'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.errors import DefinitionError, LivefeatError
from pipelines.features.definitions import FeatureView, Pipeline
from pipelines.features.registry import DEFAULT_PIPELINE, load_pipeline
from pipelines.sinks.base import Sink
from pipelines.sinks.tables import changelog_schema
from quality.results import ResultStore, StoredBatch


@dataclass(frozen=True)
class Materialized:
    """What releasing one batch did.

    Attributes:
        view: the feature view.
        batch_id: the batch.
        rows: changelog rows written to the offline store.
        created_ms: their ``created_timestamp`` (epoch ms).
        online_entities: entity values sent to the online store (newest row per entity;
            0 when the online store is disabled).
        online_applied: of those, the ones the store took (the others were not newer
            than what it holds).
        resumed: the batch had been released before and its writing had not finished.
        skipped: the batch was materialized already; nothing was written.
        path: where its file is now.
    """

    view: str
    batch_id: str
    rows: int
    created_ms: int | None
    online_entities: int
    online_applied: int
    resumed: bool
    skipped: bool
    path: Path


class ReleaseWriter:
    """Releases held batches and writes their rows to the offline and online stores.

    Args:
        settings: the stores (``offline_store``, ``online_store``, ``s3``) and, unless
            ``results_dir`` is given, the gate's results directory.
        pipeline: the pipeline whose views the batches belong to (name or definitions;
            default ``marketplace``).
        results_dir: the gate's results directory (default: ``quality.results_dir``,
            else ``<stack.state_dir>/quality``).
        online_project: Feast project of the online store (default: from the settings).
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline | str = DEFAULT_PIPELINE,
        *,
        results_dir: Path | None = None,
        online_project: str | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = load_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        root = results_dir or settings.quality.results_in(settings.stack.state_dir)
        self.store = ResultStore(root)
        self.online_project = online_project
        self._offline: Sink | None = None
        self._online: Any = None

    # -- what to release ---------------------------------------------------------------
    def view(self, name: str, batch_id: str = "") -> FeatureView:
        """The pipeline's view ``name``.

        Raises:
            DefinitionError: the pipeline has no such view.
        """
        try:
            return self.pipeline.view(name)
        except KeyError:
            raise DefinitionError(
                f"batch {batch_id} belongs to view {name}, which pipeline "
                f"{self.pipeline.name} does not define",
                where=f"{self.store.root}",
                fix="pass the pipeline that produced it with --pipeline NAME (views of "
                f"{self.pipeline.name}: {', '.join(v.name for v in self.pipeline.views)})",
            ) from None

    def release(self, batch_id: str, view: str | None = None, by: str = "") -> Materialized:
        """Release ``batch_id`` and write it; finish an earlier release that did not end.

        A batch in ``held/`` is released (recorded with ``by``) and written; one in
        ``released/`` (an earlier release stopped before marking it) is written again
        and marked; one in ``materialized/`` is left alone (``skipped``).

        Raises:
            LivefeatError: no batch has this id (the message names held ones), or several
                views have one and ``view`` is not given.
            SinkError: a store could not be written (after the sinks' own retries); the
                batch stays released and a new run of the command finishes it.
        """
        found = self.store.find(batch_id, view)
        if not found:
            raise self.store.unknown_batch(batch_id, view)
        views = sorted({b.view for b in found})
        if len(views) > 1:
            raise LivefeatError(
                f"views {views} each have a batch with this id",
                where=f"{self.store.root}, batch {batch_id}",
                fix="name the view with --view",
            )
        held = [b for b in found if b.state == "held"]
        released = [b for b in found if b.state == "released"]
        if held:
            self.view(held[0].view, batch_id)  # a batch of an unknown view stays held
            # (an interrupted earlier release of it is finished by ResultStore.release)
            return self.write(self.store.release(batch_id, view=views[0], by=by),
                              resumed=bool(released))
        if released:
            return self.write(released[0], resumed=True)
        done = found[0]
        return Materialized(done.view, done.batch_id, 0, done.info.get("written_at_ms"), 0, 0,
                            resumed=False, skipped=True, path=done.path)

    def release_all(
        self,
        view: str | None = None,
        by: str = "",
        progress: Callable[[int, int, Materialized], None] | None = None,
    ) -> list[Materialized]:
        """Finish every unfinished release, then release and write every held batch.

        Batches go in order of their first event time. ``progress(i, n, done)`` is called
        after each batch.
        """
        held = self.store.held(view)
        twins = {(b.view, b.batch_id) for b in held}
        # A batch both held and released is an interrupted release: ResultStore.release
        # finishes it when its held copy comes up.
        pending = [b for b in self.store.pending_releases(view)
                   if (b.view, b.batch_id) not in twins]
        for batch in held + pending:
            self.view(batch.view, batch.batch_id)  # fail before writing anything

        def order(b: StoredBatch) -> tuple[Any, ...]:
            first = min((int(r["event_timestamp"]) for r in b.rows), default=0)
            return (first, b.view, b.batch_id)

        todo = sorted(pending, key=order) + sorted(held, key=order)
        out = []
        for i, batch in enumerate(todo, start=1):
            if batch.state == "held":
                done = self.write(self.store.release(batch.batch_id, batch.view, by=by))
            else:
                done = self.write(batch, resumed=True)
            out.append(done)
            if progress is not None:
                progress(i, len(todo), done)
        return out

    # -- writing -------------------------------------------------------------------------
    def write(self, batch: StoredBatch, *, resumed: bool = False,
              mark: bool = True) -> Materialized:
        """Write a released batch to the stores and (``mark``) mark it materialized."""
        definition = self.view(batch.view, batch.batch_id)
        created = self.store.write_stamp(batch)
        rows = [{**r, "created_timestamp": created} for r in batch.rows]
        dataset = f"features/{definition.name}"
        schema = changelog_schema(definition)
        self._offline_sink().write(dataset, schema, rows)
        entities = applied = 0
        if self.settings.online_store.enabled:
            online = self._online_sink()
            before = (online.stats.entities, online.stats.applied)
            online.write(dataset, schema, rows)
            entities = online.stats.entities - before[0]
            applied = online.stats.applied - before[1]
        path = batch.path
        if mark:
            path = self.store.mark_materialized(
                batch,
                {
                    "created_timestamp": created,
                    "offline_uri": self.settings.offline_store.uri,
                    "online_entities": entities,
                    "online_applied": applied,
                    "resumed": resumed,
                },
            )
        return Materialized(batch.view, batch.batch_id, len(rows), created, entities, applied,
                            resumed=resumed, skipped=False, path=path)

    def _offline_sink(self) -> Sink:
        from pipelines.sinks.s3 import offline_sink

        if self._offline is None:
            # File names say where the rows came from: part-release-<id>-<seq>-<uuid>.parquet
            self._offline = offline_sink(self.settings, f"release-{uuid.uuid4().hex[:8]}")
        return self._offline

    def _online_sink(self) -> Any:
        from pipelines.sinks.online import OnlineSink

        if self._online is None:
            self._online = OnlineSink(self.settings, self.pipeline, project=self.online_project)
        return self._online

    def close(self) -> None:
        """Close the stores' connections."""
        for sink in (self._offline, self._online):
            if sink is not None:
                sink.close()
        self._offline = self._online = None

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Materialized", "ReleaseWriter"]
