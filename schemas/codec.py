"""Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + body.

The decoder resolves any kept writer version of the subject to the reader
version the pipeline asks for (Avro schema resolution, done by fastavro).
Schemas are parsed once, when the store loads; a decoder caches the
(writer, reader) pair per fingerprint, so decoding a record is one dict look-up
and one ``schemaless_reader`` call.

>>> codec = SingleObjectCodec(SchemaStore.load())
>>> rec = {"event_id": "e1", "event_time": 1_700_000_000_000, "stream_id": "s1",
...        "seller_id": "sel1", "auction_id": "a1", "user_id": "u1",
...        "amount_cents": 1250, "currency": "USD"}
>>> data = codec.encode("livestream.bid_placed", rec)
>>> data[:2].hex()
'c301'
>>> codec.decoder("livestream.bid_placed").decode(data) == rec
True
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from pipelines.errors import (
    CorruptRecordError,
    IncompatibleWriterError,
    UnknownFingerprintError,
)
from schemas.store import SchemaStore, SchemaVersion

MAGIC = b"\xc3\x01"
HEADER_LEN = 10

Record = dict[str, Any]


class Decoder:
    """Decodes single-object-encoded records of one subject into one reader version."""

    def __init__(self, store: SchemaStore, reader: SchemaVersion) -> None:
        self.store = store
        self.reader = reader
        # fingerprint -> (writer parsed schema, reader parsed schema or None when identical)
        self._plans: dict[bytes, tuple[Any, Any]] = {}

    def _plan(
        self, fingerprint: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> tuple[Any, Any]:
        writer = self.store.by_fingerprint(fingerprint)
        if writer is None:
            raise UnknownFingerprintError(
                f"unknown writer schema fingerprint {fingerprint.hex()}",
                topic=topic,
                partition=partition,
                offset=offset,
                fix="add the writer's schema version under schemas/avro/ or fix the producer",
            )
        if writer.subject != self.reader.subject:
            raise UnknownFingerprintError(
                f"fingerprint {fingerprint.hex()} is subject {writer.subject!r}, "
                f"not {self.reader.subject!r}",
                topic=topic,
                partition=partition,
                offset=offset,
                fix="the producer wrote a record of another subject to this topic",
            )
        plan = (writer.parsed, None if writer is self.reader else self.reader.parsed)
        self._plans[fingerprint] = plan
        return plan

    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Record:
        """Decode one record.

        Raises:
            CorruptRecordError: not single-object encoding, truncated or trailing bytes.
            UnknownFingerprintError: the writer fingerprint is not a kept version of the subject.
            IncompatibleWriterError: the writer version cannot be resolved to the reader.
        """
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise CorruptRecordError(
                "not Avro single-object encoding (missing C3 01 header)",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        fingerprint = bytes(data[2:HEADER_LEN])
        plan = self._plans.get(fingerprint) or self._plan(fingerprint, topic, partition, offset)
        buf = BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = schemaless_reader(buf, plan[0], plan[1])
        except Exception as exc:
            if type(exc).__name__ == "SchemaResolutionError":
                raise IncompatibleWriterError(
                    f"writer {fingerprint.hex()} cannot be read as version "
                    f"{self.reader.version}: {exc}",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    fix="run `livefeat schemas check`; the writer change is not compatible",
                ) from exc
            raise CorruptRecordError(
                f"corrupt Avro body ({type(exc).__name__}: {exc})",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc
        if buf.tell() != len(data):
            raise CorruptRecordError(
                f"{len(data) - buf.tell()} trailing bytes after the Avro body",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        return cast(Record, record)


class SingleObjectCodec:
    """Encoder and decoder factory over a :class:`SchemaStore`."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store

    def decoder(self, subject: str, reader_version: int | None = None) -> Decoder:
        """A decoder reading ``subject`` into ``reader_version`` (default: the newest)."""
        return Decoder(self.store, self.store.get(subject, reader_version))

    def encoder(self, subject: str, version: int | None = None) -> Callable[[Record], bytes]:
        """A function encoding records with a writer version (default: the newest)."""
        writer = self.store.get(subject, version)
        header = MAGIC + writer.fingerprint_bytes
        parsed = writer.parsed

        def encode(record: Record) -> bytes:
            buf = BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
            return buf.getvalue()

        return encode

    def encode(self, subject: str, record: Record, version: int | None = None) -> bytes:
        """Encode one record (convenience; use :meth:`encoder` in loops)."""
        return self.encoder(subject, version)(record)
