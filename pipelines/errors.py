"""The one exception hierarchy of livefeat.

Every error the project raises on purpose derives from :class:`LivefeatError`.
Messages are built from structured fields: *what* was wrong, *where* (file,
key, topic, partition, offset, step) and *what to do*. The CLI prints
``str(error)`` and exits non-zero without a traceback.

Two families are kept apart on purpose:

* "your input is invalid" (:class:`ConfigError`, :class:`DefinitionError`,
  :class:`SchemaError`): the user fixes a file or a definition;
* "something at run time failed" (:class:`StackError`, :class:`CodecError`,
  :class:`SinkError`, ...): a service, a record or user code misbehaved.

Bad *records* are not exceptions in a running job: decoders raise
:class:`CodecError` subclasses, and the job turns them into quarantine rows
with :attr:`CodecError.reason` as the machine-readable reason code.
"""

from __future__ import annotations


class LivefeatError(Exception):
    """Root of every error livefeat raises on purpose.

    Args:
        problem: what was wrong, one sentence.
        where: location, e.g. ``"livefeat.yaml, key kafka.bootstrap_servers"``.
        fix: what the user should do about it.
    """

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.problem
        if self.where:
            text = f"{self.where}: {text}"
        if self.fix:
            text = f"{text}\n  fix: {self.fix}"
        return text


class ConfigError(LivefeatError):
    """A configuration file or value is invalid; raised at start, before any work."""


class DefinitionError(LivefeatError):
    """A feature, view, source or rule definition is invalid."""


class SchemaError(LivefeatError):
    """An Avro schema file is unusable (unreadable, invalid, duplicated version)."""


class StackError(LivefeatError):
    """The embedded stack (broker, S3 endpoint, Flink cluster) failed to start, stop or answer."""


class CodecError(LivefeatError):
    """A record could not be decoded. ``reason`` is the quarantine reason code."""

    reason = "decode_error"

    def __init__(
        self,
        problem: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = None
        if topic is not None:
            where = f"topic {topic}"
            if partition is not None:
                where += f", partition {partition}"
            if offset is not None:
                where += f", offset {offset}"
        super().__init__(problem, where=where, fix=fix)


class CorruptRecordError(CodecError):
    """The bytes are not a valid single-object-encoded Avro record."""

    reason = "undecodable"


class UnknownFingerprintError(CodecError):
    """The record names a writer schema fingerprint that no kept schema version has."""

    reason = "unknown_fingerprint"


class IncompatibleWriterError(CodecError):
    """The writer schema is known but cannot be resolved to the reader schema."""

    reason = "incompatible_writer"


class SinkError(LivefeatError):
    """A sink could not write (after its retries)."""


class JobError(LivefeatError):
    """A Flink job failed; ``problem`` carries the root cause reported by Flink."""


class UserCodeError(LivefeatError):
    """User code (a rule, a custom transform) raised; the original is chained as ``__cause__``."""
