"""The offline store on S3: client options from ``settings.s3``, uploads that ride out outages.

* :func:`offline_sink` gives the sink for ``offline_store.uri``: the plain
  :class:`~pipelines.sinks.parquet.ParquetSink` for a local directory, an
  :class:`S3ParquetSink` for ``s3://bucket/prefix``.
* :class:`S3ParquetSink` encodes each Parquet file once and uploads it with one
  PUT (atomic on S3) under a name fixed before the first attempt, so a retry
  after a timeout can only overwrite the same object with the same bytes: no
  duplicate, nothing lost. Connection errors, timeouts and 5xx/throttling answers
  are retried with backoff (:mod:`pipelines.sinks.retry`); a missing bucket or
  refused credentials fail at once.
* :func:`arrow_s3_options` gives ``pyarrow.fs.S3FileSystem`` keyword arguments
  for readers (``read_dataset``, :mod:`pipelines.offline`).
* :func:`register_fsspec_s3` lets Feast's file offline store read ``s3://``
  sources through pyarrow when the optional ``s3fs`` package is not installed.

Credentials come from the normal AWS chain. Only for an endpoint on this machine
(the local emulator) with nothing in that chain are the emulator's dummy keys
used, as :func:`pipelines.stack.s3.s3_client` does.
"""

from __future__ import annotations

import importlib.util
import uuid
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.errors import SinkError
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.retry import Retrier, RetryPolicy
from pipelines.stack.s3 import DUMMY_KEY, is_local_endpoint

_TRANSIENT_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
    "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
}


def is_transient_s3_error(exc: BaseException) -> bool:
    """True for errors that mean "S3 is away or busy, try again": worth a retry."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError
                  | ReadTimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(err.get("Code", "")) in _TRANSIENT_CODES or int(status or 0) >= 500
    # urllib3/botocore wrap some socket errors in their own types
    name = type(exc).__name__
    return name in {"ProtocolError", "IncompleteReadError", "HTTPClientError"}


def local_credentials(endpoint_url: str | None, region: str) -> dict[str, str] | None:
    """Static keys to use for ``endpoint_url``, or None to let the SDK's chain decide.

    For a remote endpoint (AWS or another host) always None: the SDK resolves and
    refreshes credentials itself. For the local emulator: the keys the AWS chain
    finds without asking instance metadata, else the emulator's dummy keys.
    """
    if not is_local_endpoint(endpoint_url):
        return None
    import botocore.session

    core = botocore.session.get_session()
    resolver = core.get_component("credential_provider")
    for name in ("container-role", "iam-role"):
        resolver.remove(name)
    core.set_config_variable("region", region)
    found = core.get_credentials()
    if found is None:
        return {"access_key": DUMMY_KEY, "secret_key": DUMMY_KEY}
    frozen = found.get_frozen_credentials()
    keys = {"access_key": frozen.access_key, "secret_key": frozen.secret_key}
    if frozen.token:
        keys["session_token"] = frozen.token
    return keys


def arrow_s3_options(settings: Settings) -> dict[str, Any]:
    """``pyarrow.fs.S3FileSystem`` keyword arguments for ``settings.s3``."""
    return _arrow_options(settings.s3.endpoint_url, settings.s3.region)


def s3_options_for(settings: Settings, uri: str | None = None) -> dict[str, Any] | None:
    """pyarrow S3 options for ``uri`` (default: the offline store) if it is ``s3://``, else None."""
    target = uri or settings.offline_store.uri
    return arrow_s3_options(settings) if target.startswith("s3://") else None


def _arrow_options(endpoint_url: str | None, region: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"connect_timeout": 3.0, "request_timeout": 30.0}
    if region:
        opts["region"] = region
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        opts["endpoint_override"] = parsed.netloc or endpoint_url
        opts["scheme"] = parsed.scheme or "https"
    keys = local_credentials(endpoint_url, region or "us-east-1")
    if keys:
        opts.update(keys)
    return opts


def boto3_client(settings: Settings, *, connect_timeout: float = 2.0,
                 read_timeout: float = 3.0) -> Any:
    """A boto3 S3 client for ``settings.s3`` with short timeouts and no retries of its own
    (:class:`S3ParquetSink` retries with backoff and counts outages).

    The read timeout bounds each wait on the socket (for the answer, or for room to send),
    not the whole upload. Short, so that an endpoint that stops answering mid-request (a
    frozen server, a dead connection) shows up as an outage within seconds; a false alarm
    only costs a retry of the same idempotent PUT.
    """
    import boto3
    from botocore.config import Config

    url, region = settings.s3.endpoint_url, settings.s3.region
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
    }
    if is_local_endpoint(url):
        options["s3"] = {"addressing_style": "path"}
    keys = local_credentials(url, region)
    creds = {}
    if keys:
        creds = {"aws_access_key_id": keys["access_key"],
                 "aws_secret_access_key": keys["secret_key"]}
        if "session_token" in keys:
            creds["aws_session_token"] = keys["session_token"]
    return boto3.client("s3", endpoint_url=url, region_name=region, config=Config(**options),
                        **creds)


