"""Crash safety and S3 outages of a real bounded Flink run (``livefeat run`` as a subprocess).

Crash: the job is killed hard (SIGKILL to the whole process group: the Python client and
the JVM it started) once a checkpoint is complete and output has been written, then
resumed with ``livefeat run --restore latest``. Outage: the S3 endpoint of the offline
store (a private moto server) is frozen (SIGSTOP) for several seconds mid-run.

After each, what the run wrote is checked against independent references:

* every Kafka record below the end offsets is an accepted event or a quarantine row,
  never both, and each accepted event equals the record decoded straight from Kafka
  with fastavro;
* the quarantine holds exactly the generator's bad records with their reasons and its
  late records as late (lateness is judged per partition from state that a checkpoint
  restores, so a resumed run decides exactly as an uninterrupted one);
* every deduplicated changelog row equals plain SQL over the accepted events
  (tests/reference.py), and the online store holds the SQL as-of value at the horizon
  for every entity.

The crash test's offline store is ``s3://`` on the stack's S3 endpoint, so a whole run
against S3 is covered too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import S3Settings, Settings
from pipelines.generator.readback import read_to_end
from pipelines.jobs.marketplace import PIPELINE
from pipelines.runtime.backfill import load_events
from pipelines.runtime.checkpoints import complete_checkpoints
from pipelines.runtime.restored_run import unaccounted
from pipelines.sinks.parquet import read_dataset
from pipelines.sinks.s3 import boto3_client, s3_options_for
from pipelines.sources.offsets import kafka_python_config
from pipelines.topics import REFERENCE_TOPICS
from tests.conftest import free_port
from tests.integration.exact import (
    accepted_events,
    assert_changelog_is_exact,
    assert_online_is_exact,
    fresh_stack,
    generate,
    read_changelog_rows,
    write_config,
)
from tests.integration.test_feast_s3_outage import BUCKET, Moto
from tests.integration.test_generate_roundtrip import FastavroReader
from tests.reference import Reference

pytestmark = pytest.mark.integration

EVENTS = 6_000
SEED = 42
VIEWS = [v.name for v in PIPELINE.views]
FREEZE_S = 6.0
RUN_TIMEOUT_S = 420.0
"""Generous: a run here takes one to two minutes; the bound only stops a hung job."""


@dataclass
class Traffic:
    root: Path
    settings: Settings
    manifest: dict[str, Any]


@dataclass
class Outcome:
    """What a scenario left behind."""

    settings: Settings
    summary: dict[str, Any]
    evidence: dict[str, Any]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """A private stack with generated traffic (every fault kind), shared by both scenarios."""
    root = tmp_path_factory.mktemp("crash")
    with fresh_stack(root, checkpoint_interval_ms=1_000) as settings:
        manifest = generate(write_config(settings, root / "gen.yaml"), root / "manifest.json",
                            EVENTS, SEED)
        yield Traffic(root, settings, manifest)


def _scenario_settings(traffic: Traffic, name: str, **changes: Any) -> Settings:
    """The stack's settings with a private offline prefix, online store and checkpoints."""
    where = traffic.root / name
    where.mkdir()
    base = traffic.settings
    return base.model_copy(update={
        "flink": base.flink.model_copy(update={"checkpoint_dir": where / "ckpt"}),
        "offline_store": base.offline_store.model_copy(
            update={"uri": f"s3://{base.s3.bucket}/{name}-{uuid.uuid4().hex[:8]}"}),
        "online_store": base.online_store.model_copy(update={"sqlite_path": where / "online.db"}),
        **changes,
    })


