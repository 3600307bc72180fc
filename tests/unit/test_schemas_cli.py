"""``livefeat schemas compat | check | fingerprint``: exit codes, output, a real git repository."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from schemas.codec import SingleObjectCodec
from schemas.store import SchemaStore

PROJECT = Path(__file__).resolve().parents[2]


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["schemas", *args], catch_exceptions=False)


def bid(*fields: dict[str, Any], doc: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "record", "name": "Bid", "namespace": "shop",
                              "fields": list(fields)}
    if doc:
        schema["doc"] = doc
    return schema


EVENT_ID = {"name": "event_id", "type": "string"}
AMOUNT = {"name": "amount_cents", "type": "long"}
CHANNEL = {"name": "channel", "type": "string"}
CHANNEL_OPT = {"name": "channel", "type": ["null", "string"], "default": None}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


# --- compat ---------------------------------------------------------------------------------

def test_compat_exit_0_when_reader_reads_writer(tmp_path: Path) -> None:
    reader = write_json(tmp_path / "r.avsc", bid(EVENT_ID, AMOUNT, CHANNEL_OPT))
    writer = write_json(tmp_path / "w.avsc", bid(EVENT_ID, AMOUNT))
    result = run("compat", str(reader), str(writer))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("compatible:")


def test_compat_exit_1_with_reasons(tmp_path: Path) -> None:
    reader = write_json(tmp_path / "r.avsc", bid(EVENT_ID, CHANNEL))
    writer = write_json(tmp_path / "w.avsc", bid(EVENT_ID, AMOUNT))
    result = run("compat", str(reader), str(writer))
    assert result.exit_code == 1
    assert "[record.missing_default] reader /fields/1" in result.output
    assert "add a default to field `channel`" in result.output


def test_compat_json_output_parses(tmp_path: Path) -> None:
    reader = write_json(tmp_path / "r.avsc", bid(EVENT_ID, {"name": "amount_cents",
                                                            "type": "int"}))
    writer = write_json(tmp_path / "w.avsc", bid(EVENT_ID, AMOUNT))
    result = run("compat", str(reader), str(writer), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["compatible"] is False
    assert [(i["rule"], i["location"]) for i in data["incompatibilities"]] == [
        ("type.mismatch", "/fields/1/type")]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot read schema"),
    ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}',
     "not a valid Avro schema"),
], ids=["unreadable JSON", "invalid schema"])
def test_compat_exit_2_for_unusable_input(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text(content)
    good = write_json(tmp_path / "good.avsc", bid(EVENT_ID))
    result = run("compat", str(good), str(bad))
    assert result.exit_code == 2
    assert message in result.stderr and "bad.avsc" in result.stderr
    as_json = run("compat", str(bad), str(good), "--json")
    assert as_json.exit_code == 2
    assert message in json.loads(as_json.stdout)["error"]["problem"]


def test_compat_exit_2_for_missing_file(tmp_path: Path) -> None:
    good = write_json(tmp_path / "good.avsc", bid(EVENT_ID))
    result = run("compat", str(good), str(tmp_path / "missing.avsc"))
    assert result.exit_code == 2
    assert "missing.avsc" in result.stderr


# --- fingerprint ----------------------------------------------------------------------------

# Schemas and fingerprints from the Avro project's shared test data (share/test/data/
# schema-tests.txt), as Java's SchemaNormalization.parsingFingerprint64 prints them.
AVRO_VECTORS = [
    ('"int"', 8247732601305521295),
    ('{"fields":[], "type":"record", "name":"foo"}', -4824392279771201922),
    ('{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", '
     '"symbols":["A1", "A2"]}', -4448647247586288245),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ('{"name":"PigValue","type":"record","fields":[{"name":"value", '
     '"type":["null", "int", "long", "PigValue"]}]}', -1759257747318642341),
]


@pytest.mark.parametrize(("text", "expected"), AVRO_VECTORS,
                         ids=["int", "record", "enum with namespace", "fixed", "recursive"])
def test_fingerprint_matches_avro_test_vectors(tmp_path: Path, text: str, expected: int) -> None:
    path = tmp_path / "s.avsc"
    path.write_text(text)
    as_int = run("fingerprint", str(path), "--int")
    assert as_int.exit_code == 0 and as_int.output.strip() == str(expected)
    as_hex = run("fingerprint", str(path), "--hex")
    assert as_hex.output.strip() == struct.pack("<q", expected).hex()
    summary = run("fingerprint", str(path)).output
    assert f"c301{struct.pack('<q', expected).hex()}" in summary and str(expected) in summary


def test_fingerprint_is_what_the_codec_writes() -> None:
    path = PROJECT / "schemas/avro/livestream.bid_placed/v1.avsc"
    record = {"event_id": "e", "event_time": 1, "stream_id": "s", "seller_id": "x",
              "auction_id": "a", "user_id": "u", "amount_cents": 5, "currency": "USD"}
    data = SingleObjectCodec(SchemaStore.load()).encode("livestream.bid_placed", record)
    assert run("fingerprint", str(path), "--hex").output.strip() == data[2:10].hex()


def test_fingerprint_exit_2_for_invalid_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.avsc"
    path.write_text('{"type": "enum", "name": "E", "symbols": ["A", "A"]}')
    assert run("fingerprint", str(path)).exit_code == 2


# --- check in a real git repository -----------------------------------------------------------

SUBJECT_DIR = Path("schemas/avro/shop.bids")


class Repo:
    """A throw-away git repository holding schemas/avro/shop.bids."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.org",
                    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.org",
                    "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        write_json(root / "usage.json", {"shop.bids": {"amount_cents": ["user_bid_sum_1h"]}})

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, env=self.env, check=True,
                              capture_output=True, text=True)
        return done.stdout

    def version(self, n: int, schema: Any) -> Path:
        return write_json(self.root / SUBJECT_DIR / f"v{n}.avsc", schema)

    def commit(self, message: str = "change") -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def check(self, *args: str) -> Any:
        return run("check", "--root", str(self.root), "--field-usage",
                   str(self.root / "usage.json"), *args)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "repo")
    repo.version(1, bid(EVENT_ID, AMOUNT))
    repo.commit("v1")
    return repo


