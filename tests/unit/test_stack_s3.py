"""Which credentials and addressing the S3 clients use (no S3 endpoint needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.config import S3Settings, Settings
from pipelines.stack import DUMMY_KEY, s3_client
from pipelines.stack.s3 import broker_storage_env, is_local_endpoint, server_argv


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _settings(endpoint: str | None, region: str = "eu-west-1") -> Settings:
    return Settings(s3=S3Settings(endpoint_url=endpoint, region=region))


def _access_key(client: Any) -> str | None:
    credentials = client._request_signer._credentials  # what the client will sign with
    return None if credentials is None else str(credentials.access_key)


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:9000", True),
    ("http://localhost:9000", True),
    ("http://[::1]:9000", True),
    ("http://10.0.0.5:9000", False),
    ("https://s3.eu-west-1.amazonaws.com", False),
    ("https://minio.example.org", False),
    (None, False),
    ("", False),
])
def test_is_local_endpoint(url: str | None, local: bool) -> None:
    assert is_local_endpoint(url) is local


@pytest.mark.usefixtures("no_aws_credentials")
def test_local_endpoint_without_credentials_uses_the_dummy_keys() -> None:
    client = s3_client(_settings("http://127.0.0.1:9000"))
    assert _access_key(client) == DUMMY_KEY
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-1"


@pytest.mark.usefixtures("no_aws_credentials")
def test_local_endpoint_prefers_credentials_from_the_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALMINIO")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert _access_key(s3_client(_settings("http://localhost:9000"))) == "AKIDLOCALMINIO"


@pytest.mark.usefixtures("no_aws_credentials")
def test_real_aws_never_gets_the_dummy_keys() -> None:
    client = s3_client(_settings(None))
    assert _access_key(client) is None
    assert client.meta.region_name == "eu-west-1"
    assert "amazonaws.com" in client.meta.endpoint_url


def test_broker_storage_env_points_tansu_at_the_emulator() -> None:
    env = broker_storage_env("http://127.0.0.1:9000", "us-east-1")
    assert env["AWS_ENDPOINT"] == "http://127.0.0.1:9000"
    assert env["AWS_ALLOW_HTTP"] == "true"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == DUMMY_KEY


def test_server_argv_binds_loopback_on_the_port() -> None:
    argv = server_argv(None, 9123)
    assert argv[1:] == ["-m", "moto.server", "--host", "127.0.0.1", "--port", "9123"]