class Run:
    """``livefeat run marketplace --bounded --json [extra]`` in its own process group."""

    def __init__(self, settings: Settings, where: Path, label: str, *extra: str) -> None:
        self.where = where
        self.label = label
        config = write_config(settings, where / f"{label}.yaml")
        self.log_dir = where / "flink-logs"
        env = {**os.environ, "FLINK_LOG_DIR": str(self.log_dir)}
        self.stdout = where / f"{label}.out"
        self.stderr = where / f"{label}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            # cwd: the JVM writes crash reports (hs_err_pid*.log) into it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli.main", "--config", str(config), "run",
                 "marketplace", "--bounded", "--json", *extra],
                stdout=out, stderr=err, cwd=where, env=env, start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` while the job runs; fail loudly if it ends first or takes too long."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not ready():
            if not self.running():
                pytest.fail(f"{self.label}: the job ended (exit {self.proc.returncode}) before "
                            f"{what}, so the test could not act mid-run; stderr:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"{self.label}: no {what} after {RUN_TIMEOUT_S:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def members(self) -> dict[int, str]:
        """Processes of the run's process group (the client and the JVM) and their states."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            if int(fields[2]) == self.proc.pid:  # fields: state, ppid, pgrp, ...
                found[int(stat.parent.name)] = fields[0]
        return found

    def kill(self) -> None:
        """SIGKILL the process group (client and JVM); wait until every member is dead."""
        assert len(self.members()) >= 2, f"expected the client and its JVM: {self.members()}"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 30
        while any(state != "Z" for state in self.members().values()):  # zombies are dead
            assert time.monotonic() < deadline, "the JVM survived SIGKILL of its process group"
            time.sleep(0.1)

    def finish(self) -> dict[str, Any]:
        """Wait for the run to end; its summary (the first JSON object on stdout), with the
        exit status as ``exit_code`` (1: the summary does not balance)."""
        try:
            self.proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.label}: did not finish in {RUN_TIMEOUT_S:.0f} s:\n{self.tail()}")
        try:
            # The JVM may print a crash report on its way out after the summary; read past it.
            summary, _ = json.JSONDecoder().raw_decode(self.stdout.read_text().lstrip())
        except ValueError:
            pytest.fail(f"{self.label} failed (exit {self.proc.returncode}), no summary:\n"
                        f"{self.tail()}")
        assert isinstance(summary, dict)
        return {**summary, "exit_code": self.proc.returncode}


def _objects(client: Any, uri: str) -> int:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return int(client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("KeyCount", 0))


@pytest.fixture(scope="module")
def crashed(traffic: Traffic) -> Outcome:
    """Kill -9 mid-run after a complete checkpoint, then resume with ``--restore latest``."""
    settings = _scenario_settings(traffic, "crash")
    where = traffic.root / "crash"
    s3 = boto3_client(settings)
    marks = {"start": time.monotonic()}
    first = Run(settings, where, "first")
    first.wait_until(
        lambda: bool(complete_checkpoints(settings.flink.checkpoint_dir))
        and _objects(s3, settings.offline_store.uri) > 0,
        "a complete checkpoint and some output",
    )
    first.kill()
    marks["killed"] = time.monotonic()
    end_offsets = {(t, p): o for t, p, o in _end_offsets(settings)}
    evidence = {
        "summary_before_kill": first.stdout.read_text(),
        "unaccounted_at_kill": unaccounted(settings.offline_store.uri, end_offsets,
                                           s3_options_for(settings)),
        "changelog_rows_at_kill": _changelog_rows(settings),
        "checkpoints_at_kill": [str(c.path) for c in
                                complete_checkpoints(settings.flink.checkpoint_dir)],
    }
    marks["restart"] = time.monotonic()
    second = Run(settings, where, "restored", "--restore", "latest")
    summary = second.finish()
    marks["restored"] = time.monotonic()
    evidence["restore_log"] = second.stderr.read_text(errors="replace")
    _save_timings(where, marks)
    return Outcome(settings, summary, evidence)


def _save_timings(where: Path, marks: dict[str, float]) -> None:
    """Seconds from the start to each step, for whoever tunes the test's run time."""
    start = marks["start"]
    (where / "timings.json").write_text(json.dumps({k: round(v - start, 1)
                                                   for k, v in marks.items()}))


def _changelog_rows(settings: Settings) -> int:
    """Distinct (key, time) changelog rows written so far, over every view."""
    total = 0
    for view in PIPELINE.views:
        with contextlib.suppress(FileNotFoundError):  # nothing written yet
            total += len(read_changelog_rows(settings.offline_store.uri, view,
                                             s3_options_for(settings)))
    return total


@pytest.fixture(scope="module")
def outage(traffic: Traffic) -> Iterator[Outcome]:
    """A run whose offline store is on a private S3 endpoint that freezes for a while."""
    server = Moto(free_port())
    server.start()
    try:
        settings = _scenario_settings(
            traffic, "outage",
            s3=S3Settings(endpoint_url=server.url, bucket=BUCKET, region="us-east-1"),
        )
        settings = settings.model_copy(update={
            "offline_store": settings.offline_store.model_copy(
                update={"uri": f"s3://{BUCKET}/outage-{uuid.uuid4().hex[:8]}"}),
            # the online sink is covered by the crash scenario; without it the run is shorter
            "online_store": settings.online_store.model_copy(update={"enabled": False}),
        })
        s3 = boto3_client(settings, connect_timeout=1.0, read_timeout=1.0)
        marks = {"start": time.monotonic()}
        run = Run(settings, traffic.root / "outage", "run")
        run.wait_until(lambda: _objects(s3, settings.offline_store.uri) > 0, "some output")
        marks["frozen"] = time.monotonic()
        server.signal(signal.SIGSTOP)
        try:
            time.sleep(FREEZE_S)
            running_after_freeze = run.running()
        finally:
            server.signal(signal.SIGCONT)
        summary = run.finish()
        marks["finished"] = time.monotonic()
        _save_timings(traffic.root / "outage", marks)
        logs = "\n".join(p.read_text(errors="replace")
                         for p in sorted(run.log_dir.glob("livefeat-worker-*.log")))
        yield Outcome(settings, summary, {"running_after_freeze": running_after_freeze,
                                          "worker_log": logs})
    finally:
        server.stop()


def _end_offsets(settings: Settings) -> list[tuple[str, int, int]]:
    from pipelines.sources.offsets import true_end_offsets

    ends = true_end_offsets(settings.kafka, REFERENCE_TOPICS)
    return [(t, p, o) for (t, p), o in sorted(ends.items())]


# -- the checks, for both scenarios -------------------------------------------------------


@pytest.fixture(scope="module", params=["crashed", "outage"])
def outcome(request: pytest.FixtureRequest) -> Outcome:
    result: Outcome = request.getfixturevalue(request.param)
    return result


@pytest.fixture(scope="module")
def kafka_records(traffic: Traffic) -> dict[tuple[str, int, int], Any]:
    """Every record the topics hold, by position, read with kafka-python."""
    records = read_to_end(kafka_python_config(traffic.settings.kafka), REFERENCE_TOPICS)
    return {(r.topic, r.partition, r.offset): r for r in records}


def _positions(settings: Settings) -> tuple[dict[tuple[str, int, int], dict[str, Any]],
                                            dict[tuple[str, int, int], set[str]]]:
    """Accepted events and quarantine reasons by Kafka position, replays merged."""
    events = load_events(settings.offline_store.uri, PIPELINE, None, None,
                         s3_options_for(settings))
    accepted = {(topic, r["_partition"], r["_offset"]): r
                for topic, rows in events.items() for r in rows}
    table = read_dataset(settings.offline_store.uri, "quarantine", s3_options_for(settings),
                         columns=["topic", "partition", "offset", "reason"])
    held: dict[tuple[str, int, int], set[str]] = {}
    for t, p, o, reason in zip(*(table.column(i).to_pylist() for i in range(4)), strict=True):
        held.setdefault((t, p, o), set()).add(reason)
    return accepted, held


def test_every_record_is_accepted_or_quarantined_exactly_once(
    outcome: Outcome, kafka_records: dict[tuple[str, int, int], Any]
) -> None:
    accepted, held = _positions(outcome.settings)
    assert not set(accepted) & set(held), "records both accepted and quarantined"
    assert set(accepted) | set(held) == set(kafka_records), "records lost (or invented)"
    assert all(len(reasons) == 1 for reasons in held.values()), "a record held for two reasons"
    assert outcome.summary["balanced"] and outcome.summary["total_read"] == len(kafka_records)
    assert outcome.summary["exit_code"] == 0


def test_quarantine_holds_exactly_the_bad_and_the_late_records(
    outcome: Outcome, traffic: Traffic
) -> None:
    _, held = _positions(outcome.settings)
    kinds = {(r["topic"], r["partition"], r["offset"]): r
             for r in traffic.manifest["records_of_interest"]}
    bad = {pos: r for pos, r in kinds.items()
           if r["kind"] in ("undecodable", "unknown_fingerprint", "invalid")}
    assert {pos for pos, reasons in held.items() if "late" not in reasons} == set(bad)
    for pos, entry in bad.items():
        (reason,) = held[pos]
        if entry["kind"] == "invalid":
            assert reason == entry["reason"], pos
        else:
            assert reason == entry["kind"], pos
    late = {pos for pos, r in kinds.items() if r["kind"] == "late"}
    assert late, "the traffic must hold late records"
    assert {pos for pos, reasons in held.items() if "late" in reasons} == late


def test_accepted_events_equal_the_records_read_from_kafka(
    outcome: Outcome, kafka_records: dict[tuple[str, int, int], Any]
) -> None:
    reader = FastavroReader()
    accepted, _ = _positions(outcome.settings)
    assert len(accepted) > EVENTS * 0.9
    for (topic, partition, offset), row in accepted.items():
        record = reader.read(topic, kafka_records[(topic, partition, offset)].value)
        assert record is not None, (topic, partition, offset)
        assert {k: row[k] for k in record} == record, (topic, partition, offset)


@pytest.mark.parametrize("view", VIEWS)
def test_changelog_and_online_store_equal_the_sql_reference(outcome: Outcome, view: str) -> None:
    settings = outcome.settings
    horizon = outcome.summary["horizon_ms"]
    ref = Reference(accepted_events(settings))
    rows = assert_changelog_is_exact(settings, view, horizon, ref, min_rows=10)
    if settings.online_store.enabled:
        keys = sorted({r[PIPELINE.view(view).entity.join_key] for r in rows})
        assert_online_is_exact(settings, view, horizon, ref, keys)  # every entity


# -- scenario-specific checks ------------------------------------------------------------


def test_the_kill_hit_a_running_job_that_then_resumed_from_its_checkpoint(
    crashed: Outcome,
) -> None:
    evidence = crashed.evidence
    assert evidence["summary_before_kill"] == "", "the first attempt had finished"
    # the changelog is complete only once the input has ended (the final watermark)
    final = sum(crashed.summary["changelog_rows"].values())
    assert evidence["changelog_rows_at_kill"] < final, "all output was written before the kill"
    assert evidence["checkpoints_at_kill"]
    restored_from = re.search(r"restoring from (\S+)", evidence["restore_log"])
    assert restored_from is not None, evidence["restore_log"][-2000:]
    assert restored_from.group(1) in {Path(p).as_uri() for p in evidence["checkpoints_at_kill"]}


def test_the_outage_was_ridden_out_counted_and_logged(outage: Outcome) -> None:
    assert outage.evidence["running_after_freeze"], "the job ended during the freeze"
    log = outage.evidence["worker_log"]
    assert re.search(r"WARNING .*S3 endpoint .* unavailable .*outage #1\)", log), log[-3000:]
    recovered = re.findall(
        r"WARNING .*available again after an outage of ([\d.]+) s \((\d+) retries\); "
        r"outage #(\d+)", log)
    assert recovered, log[-3000:]
    # the first outage covers most of the freeze (it starts when the first hung call began)
    assert float(recovered[0][0]) >= FREEZE_S / 3
    assert int(recovered[0][2]) == 1