def test_check_incompatible_new_version_exits_1_naming_field_and_rule(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID, AMOUNT, CHANNEL))
    result = repo.check("--against", "main")
    assert result.exit_code == 1, result.output
    assert "record.missing_default" in result.output
    assert "field `channel`" in result.output
    assert f"{SUBJECT_DIR}/v2.avsc#/fields/2" in result.output
    assert "BACKWARD: consumers reading with v2 could not read records written with v1" in (
        result.output)


def test_check_compatible_optional_field_exits_0(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID, AMOUNT, CHANNEL_OPT))
    result = repo.check("--against", "main")
    assert result.exit_code == 0, result.output
    assert "schema check passed" in result.output


def test_check_modified_released_version_is_an_error(repo: Repo) -> None:
    repo.version(1, bid(EVENT_ID, {"name": "amount_cents", "type": "int"}))
    result = repo.check("--against", "main")
    assert result.exit_code == 1
    assert "modified_release: version.modified" in result.output
    assert "released versions are immutable" in result.output
    assert "new version v2.avsc" in result.output
    # Without a ref there is nothing released to compare with.
    assert repo.check().exit_code == 0


def test_check_doc_only_edit_of_released_version_is_fine(repo: Repo) -> None:
    repo.version(1, bid(EVENT_ID, AMOUNT, doc="Bids, now documented."))
    assert repo.check("--against", "main").exit_code == 0


def test_check_deleted_released_version_is_an_error(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID, AMOUNT, CHANNEL_OPT))
    repo.commit("v2")
    (repo.root / SUBJECT_DIR / "v2.avsc").unlink()
    result = repo.check("--against", "main")
    assert result.exit_code == 1
    assert "deleted_release" in result.output


def test_check_deleted_released_subject_is_an_error(repo: Repo) -> None:
    orders = write_json(repo.root / "schemas/avro/shop.orders/v1.avsc",
                        {"type": "record", "name": "Order", "fields": [EVENT_ID]})
    repo.commit("orders")
    orders.unlink()
    result = repo.check("--against", "main", "--json")
    assert result.exit_code == 1
    problems = [p for s in json.loads(result.stdout)["subjects"] for p in s["problems"]]
    assert [(p["subject"], p["kind"]) for p in problems] == [("shop.orders", "deleted_release")]


def test_check_every_version_added_since_the_ref(repo: Repo) -> None:
    # v2 cannot read v1 (channel has no default); v3 repairs it. Alone, the newest
    # version looks fine; against the ref, v2 is new too and is checked.
    repo.version(2, bid(EVENT_ID, AMOUNT, CHANNEL))
    repo.version(3, bid(EVENT_ID, AMOUNT, CHANNEL_OPT))
    assert repo.check().exit_code == 0
    result = repo.check("--against", "main", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    (subject,) = data["subjects"]
    assert subject["ref_versions"] == [1]
    failing = [(c["reader"], c["writer"]) for c in subject["comparisons"] if not c["compatible"]]
    assert failing == [("v2", "v1")]


def test_check_transitive_mode_from_config(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID, AMOUNT, {**CHANNEL, "default": "web"}))
    repo.commit("v2")
    repo.version(3, bid(EVENT_ID, AMOUNT, CHANNEL))
    assert repo.check("--against", "main").exit_code == 0  # BACKWARD: v3 reads v2
    (repo.root / "schemas/compatibility.yaml").write_text(
        "subjects:\n  shop.bids: BACKWARD_TRANSITIVE\n")
    result = repo.check("--against", "main")
    assert result.exit_code == 1
    assert "BACKWARD_TRANSITIVE: consumers reading with v3 could not read records written " \
           "with v1" in result.output


