"""The local S3 endpoint (moto's server) and S3 clients.

Locally the offline store and, optionally, the broker's storage live in moto's
S3 emulator. It accepts any credentials; clients that find none in the normal
AWS chain use the fixed dummy keys :data:`DUMMY_KEY`. Real AWS users set
``s3.endpoint_url: null`` and nothing here applies to them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.config import Settings
from pipelines.errors import StackError

HOST = "127.0.0.1"
DUMMY_KEY = "testing"
"""Access key id and secret the local emulator is used with when no real ones are set."""

_LOCAL_NAMES = {"localhost", "localhost.localdomain"}


def endpoint_url(port: int) -> str:
    """The URL of the local emulator on ``port``."""
    return f"http://{HOST}:{port}"


def is_local_endpoint(url: str | None) -> bool:
    """True when ``url`` points at this machine (the local emulator), False for AWS or remote.

    >>> is_local_endpoint("http://127.0.0.1:9000"), is_local_endpoint(None)
    (True, False)
    >>> is_local_endpoint("https://s3.eu-west-1.amazonaws.com")
    False
    """
    if not url:
        return False
    host = (urlparse(url).hostname or "").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_argv(python: str | None, port: int) -> list[str]:
    """The command line that starts moto's S3 server on ``127.0.0.1:port``.

    Args:
        python: the interpreter to run it with (None: the one running livefeat).
        port: the port to listen on.

    Raises:
        StackError: the interpreter is missing, or (for the running interpreter)
            moto's server extra is not installed.
    """
    interpreter = python or sys.executable
    if not Path(interpreter).is_file() or not os.access(interpreter, os.X_OK):
        raise StackError(
            "the Python interpreter for the S3 emulator is missing",
            where=interpreter,
            fix="run livefeat from the project's virtualenv (deploy/local/setup.sh creates it)",
        )
    if python is None:
        for module in ("moto", "flask", "flask_cors"):
            if importlib.util.find_spec(module) is None:
                raise StackError(
                    f"the S3 emulator cannot start: Python package {module} is not installed",
                    where=interpreter,
                    fix="install moto's server extra: `pip install 'moto[server]==5.2.5'` "
                    "(or rerun deploy/local/setup.sh)",
                )
    return [interpreter, "-m", "moto.server", "--host", HOST, "--port", str(port)]


def broker_storage_env(s3_endpoint: str, region: str) -> dict[str, str]:
    """Environment that points the Tansu broker's ``s3://`` storage at the local emulator."""
    return {
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


def _client(url: str | None, region: str, credentials: Mapping[str, str] | None,
            *, quick: bool, session: Any = None) -> Any:
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {}
    if is_local_endpoint(url):
        options["s3"] = {"addressing_style": "path"}
    if quick:
        options.update(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
    factory = session or boto3
    return factory.client(
        "s3", endpoint_url=url, region_name=region, config=Config(**options),
        **(credentials or {}),
    )


def emulator_client(url: str, region: str) -> Any:
    """A boto3 S3 client for the local emulator: dummy keys, short timeouts, no retries."""
    keys = {"aws_access_key_id": DUMMY_KEY, "aws_secret_access_key": DUMMY_KEY}
    return _client(url, region, keys, quick=True)


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for ``settings.s3``.

    Credentials come from the normal AWS chain (environment, shared files,
    instance roles, ...). Only when the endpoint is on this machine (the local
    emulator) and that chain finds nothing are the dummy keys used; instance
    and container metadata are not consulted for a local endpoint.

    Args:
        settings: validated settings; ``settings.s3`` gives endpoint and region.

    Returns:
        A ``botocore`` S3 client.
    """
    url = settings.s3.endpoint_url
    region = settings.s3.region
    if not is_local_endpoint(url):
        return _client(url, region, None, quick=False)
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    resolver = core.get_component("credential_provider")
    for name in ("container-role", "iam-role"):
        resolver.remove(name)
    session = boto3.Session(botocore_session=core, region_name=region)
    if session.get_credentials() is None:
        keys = {"aws_access_key_id": DUMMY_KEY, "aws_secret_access_key": DUMMY_KEY}
        return _client(url, region, keys, quick=False, session=session)
    return _client(url, region, None, quick=False, session=session)


def probe(url: str, region: str) -> str | None:
    """Make a real S3 call (ListBuckets); None when it answered, else what went wrong."""
    try:
        emulator_client(url, region).list_buckets()
    except Exception as exc:  # botocore raises many types for "not up yet"
        return f"{type(exc).__name__}: {exc}"
    return None


def ensure_bucket(client: Any, bucket: str, region: str, *, setting: str = "s3.bucket") -> bool:
    """Create ``bucket`` unless it exists; True when this call created it.

    Args:
        client: an S3 client.
        bucket: the bucket name.
        region: the region to create it in.
        setting: the settings key that names the bucket, for error messages.

    Raises:
        StackError: the bucket can neither be found nor created.
    """
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise StackError(
                f"cannot inspect bucket {bucket}: {exc}", where=f"settings key {setting}",
                fix="choose another bucket name in livefeat.yaml",
            ) from exc
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return False
        raise StackError(
            f"cannot create bucket {bucket}: {exc}", where=f"settings key {setting}",
            fix="use a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)",
        ) from exc
    return True
