"""Stop-with-savepoint and savepoint retries of the Flink REST client, against a small real
HTTP server that answers the way Flink 2.0 does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.cluster.rest import SAVEPOINT_ATTEMPTS, FlinkRest
from pipelines.errors import StackError

JOB = "e" * 32
DECLINED = {"status": {"id": "COMPLETED"}, "operation": {"failure-cause": {
    "stack-trace": "java.util.concurrent.CompletionException: org.apache.flink.runtime."
                   "checkpoint.CheckpointException: Checkpoint was declined (task is closing)\n"
                   "\tat org.apache.X.y(X.java:1)\n"}}}
STORED = {"status": {"id": "COMPLETED"}, "operation": {"location": "file:/sp/savepoint-eee-1"}}


class _Flink:
    """Answers savepoint/stop triggers: the first ``declines`` attempts are declined."""

    def __init__(self, declines: int, state: str = "RUNNING") -> None:
        self.declines = declines
        self.state = state
        self.requests: list[tuple[str, str, Any]] = []

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if method == "POST" and path in (f"/jobs/{JOB}/stop", f"/jobs/{JOB}/savepoints"):
            return 202, {"request-id": f"t{len(self.requests)}"}
        if method == "GET" and path.startswith(f"/jobs/{JOB}/savepoints/t"):
            triggers = sum(1 for m, _, _ in self.requests if m == "POST")
            if triggers <= self.declines:
                return 200, DECLINED
            return 200, STORED
        if method == "GET" and path == f"/jobs/{JOB}":
            return 200, {"state": self.state}
        return 404, {"errors": ["Not found"]}


@pytest.fixture()
def flink(request: pytest.FixtureRequest) -> Iterator[tuple[_Flink, FlinkRest]]:
    fake = _Flink(*request.param)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            status, body = fake.answer(self.command, self.path,
                                       json.loads(raw) if raw else None)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield fake, FlinkRest(f"127.0.0.1:{httpd.server_address[1]}", timeout=5)
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("flink", [(0,)], indirect=True)
def test_stop_with_drain(flink: tuple[_Flink, FlinkRest]) -> None:
    fake, rest = flink
    assert rest.stop(JOB, "file:///sp", drain=True, poll=0.01) == "file:/sp/savepoint-eee-1"
    assert fake.requests[0] == ("POST", f"/jobs/{JOB}/stop",
                                {"drain": True, "formatType": "CANONICAL",
                                 "targetDirectory": "file:///sp"})


@pytest.mark.parametrize("flink", [(2,)], indirect=True)
def test_a_declined_savepoint_is_tried_again_while_the_job_runs(
    flink: tuple[_Flink, FlinkRest],
) -> None:
    fake, rest = flink
    assert rest.savepoint(JOB, cancel=True, poll=0.01) == "file:/sp/savepoint-eee-1"
    triggers = [body for method, _, body in fake.requests if method == "POST"]
    assert triggers == [{"cancel-job": True, "formatType": "CANONICAL"}] * 3


@pytest.mark.parametrize("flink", [(1, "FINISHED")], indirect=True)
def test_a_declined_savepoint_of_a_finished_job_fails(flink: tuple[_Flink, FlinkRest]) -> None:
    fake, rest = flink
    with pytest.raises(StackError, match="Checkpoint was declined"):
        rest.savepoint(JOB, poll=0.01)
    assert sum(1 for method, _, _ in fake.requests if method == "POST") == 1


@pytest.mark.parametrize("flink", [(99,)], indirect=True)
def test_savepoint_retries_are_bounded(flink: tuple[_Flink, FlinkRest]) -> None:
    fake, rest = flink
    with pytest.raises(StackError, match="Checkpoint was declined"):
        rest.stop(JOB, poll=0.01)
    assert sum(1 for method, _, _ in fake.requests if method == "POST") == SAVEPOINT_ATTEMPTS
