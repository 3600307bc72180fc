"""The JSON manifest a generator run leaves behind, so tests and backtests know what was sent.

It holds the seed and options, the event-time span, counts per topic, kind and
sub-reason, the fraud accounts and the chargeback labels, and for every record
that is not plain valid (bad, late, out of order) its topic, partition, offset
and kind. Everything but the ``publish`` section is a function of the options
and the topics' partition counts.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.generator.options import KINDS, VALID, GeneratedRecord, GeneratorOptions
from pipelines.generator.publisher import PublishStats
from pipelines.generator.stream import Generation

MANIFEST_FORMAT = "livefeat-generator-manifest/1"


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO-8601 UTC string with milliseconds."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def is_tracked(record: GeneratedRecord) -> bool:
    """Records whose offsets the manifest lists: everything that is not plain valid."""
    return record.kind != VALID


class ManifestBuilder:
    """Counts records as they are generated and assembles the manifest.

    Args:
        options: the run's options.
    """

    def __init__(self, options: GeneratorOptions) -> None:
        self.options = options
        self.records = 0
        self.by_topic: dict[str, dict[str, int]] = {
            t: dict.fromkeys(KINDS, 0) for t in options.topics()}
        self.by_reason: dict[str, dict[str, int]] = {}
        self._tracked: dict[int, dict[str, Any]] = {}

    def observe(self, rec: GeneratedRecord) -> None:
        """Count one record (call for every record, in publish order)."""
        self.records += 1
        self.by_topic[rec.topic][rec.kind] += 1
        if rec.reason is not None:
            reasons = self.by_reason.setdefault(rec.kind, {})
            reasons[rec.reason] = reasons.get(rec.reason, 0) + 1
        if is_tracked(rec):
            self._tracked[rec.seq] = {
                "seq": rec.seq, "topic": rec.topic, "partition": rec.partition, "offset": None,
                "kind": rec.kind, "reason": rec.reason, "timestamp_ms": rec.timestamp_ms,
                "key": rec.key.decode("utf-8", "replace"), "lag_ms": rec.lag_ms,
                "partition_lag_ms": rec.partition_lag_ms,
            }

    def build(self, generation: Generation, stats: PublishStats | None = None,
              bootstrap_servers: str | None = None) -> dict[str, Any]:
        """The manifest as JSON-ready data."""
        tracked = self._tracked
        publish = None
        if stats is not None:
            for delivery in stats.deliveries:
                entry = tracked.get(delivery.seq)
                if entry is not None:
                    entry["offset"] = delivery.offset
                    entry["partition"] = delivery.partition
            publish = {
                "bootstrap_servers": bootstrap_servers, "records": stats.records,
                "elapsed_s": round(stats.elapsed_s, 3),
                "records_per_s": round(stats.records_per_s, 1),
                "offset_ranges": {t: {str(p): span for p, span in sorted(parts.items())}
                                  for t, parts in sorted(stats.offset_ranges.items())},
            }
        by_kind = {k: sum(counts[k] for counts in self.by_topic.values()) for k in KINDS}
        start = self.options.start
        end = generation.max_event_ms
        return {
            "format": MANIFEST_FORMAT,
            "seed": self.options.seed,
            "options": self.options.as_dict(),
            "start_time_ms": start, "start_time": iso_ms(start),
            "end_time_ms": end, "end_time": iso_ms(end),
            "records": self.records,
            "counts": {
                "by_kind": by_kind,
                "by_topic": self.by_topic,
                "by_reason": {k: dict(sorted(v.items()))
                              for k, v in sorted(self.by_reason.items())},
            },
            "drifted": [{**d.as_dict(), "events": n} for d, n in
                        zip(self.options.drifts, generation.drifted, strict=True)],
            "fraud_user_ids": sorted(generation.fraud_user_ids),
            "chargebacks": generation.chargebacks,
            "records_of_interest": [tracked[s] for s in sorted(tracked)],
            "publish": publish,
        }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a reader never sees half a file).

    Raises:
        ConfigError: the directory cannot be created or written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the manifest: {exc}", where=str(path),
                          fix="pass --manifest with a writable path") from exc


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`.

    Raises:
        ConfigError: the file is missing, not JSON, or not a generator manifest.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest: {exc}", where=str(path),
                          fix="point to a file written by `livefeat generate`") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"not a {MANIFEST_FORMAT} manifest", where=str(path),
                          fix="point to a file written by `livefeat generate`")
    return data
