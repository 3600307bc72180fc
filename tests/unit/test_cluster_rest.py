"""The Flink REST client's error handling, against small real HTTP servers.

The happy paths run against a real Flink cluster in tests/integration/test_cluster.py;
here a local HTTP server answers the way Flink answers errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.cluster.rest import FlinkRest, _problem_from_body
from pipelines.errors import StackError
from tests.conftest import free_port

# What Flink 2.0 answered to PATCH /jobs/<unknown id>?mode=cancel (trimmed).
FLINK_404 = json.dumps({"errors": [
    "org.apache.flink.runtime.rest.handler.RestHandlerException: Job could not be found.\n"
    "\tat org.apache.flink.runtime.rest.handler.job.JobCancellationHandler.lambda$handleRequest$0"
    "(JobCancellationHandler.java:127)\n"
    "Caused by: org.apache.flink.runtime.messages.FlinkJobNotFoundException: Could not find "
    "Flink job (00000000000000000000000000000000)\n\t... 5 more\n"]})

ROUTES: dict[tuple[str, str], tuple[int, str]] = {
    ("PATCH", "/jobs/00000000000000000000000000000000?mode=cancel"): (404, FLINK_404),
    ("PATCH", "/jobs/11111111111111111111111111111111?mode=cancel"): (409, json.dumps({
        "errors": ["RestHandlerException: Job cancellation failed because the job has already "
                   "reached another terminal state (FAILED)."]})),
    ("GET", "/overview"): (200, "<html>not flink</html>"),
    ("GET", "/jobs/overview"): (200, json.dumps({"jobs": [
        {"jid": "a" * 32, "name": "old", "state": "CANCELED", "start-time": 1, "duration": 5,
         "tasks": {"total": 2, "canceled": 2}},
        {"jid": "b" * 32, "name": "new", "state": "RUNNING", "start-time": 9, "duration": 3,
         "tasks": {"total": 2, "running": 2}}]})),
    ("POST", "/jobs/cccccccccccccccccccccccccccccccc/savepoints"): (202, json.dumps(
        {"request-id": "trig"})),
    ("GET", "/jobs/cccccccccccccccccccccccccccccccc/savepoints/trig"): (200, json.dumps({
        "status": {"id": "COMPLETED"},
        "operation": {"failure-cause": {"class": "java.util.concurrent.CompletionException",
                                        "stack-trace": "java.util.concurrent.CompletionException:"
                                        " CheckpointException: Checkpoint was declined (tasks "
                                        "not ready)\n\tat org.apache.X.y(X.java:1)\n"}}})),
    ("GET", "/jobs/dddddddddddddddddddddddddddddddd"): (200, json.dumps({"state": "FAILED"})),
}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(self.rfile.read(length))  # type: ignore[attr-defined]
        status, body = ROUTES.get((self.command, self.path), (404, '{"errors": ["Not found"]}'))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _client(server: ThreadingHTTPServer) -> FlinkRest:
    return FlinkRest(f"127.0.0.1:{server.server_address[1]}", timeout=5)


def test_unknown_job_is_a_clear_404(server: ThreadingHTTPServer) -> None:
    with pytest.raises(StackError) as info:
        _client(server).cancel("0" * 32)
    assert info.value.problem == (
        "Flink answered 404 Not Found: org.apache.flink.runtime.rest.handler."
        "RestHandlerException: Job could not be found. / Caused by: org.apache.flink.runtime."
        "messages.FlinkJobNotFoundException: Could not find Flink job "
        "(00000000000000000000000000000000)")
    assert info.value.fix is not None and "livefeat jobs list" in info.value.fix


def test_cancelling_an_ended_job_says_why(server: ThreadingHTTPServer) -> None:
    with pytest.raises(StackError, match=r"409 Conflict: .*terminal state \(FAILED\)") as info:
        _client(server).cancel("1" * 32)
    assert info.value.fix is not None and "jobs list --all" in info.value.fix


def test_an_answer_that_is_not_json(server: ThreadingHTTPServer) -> None:
    with pytest.raises(StackError, match="not JSON"):
        _client(server).overview()


def test_nothing_listening() -> None:
    port = free_port()
    with pytest.raises(StackError, match="cannot reach the Flink REST API") as info:
        FlinkRest(f"http://127.0.0.1:{port}/", timeout=2).jobs()
    assert info.value.where == f"http://127.0.0.1:{port}/jobs/overview"
    assert info.value.fix is not None and "livefeat cluster up" in info.value.fix


def test_jobs_newest_first(server: ThreadingHTTPServer) -> None:
    found = _client(server).jobs()
    assert [(j.name, j.state, j.tasks.get("running", 0)) for j in found] == [
        ("new", "RUNNING", 2), ("old", "CANCELED", 0)]


def test_failed_savepoint_carries_flinks_cause(server: ThreadingHTTPServer) -> None:
    with pytest.raises(StackError, match=r"savepoint of job c+ failed: .*Checkpoint was declined"):
        _client(server).savepoint("c" * 32, "file:///sp", cancel=True, timeout=5)
    sent = json.loads(server.bodies[0])  # type: ignore[attr-defined]
    assert sent == {"cancel-job": True, "formatType": "CANONICAL", "target-directory": "file:///sp"}


def test_waiting_for_a_state_the_job_can_no_longer_reach(server: ThreadingHTTPServer) -> None:
    with pytest.raises(StackError, match="ended FAILED while waiting for RUNNING"):
        _client(server).wait_for_state("d" * 32, {"RUNNING"}, timeout=5)


def test_problem_from_body_keeps_plain_text() -> None:
    assert _problem_from_body(b"Service Unavailable") == "Service Unavailable"
    assert _problem_from_body(b"") == "(empty answer)"
