"""The `http.request` task against a real HTTP server on 127.0.0.1, scripted answer by answer."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import pytest_asyncio

from app.engine.http_task import (
    CircuitOpenError,
    HostCircuitBreakers,
    HttpTaskClient,
    UpstreamUnavailableError,
    default_client,
)
from app.engine.tasks import PermanentTaskError, TaskContext, registry

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers the n-th request with the n-th scripted answer (the last one repeats) and records every request."""

    def __init__(self) -> None:
        self.answers: list[Answer] = [Answer()]
        self.received: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handlers of timed-out requests write to closed sockets; that is expected here, not worth a traceback.
        self._http.handle_error = lambda request, client_address: None
        # A short poll interval lets `shutdown()` return at once instead of after the default half second.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def hits(self) -> int:
        return len(self.received)

    def script(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def _next_answer(self, request: ReceivedRequest) -> Answer:
        with self._lock:
            self.received.append(request)
            return self.answers[min(len(self.received), len(self.answers)) - 1]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received = ReceivedRequest(self.command, dict(self.headers), self.rfile.read(length))
                answer = server._next_answer(received)
                time.sleep(answer.delay_s)
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.start()
    yield scripted
    scripted.stop()


@pytest_asyncio.fixture
async def client():
    # A tiny backoff keeps the retry tests fast; the schedule itself is the same as in production.
    http_client = HttpTaskClient(backoff_base_s=0.01)
    yield http_client
    await http_client.close()


async def test_json_answer_is_returned_with_status_and_content_type(server, client):
    server.script(Answer(status=200, body=b'{"id": 7, "tags": ["a"]}'))

    output = await client.request({"url": f"{server.url}/things/7"})

    assert output == {"status": 200, "headers": {"content-type": "application/json"}, "json": {"id": 7, "tags": ["a"]}}


async def test_non_json_answer_is_returned_as_text(server, client):
    server.script(Answer(body=b"hello", content_type="text/plain"))

    output = await client.request({"url": server.url})

    assert output == {"status": 200, "headers": {"content-type": "text/plain"}, "text": "hello"}


async def test_json_input_is_sent_as_a_json_body_with_the_given_headers(server, client):
    await client.request({"url": server.url, "method": "post", "headers": {"x-trace": "abc"}, "json": {"n": 1}})

    [received] = server.received
    assert received.method == "POST"
    assert received.headers["x-trace"] == "abc"
    assert received.headers["content-type"] == "application/json"
    assert json.loads(received.body) == {"n": 1}


async def test_server_errors_are_retried_until_success(server, client):
    server.script(Answer(status=503), Answer(status=503), Answer(status=200))

    output = await client.request({"url": server.url, "retries": 2})

    assert output["status"] == 200
    assert server.hits == 3


async def test_exhausted_server_errors_raise_a_retryable_error(server, client):
    server.script(Answer(status=502))

    with pytest.raises(UpstreamUnavailableError, match="502") as raised:
        await client.request({"url": server.url, "retries": 1})

    assert not isinstance(raised.value, PermanentTaskError)
    assert server.hits == 2


async def test_client_error_fails_permanently_without_retry(server, client):
    server.script(Answer(status=404, body=b'{"error": "no such thing"}'))

    with pytest.raises(PermanentTaskError, match="404"):
        await client.request({"url": server.url, "retries": 2})

    assert server.hits == 1


async def test_timeouts_are_retried_then_fail(server, client):
    server.script(Answer(delay_s=0.5))

    with pytest.raises(UpstreamUnavailableError, match="ReadTimeout"):
        await client.request({"url": server.url, "timeout_s": 0.1, "retries": 1})

    # The retry was sent before the client gave up on it; the server's thread may record it a moment later.
    for _ in range(100):
        if server.hits == 2:
            break
        await asyncio.sleep(0.02)
    assert server.hits == 2


async def test_connection_errors_are_retried_then_fail(client):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]

    with pytest.raises(UpstreamUnavailableError, match="2 attempt"):
        await client.request({"url": f"http://127.0.0.1:{closed_port}", "retries": 1})


async def test_circuit_opens_after_repeated_failures_and_then_fails_fast(server):
    client = HttpTaskClient(breakers=HostCircuitBreakers(failure_threshold=3), backoff_base_s=0.01)
    server.script(Answer(status=500))
    host = server.url.removeprefix("http://")
    try:
        with pytest.raises(UpstreamUnavailableError):
            await client.request({"url": server.url, "retries": 2})
        hits_before = server.hits

        with pytest.raises(CircuitOpenError, match=f"circuit for {host} is open"):
            await client.request({"url": server.url})

        assert hits_before == 3
        assert server.hits == hits_before
    finally:
        await client.close()


async def test_client_errors_do_not_count_towards_the_circuit(server):
    client = HttpTaskClient(breakers=HostCircuitBreakers(failure_threshold=2), backoff_base_s=0.01)
    server.script(Answer(status=404))
    try:
        for _ in range(3):
            with pytest.raises(PermanentTaskError):
                await client.request({"url": server.url})

        assert client.breakers.for_host(server.url.removeprefix("http://")).closed
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("step_input", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/file"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://example.com", "method": "FETCH"}, "method"),
        ({"url": "http://example.com", "headers": {"x": 1}}, "headers"),
        ({"url": "http://example.com", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://example.com", "retries": -1}, "retries"),
        ({"url": "http://example.com", "json": {}, "body": "x"}, "body"),
        ({"url": "http://example.com", "expect_json": "yes"}, "expect_json"),
    ],
)
async def test_bad_input_is_rejected_naming_the_field(client, step_input, field):
    with pytest.raises(PermanentTaskError, match=rf"^{field}:"):
        await client.request(step_input)


async def test_task_is_registered_as_http_request(server):
    context = TaskContext(run_id="run-1", step="fetch", attempt=1, step_input={"url": server.url})
    try:
        output = await registry.run("http.request", context)
    finally:
        await default_client.close()

    assert output["json"] == {"ok": True}
