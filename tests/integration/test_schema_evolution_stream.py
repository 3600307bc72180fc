"""Schema evolution at run time: producers switch from v1 to a compatible v2 mid-stream.

The pipeline keeps reading as v1 (reader version pinned), knows v2 as a writer, and must
produce exactly the features of the records as the producers wrote them: nothing lost to
an unknown fingerprint, nothing changed by the new field. `schemas check` accepts that v2
and refuses an incompatible one, naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines import topics
from pipelines.cli.main import cli
from pipelines.config import SchemaSettings, Settings
from pipelines.generator import GeneratorOptions, generate_events
from pipelines.generator.publisher import KafkaPublisher
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import load_events
from pipelines.runtime.streaming import run_pipeline
from pipelines.sources.offsets import kafka_python_config
from pipelines.stack import StackManager, override_stack
from schemas.codec import SingleObjectCodec
from schemas.store import DEFAULT_ROOT, SchemaStore
from tests.conftest import free_port
from tests.integration.test_stream_exact import read_changelog_rows
from tests.reference import Reference

pytestmark = pytest.mark.integration

EVOLVED = (topics.BID_PLACED, topics.ORDER_PLACED)
COUPON = {
    "name": "coupon",
    "type": ["null", "string"],
    "default": None,
    "doc": "Promotion code applied, if any (added in v2).",
}


def _schema_dir(root: Path, extra_field: dict[str, Any]) -> Path:
    target = root / "schemas" / "avro"
    shutil.copytree(DEFAULT_ROOT, target)
    for subject in EVOLVED:
        v1 = json.loads((target / subject / "v1.avsc").read_text())
        v1["fields"].append(extra_field)
        (target / subject / "v2.avsc").write_text(json.dumps(v1, indent=2))
    return target


def test_schemas_check_accepts_the_optional_field_and_refuses_a_required_one(
    tmp_path: Path,
) -> None:
    _schema_dir(tmp_path / "ok", COUPON)
    result = CliRunner().invoke(cli, ["schemas", "check", "--root", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    _schema_dir(tmp_path / "bad", {"name": "bidder_rank", "type": "int"})
    result = CliRunner().invoke(cli, ["schemas", "check", "--root", str(tmp_path / "bad")])
    assert result.exit_code == 1, result.output
    assert "bidder_rank" in result.output


@pytest.fixture(scope="module")
def evolved_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("evolve")
    schema_dir = _schema_dir(root, COUPON)
    base = Settings()
    base = base.model_copy(
        update={
            "flink": base.flink.model_copy(update={"checkpoint_dir": root / "ckpt"}),
            "offline_store": base.offline_store.model_copy(update={"uri": str(root / "offline")}),
            "online_store": base.online_store.model_copy(update={"enabled": False}),
            "schemas": SchemaSettings(dir=schema_dir, reader_versions={t: 1 for t in EVOLVED}),
        }
    )
    base = override_stack(
        base, broker_port=free_port(), s3_port=free_port(), state_dir=root / "state"
    )
    manager = StackManager(base)
    try:
        settings = manager.up().apply(base)
        codec = SingleObjectCodec(SchemaStore.load(schema_dir))
        encoders = {t: codec.encoder(t, 2) for t in EVOLVED}
        records = list(generate_events(GeneratorOptions(events=6000, seed=21), codec))
        switched = 0
        published = []
        for i, rec in enumerate(records):
            if i >= len(records) // 2 and rec.subject in EVOLVED and rec.kind == "valid":
                assert rec.record is not None
                rec = dataclasses.replace(
                    rec, value=encoders[rec.subject]({**rec.record, "coupon": f"SPRING{i % 7}"})
                )
                switched += 1
            published.append(rec)
        publisher = KafkaPublisher(kafka_python_config(settings.kafka))
        try:
            publisher.publish(published)
        finally:
            publisher.close()
        summary = run_pipeline(settings, "marketplace", bounded=True)
        assert summary is not None
        written = {
            t: [r.record for r in records if r.subject == t and r.kind == "valid"]
            for t in topics.REFERENCE_TOPICS
        }
        yield {"settings": settings, "summary": summary, "switched": switched, "valid": written}
    finally:
        manager.down()


def test_no_v2_record_is_lost_or_quarantined(evolved_run: dict[str, Any]) -> None:
    summary = evolved_run["summary"]
    assert evolved_run["switched"] > 100
    assert summary.balanced
    assert "unknown_fingerprint" not in summary.quarantined
    assert "incompatible_writer" not in summary.quarantined
    for topic in EVOLVED:
        assert summary.accepted[topic] >= len(
            evolved_run["valid"][topic]
        ) - summary.quarantined.get("late", 0)


@pytest.mark.parametrize("view", [v.name for v in PIPELINE.views])
def test_features_equal_the_reference_over_what_producers_wrote(
    evolved_run: dict[str, Any], view: str
) -> None:
    settings: Settings = evolved_run["settings"]
    accepted = load_events(settings.offline_store.uri, PIPELINE, None, None)
    for topic in EVOLVED:  # read as v1: the new field never reaches the pipeline
        assert all("coupon" not in r for r in accepted[topic])
    ref = Reference(accepted)
    key = PIPELINE.view(view).entity.join_key
    names = ref.feature_names(view)
    got = read_changelog_rows(settings.offline_store.uri, PIPELINE.view(view))
    want = ref.changelog(view, evolved_run["summary"].horizon_ms)
    assert len(want) > 20
    assert [(r[key], r["event_timestamp"], *(r[n] for n in names)) for r in got] == [
        (r[key], r["event_timestamp"], *(r[n] for n in names)) for r in want
    ]
