"""feature_repo/ is a valid Feast repository generated from the pipeline definitions.

`feast apply` (the real CLI) works on a copy of it; its objects equal the definitions and
the spec's feature table; its feature_store.yaml files are the renderings of the settings.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from feast import FeatureStore, FileSource
from feast.repo_contents import RepoContents
from feast.repo_operations import parse_repo

from pipelines.config import Settings, load_config
from pipelines.feast_repo import describe, render_feature_store_yaml, repo_for_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "feature_repo"

# The spec's feature table (SPEC.md), written out independently of the definitions.
SPEC = {
    "user_features": ("user_id", [
        ("user_bid_count_5m", "Int64"), ("user_bid_amount_sum_1h", "Int64"),
        ("user_order_count_24h", "Int64"), ("user_order_amount_avg_24h", "Float64"),
        ("user_distinct_streams_1h", "Int64"), ("user_distinct_payment_methods_24h", "Int64"),
        ("user_account_created_at", "UnixTimestamp"), ("user_is_verified", "Bool"),
        ("user_risk_tier", "String"),
    ]),
    "seller_features": ("seller_id", [
        ("seller_gmv_1h", "Int64"), ("seller_order_count_1h", "Int64"),
        ("seller_unique_buyers_1h", "Int64"), ("seller_new_account_order_share_1h", "Float64"),
    ]),
    "stream_features": ("stream_id", [
        ("stream_viewers_5m", "Int64"), ("stream_chat_messages_1m", "Int64"),
        ("stream_bids_1m", "Int64"), ("stream_flagged_chat_ratio_5m", "Float64"),
    ]),
}


@pytest.fixture
def repo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A copy of feature_repo/ in a fresh project root, with a settings file for it."""
    project = tmp_path / "project"
    shutil.copytree(REPO, project / "feature_repo",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    config = project / "livefeat.yaml"
    config.write_text(yaml.safe_dump({"offline_store": {"uri": str(tmp_path / "offline")}}))
    monkeypatch.delenv("LIVEFEAT_CONFIG", raising=False)
    return project / "feature_repo", config


def _parse(repo: Path, monkeypatch: pytest.MonkeyPatch) -> RepoContents:
    """Feast's own parser, which imports the repo's modules relative to the working directory."""
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    sys.modules.pop("livefeat_repo", None)
    try:
        return parse_repo(repo)
    finally:
        sys.modules.pop("livefeat_repo", None)


def test_feast_cli_apply_registers_every_view(repo_copy: tuple[Path, Path]) -> None:
    repo, _ = repo_copy
    feast = Path(sys.executable).parent / "feast"
    env = {k: v for k, v in os.environ.items() if k != "LIVEFEAT_CONFIG"}
    out = subprocess.run([str(feast), "apply"], cwd=repo, capture_output=True, text=True,
                         timeout=180, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    store = FeatureStore(repo_path=str(repo))
    views = {fv.name: fv for fv in store.list_feature_views()}
    assert sorted(views) == sorted(SPEC)
    for name, (key, features) in SPEC.items():
        fv = views[name]
        assert isinstance(fv.batch_source, FileSource)
        assert [f.name for f in fv.entity_columns] == [key]
        assert [(f.name, str(f.dtype)) for f in fv.features] == features
        # the source is the changelog the pipeline writes, under the settings' offline store
        assert fv.batch_source.path == str(repo.parent.parent / "offline" / "features" / name)
        assert fv.batch_source.timestamp_field == "event_timestamp"
        assert fv.batch_source.created_timestamp_column == "created_timestamp"
    # the online tables exist, with the millisecond event-time column
    db = sqlite3.connect(repo.parent / ".livefeat" / "online.db")
    columns = {row[1] for row in db.execute('PRAGMA table_info("livefeat_user_features")')}
    assert {"entity_key", "feature_name", "value", "event_ts", "event_ts_ms"} <= columns


def test_repo_objects_equal_the_definitions(repo_copy: tuple[Path, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    repo, config = repo_copy
    parsed = _parse(repo, monkeypatch)
    built = repo_for_settings(load_config(config), base_dir=repo.parent)
    assert describe(parsed.feature_views, parsed.entities) == describe(
        list(built.views.values()), list(built.entities.values())
    )
    assert {fv.name: ([e for e in fv.entities], [(f.name, str(f.dtype)) for f in fv.features])
            for fv in parsed.feature_views} == {
        name: ([key.removesuffix("_id")], feats) for name, (key, feats) in SPEC.items()
    }


def test_offline_location_follows_livefeat_config(repo_copy: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = repo_copy
    other = repo.parent / "s3.yaml"
    other.write_text(yaml.safe_dump({"offline_store": {"uri": "s3://bucket-x/pre"},
                                     "s3": {"endpoint_url": "http://127.0.0.1:9999"}}))
    # relative to the project root: the Feast CLI imports the repo from inside it
    monkeypatch.setenv("LIVEFEAT_CONFIG", other.name)
    parsed = _parse(repo, monkeypatch)
    sources = {fv.name: fv.batch_source for fv in parsed.feature_views
               if isinstance(fv.batch_source, FileSource)}
    assert sources["user_features"].path == "s3://bucket-x/pre/features/user_features"
    assert sources["user_features"].s3_endpoint_override == "http://127.0.0.1:9999"


def test_committed_feature_store_yamls_are_the_renderings() -> None:
    default = render_feature_store_yaml(Settings(), base_dir=ROOT, relative_to=REPO)
    assert (REPO / "feature_store.yaml").read_text() == default
    redis_s3 = render_feature_store_yaml(load_config(REPO / "livefeat.redis_s3.yaml"),
                                         base_dir=ROOT, relative_to=REPO)
    assert (REPO / "feature_store.redis_s3.yaml").read_text() == redis_s3
    doc = yaml.safe_load(redis_s3)
    assert doc["online_store"] == {"type": "pipelines.feast_stores.LivefeatRedisOnlineStore",
                                   "connection_string": "127.0.0.1:6379"}
    assert load_config(REPO / "livefeat.redis_s3.yaml").offline_store.uri.startswith("s3://")