class S3ParquetSink(ParquetSink):
    """Parquet files on S3, uploaded whole with retries through outages of the endpoint.

    Args:
        uri: ``s3://bucket/prefix``.
        settings: ``settings.s3`` gives the endpoint, region and bucket checks.
        writer_id: distinguishes parallel writers in file names.
        time_columns: per dataset, the epoch-ms column that picks the partition.
        policy: backoff and give-up time for outages.
        client: a boto3 S3 client (default: :func:`boto3_client`).
    """

    def __init__(
        self,
        uri: str,
        settings: Settings,
        writer_id: str = "0",
        time_columns: dict[str, str] | None = None,
        policy: RetryPolicy | None = None,
        client: Any = None,
    ) -> None:
        if not uri.startswith("s3://"):
            raise SinkError(f"not an s3:// URI: {uri}", where="offline_store.uri",
                            fix="use s3://bucket/prefix, or ParquetSink for a directory")
        from pipelines.runtime.worker_logs import route_to_flink_log

        route_to_flink_log()  # inside a Flink worker, outage messages go to the Flink log
        super().__init__(uri, writer_id, time_columns, s3_options=arrow_s3_options(settings))
        self.client = client if client is not None else boto3_client(settings)
        endpoint = settings.s3.endpoint_url or "AWS S3"
        self.retrier = Retrier(
            f"offline store {uri} (S3 endpoint {endpoint})",
            policy or RetryPolicy(),
            is_transient_s3_error,
            fix="check that the S3 endpoint (s3.endpoint_url) is up and reachable; rows of "
            "unfinished batches are replayed from the last checkpoint when the job restarts",
        )
        self.bytes_written = 0
        self.files_written = 0

    def _write_file(self, directory: str, table: pa.Table) -> None:
        self._seq += 1
        name = f"part-{self.writer_id}-{self._seq:06d}-{uuid.uuid4().hex[:12]}.parquet"
        bucket, _, prefix = directory.partition("/")
        key = f"{prefix}/{name}"
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        body = buf.getvalue().to_pybytes()
        self.retrier.call(
            lambda: self._put(bucket, key, body),
            what=f"upload {table.num_rows} rows to s3://{bucket}/{key}",
        )
        self.bytes_written += len(body)
        self.files_written += 1

    def _put(self, bucket: str, key: str, body: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body)
        except ClientError as exc:
            if is_transient_s3_error(exc):
                raise
            code = exc.response.get("Error", {}).get("Code", "")
            raise SinkError(
                f"S3 refused the upload of s3://{bucket}/{key}: {code}: {exc}",
                where=f"{self.uri} (settings keys offline_store.uri, s3.*)",
                fix="create the bucket (`livefeat stack up` does it for the local emulator) "
                "and check the credentials in the AWS chain"
                if code in {"NoSuchBucket", "404"}
                else "check the bucket name and the credentials in the AWS chain",
            ) from exc


def offline_sink(
    settings: Settings,
    writer_id: str = "0",
    time_columns: dict[str, str] | None = None,
    policy: RetryPolicy | None = None,
) -> ParquetSink:
    """The sink for ``settings.offline_store.uri``: local directory or ``s3://``."""
    uri = settings.offline_store.uri
    if uri.startswith("s3://"):
        give_up = getattr(settings.offline_store, "retry_give_up_s", None)  # optional setting
        if policy is None and give_up is not None:
            policy = RetryPolicy(give_up_after_s=give_up)
        return S3ParquetSink(uri, settings, writer_id, time_columns, policy)
    return ParquetSink(uri, writer_id, time_columns)


# -- reading s3:// through fsspec without s3fs ------------------------------------------


def register_fsspec_s3() -> bool:
    """Make fsspec's ``s3://`` use pyarrow when ``s3fs`` is not installed.

    Feast's file offline store reads sources with ``dask.dataframe.read_parquet``,
    which asks fsspec for an ``s3`` filesystem; without ``s3fs`` that fails with
    "Install s3fs to access S3". Returns True when the pyarrow-backed filesystem
    was registered (False: s3fs is installed and used as is).
    """
    if importlib.util.find_spec("s3fs") is not None:
        return False
    import fsspec

    cls = _arrow_s3_class()
    for protocol in ("s3", "s3a"):
        fsspec.register_implementation(protocol, cls, clobber=True)
    return True


_ARROW_S3_CLASS: Any = None


def _arrow_s3_class() -> Any:
    global _ARROW_S3_CLASS
    if _ARROW_S3_CLASS is not None:
        return _ARROW_S3_CLASS
    from fsspec.implementations.arrow import ArrowFSWrapper
    from pyarrow import fs as pafs

    class ArrowS3FileSystem(ArrowFSWrapper):
        """fsspec ``s3://`` backed by ``pyarrow.fs.S3FileSystem``; takes s3fs-style options."""

        protocol = ("s3", "s3a")
        root_marker = ""

        def __init__(
            self,
            key: str | None = None,
            secret: str | None = None,
            token: str | None = None,
            client_kwargs: dict[str, Any] | None = None,
            endpoint_url: str | None = None,
            **kwargs: Any,
        ) -> None:
            client = dict(client_kwargs or {})
            endpoint = endpoint_url or client.get("endpoint_url")
            opts = _arrow_options(endpoint, client.get("region_name"))
            if key:
                opts.update(access_key=key, secret_key=secret, session_token=token)
            super().__init__(pafs.S3FileSystem(**opts), **kwargs)

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            if isinstance(path, list):
                return [cls._strip_protocol(p) for p in path]
            for prefix in ("s3://", "s3a://"):
                if path.startswith(prefix):
                    path = path[len(prefix):]
            return path.rstrip("/")

    _ARROW_S3_CLASS = ArrowS3FileSystem
    return _ARROW_S3_CLASS
