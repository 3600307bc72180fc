"""Single-object encoding, fingerprints and schema resolution."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader

from pipelines import topics
from pipelines.errors import CorruptRecordError, IncompatibleWriterError, UnknownFingerprintError
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore, canonical_form, crc64_avro

# Test vectors from the Avro project's share/test/data/schema-tests.txt (signed 64-bit longs).
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"int"}', '"int"', 8247732601305521295),
    ('"string"', '"string"', -8142146995180207161),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", '
        '"symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    (
        '{"name":"foo","type":"fixed","size":15}',
        '{"name":"foo","type":"fixed","size":15}',
        1756455273707447556,
    ),
    (
        '{"name":"PigValue","type":"record",'
        '"fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":'
        '["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]

SAMPLES: dict[str, dict[str, Any]] = {
    topics.VIEWER_JOINED: {
        "event_id": "e1",
        "event_time": 1_700_000_000_123,
        "stream_id": "st1",
        "seller_id": "s1",
        "user_id": "u1",
        "device": "ANDROID",
    },
    topics.CHAT_MESSAGE: {
        "event_id": "e2",
        "event_time": 1_700_000_000_124,
        "stream_id": "st1",
        "seller_id": "s1",
        "user_id": "u1",
        "message_length": 42,
        "flagged": True,
    },
    topics.BID_PLACED: {
        "event_id": "e3",
        "event_time": 1_700_000_000_125,
        "stream_id": "st1",
        "seller_id": "s1",
        "auction_id": "a1",
        "user_id": "u1",
        "amount_cents": 12_345,
        "currency": "USD",
    },
    topics.ORDER_PLACED: {
        "event_id": "e4",
        "event_time": 1_700_000_000_126,
        "stream_id": "st1",
        "seller_id": "s1",
        "order_id": "o1",
        "user_id": "u1",
        "amount_cents": 2**40,
        "currency": "USD",
        "payment_method_id": "pm1",
        "shipping_country": "DE",
    },
    topics.USER_PROFILE: {
        "user_id": "u1",
        "updated_at": 1_700_000_000_000,
        "account_created_at": 1_600_000_000_000,
        "country": "US",
        "is_verified": False,
        "risk_tier": "HIGH",
    },
}


@pytest.mark.parametrize(("schema", "canonical", "fingerprint"), SPEC_VECTORS)
def test_canonical_form_and_fingerprint_match_the_avro_spec_vectors(
    schema: str, canonical: str, fingerprint: int
) -> None:
    pcf = canonical_form(json.loads(schema))
    assert pcf == canonical
    assert crc64_avro(pcf.encode()) == fingerprint % 2**64


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(SchemaStore.load())


@pytest.mark.parametrize("subject", sorted(SAMPLES))
def test_round_trip_and_wire_layout(codec: SingleObjectCodec, subject: str) -> None:
    record = SAMPLES[subject]
    data = codec.encode(subject, record)
    version = codec.store.latest(subject)
    assert data[:2] == b"\xc3\x01"
    assert int.from_bytes(data[2:10], "little") == version.fingerprint
    assert codec.decoder(subject).decode(data) == record
    # The body is plain Avro binary: another reader, given only the .avsc, reads it too.
    schema = parse_schema(json.loads(Path(version.path).read_text()))
    other = schemaless_reader(BytesIO(data[10:]), schema, None)
    assert other["event_id" if "event_id" in record else "user_id"] == (
        record.get("event_id") or record["user_id"]
    )


def test_every_shipped_subject_has_a_v1(codec: SingleObjectCodec) -> None:
    assert codec.store.subjects() == sorted(topics.REFERENCE_TOPICS)


def _two_version_store(tmp_path: Path, v2_extra: dict[str, Any]) -> SchemaStore:
    v1 = json.loads((SchemaStore.load().latest(topics.BID_PLACED).path).read_text())
    d = tmp_path / topics.BID_PLACED
    d.mkdir()
    (d / "v1.avsc").write_text(json.dumps(v1))
    v2 = json.loads(json.dumps(v1))
    v2["fields"].append(v2_extra)
    (d / "v2.avsc").write_text(json.dumps(v2))
    return SchemaStore.load(tmp_path)


def test_v1_reader_reads_v2_records_and_v2_reader_reads_v1(tmp_path: Path) -> None:
    store = _two_version_store(
        tmp_path, {"name": "coupon", "type": ["null", "string"], "default": None}
    )
    codec = SingleObjectCodec(store)
    rec = SAMPLES[topics.BID_PLACED]
    v2_bytes = codec.encode(topics.BID_PLACED, {**rec, "coupon": "SPRING"}, version=2)
    v1_bytes = codec.encode(topics.BID_PLACED, rec, version=1)
    assert codec.decoder(topics.BID_PLACED, 1).decode(v2_bytes) == rec
    assert codec.decoder(topics.BID_PLACED, 2).decode(v1_bytes) == {**rec, "coupon": None}


def test_writer_that_cannot_be_resolved_is_a_typed_error(tmp_path: Path) -> None:
    # v2 adds a required field without default: a v2 reader cannot read v1 data.
    store = _two_version_store(tmp_path, {"name": "bidder_rank", "type": "int"})
    codec = SingleObjectCodec(store)
    v1_bytes = codec.encode(topics.BID_PLACED, SAMPLES[topics.BID_PLACED], version=1)
    with pytest.raises(IncompatibleWriterError) as err:
        codec.decoder(topics.BID_PLACED, 2).decode(v1_bytes, topic="t", partition=1, offset=9)
    assert err.value.reason == "incompatible_writer"
    assert "topic t, partition 1, offset 9" in str(err.value)


@pytest.mark.parametrize(
    ("mangle", "error", "reason"),
    [
        (lambda b: b"\x00\x01" + b[2:], CorruptRecordError, "undecodable"),
        (lambda b: b[:5], CorruptRecordError, "undecodable"),
        (lambda b: b[:-3], CorruptRecordError, "undecodable"),
        (lambda b: b + b"\x00\x00", CorruptRecordError, "undecodable"),
        (lambda b: b[:2] + bytes(8) + b[10:], UnknownFingerprintError, "unknown_fingerprint"),
        (lambda b: b"", CorruptRecordError, "undecodable"),
    ],
    ids=["bad-magic", "header-only", "truncated-body", "trailing-bytes", "unknown-fp", "empty"],
)
def test_bad_bytes_raise_typed_errors_with_location(
    codec: SingleObjectCodec, mangle: Any, error: type[Exception], reason: str
) -> None:
    data = mangle(codec.encode(topics.BID_PLACED, SAMPLES[topics.BID_PLACED]))
    with pytest.raises(error) as err:
        codec.decoder(topics.BID_PLACED).decode(
            data, topic=topics.BID_PLACED, partition=3, offset=77
        )
    assert err.value.reason == reason  # type: ignore[attr-defined]
    assert f"topic {topics.BID_PLACED}, partition 3, offset 77" in str(err.value)


def test_record_of_another_subject_is_refused(codec: SingleObjectCodec) -> None:
    data = codec.encode(topics.CHAT_MESSAGE, SAMPLES[topics.CHAT_MESSAGE])
    with pytest.raises(UnknownFingerprintError, match=r"not 'livestream\.bid_placed'"):
        codec.decoder(topics.BID_PLACED).decode(data)