def test_check_subject_absent_at_ref_is_fine(repo: Repo) -> None:
    write_json(repo.root / "schemas/avro/shop.orders/v1.avsc",
               {"type": "record", "name": "Order", "fields": [EVENT_ID]})
    result = repo.check("--against", "main", "--json")
    assert result.exit_code == 0
    orders = [s for s in json.loads(result.stdout)["subjects"] if s["subject"] == "shop.orders"]
    assert orders[0]["ref_versions"] is None


def test_check_feature_break_fails(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID))  # drops amount_cents: compatible, but a feature reads it
    result = repo.check("--against", "main")
    assert result.exit_code == 1
    assert "feature_break: field.removed" in result.output
    assert "user_bid_sum_1h" in result.output


def test_check_json_report(repo: Repo) -> None:
    repo.version(2, bid(EVENT_ID, AMOUNT, CHANNEL))
    result = repo.check("--against", "main", "--json")
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["problem_count"] == 1 and data["against"] == "main"
    problem = data["subjects"][0]["problems"][0]
    assert problem["rule"] == "record.missing_default"
    assert problem["location"].endswith("v2.avsc#/fields/2")


@pytest.mark.parametrize("args", [("--against", "no-such-branch"), ()],
                         ids=["unknown ref", "invalid schema file"])
def test_check_exit_2_for_unusable_input(repo: Repo, args: tuple[str, ...]) -> None:
    if not args:
        (repo.root / SUBJECT_DIR / "v2.avsc").write_text("{oops")
    result = repo.check(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")


def test_check_bad_mode_config_exit_2(repo: Repo) -> None:
    (repo.root / "schemas/compatibility.yaml").write_text("default: SOMETIMES\n")
    result = repo.check()
    assert result.exit_code == 2
    assert "compatibility.yaml, key default" in result.stderr


def test_project_schemas_pass_the_check() -> None:
    result = run("check", "--root", str(PROJECT))
    assert result.exit_code == 0, result.output


def test_entry_point_exit_codes(tmp_path: Path) -> None:
    """Through the console entry point (non-standalone click), not only CliRunner."""
    ok = write_json(tmp_path / "ok.avsc", bid(EVENT_ID, AMOUNT, CHANNEL_OPT))
    old = write_json(tmp_path / "old.avsc", bid(EVENT_ID, AMOUNT))
    bad = tmp_path / "bad.avsc"
    bad.write_text("{")
    codes = []
    for reader, writer in ((ok, old), (old, ok), (ok, bad)):
        done = subprocess.run(
            [sys.executable, "-c", "from pipelines.cli.main import main; main()",
             "schemas", "compat", str(reader), str(writer)],
            capture_output=True, text=True, cwd=PROJECT, check=False)
        codes.append(done.returncode)
    # old reads ok's data: channel is writer-only, skipped.
    assert codes == [0, 0, 2]
    new = write_json(tmp_path / "new.avsc", bid(EVENT_ID, CHANNEL))
    done = subprocess.run(
        [sys.executable, "-c", "from pipelines.cli.main import main; main()",
         "schemas", "compat", str(new), str(old)],
        capture_output=True, text=True, cwd=PROJECT, check=False)
    assert done.returncode == 1, done.stdout


# --- start-up: the schema commands stay light ------------------------------------------------

HEAVY = ("pyflink", "feast", "great_expectations", "pandas", "pyarrow", "pipelines.config")


def test_schema_commands_do_not_import_heavy_modules(tmp_path: Path) -> None:
    schema = write_json(tmp_path / "s.avsc", bid(EVENT_ID))
    code = (
        "import atexit, sys\n"
        "from pipelines.cli.main import main\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in sys.modules "
        "if m.startswith(heavy)), file=sys.stderr))\n"
        "main()\n"
    )
    for args in (["--help"], ["schemas", "--help"], ["schemas", "compat", str(schema), str(schema)],
                 ["schemas", "fingerprint", str(schema)]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=PROJECT, check=False)
        assert done.returncode == 0, done.stderr
        assert "HEAVY []" in done.stderr, (args, done.stderr)
