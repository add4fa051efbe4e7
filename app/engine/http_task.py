"""The built-in `http.request` task: one HTTP call with short retries and a circuit breaker per host.

Step input: `url` (http/https), `method` ("GET"), `headers` ({}), `json` or `body`, `timeout_s` (10), `retries` (2)
and `expect_json` (decided by the content type when absent). Output: `{"status", "headers", "json" | "text"}`.

Failures map onto the engine's retry model: a 4xx answer or bad input raises `PermanentTaskError` because repeating
the same request cannot fix it; 5xx answers, connection errors and timeouts are retried here a few times with a
short backoff, then raised as ordinary exceptions so the engine retries the step later. A host that keeps failing
opens its circuit, and calls to it then fail fast instead of piling up on a struggling service.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx
from circuitbreaker import CircuitBreaker

from app.engine.tasks import PermanentTaskError, TaskContext, task

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 2


class UpstreamServerError(Exception):
    """A 5xx answer: the host is up but failing, so it counts against its circuit and is worth retrying."""

    def __init__(self, host: str, status: int) -> None:
        super().__init__(f"{host} answered {status}")
        self.status = status


class UpstreamUnavailableError(Exception):
    """Every attempt failed with a 5xx, a connection error or a timeout; the engine retries the step later."""


class CircuitOpenError(Exception):
    """The host's circuit is open: the call fails without touching the network."""

    def __init__(self, host: str, remaining_s: float) -> None:
        super().__init__(f"circuit for {host} is open (retrying it in {max(remaining_s, 0):.0f} s)")
        self.host = host


# Only failures that say something about the host's health trip its circuit. A 4xx is not among them: it is
# returned rather than raised, so the breaker sees a successful call.
CIRCUIT_FAILURES = (UpstreamServerError, httpx.TransportError)


@dataclass(frozen=True)
class HttpRequest:
    """A validated `http.request` step input."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    content: str | None
    timeout_s: float
    retries: int
    expect_json: bool | None

    @property
    def host(self) -> str:
        # Services on one machine often differ only by port, so the port is part of what a circuit guards.
        return self.url.host if self.url.port is None else f"{self.url.host}:{self.url.port}"

    @classmethod
    def from_step_input(cls, step_input: dict[str, Any]) -> HttpRequest:
        url = _parse_url(step_input.get("url"))

        method = step_input.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in ALLOWED_METHODS:
            raise PermanentTaskError(f"method: expected one of {sorted(ALLOWED_METHODS)}, got {method!r}")

        raw_headers = step_input.get("headers", {})
        if not isinstance(raw_headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in raw_headers.items()
        ):
            raise PermanentTaskError("headers: expected an object of string names to string values")

        headers = httpx.Headers(raw_headers)
        content = step_input.get("body")
        if content is not None and not isinstance(content, str):
            raise PermanentTaskError("body: expected a string")
        if "json" in step_input:
            if content is not None:
                raise PermanentTaskError("body: give either json or body, not both")
            # Encoded here rather than by httpx, which would send no body at all for a JSON null.
            content = json.dumps(step_input["json"])
            headers.setdefault("content-type", "application/json")

        timeout_s = step_input.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise PermanentTaskError(f"timeout_s: expected a positive number, got {timeout_s!r}")

        retries = step_input.get("retries", DEFAULT_RETRIES)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise PermanentTaskError(f"retries: expected a non-negative integer, got {retries!r}")

        expect_json = step_input.get("expect_json")
        if expect_json is not None and not isinstance(expect_json, bool):
            raise PermanentTaskError(f"expect_json: expected true or false, got {expect_json!r}")

        return cls(
            method=method.upper(),
            url=url,
            headers=headers,
            content=content,
            timeout_s=float(timeout_s),
            retries=retries,
            expect_json=expect_json,
        )


def _parse_url(raw_url: Any) -> httpx.URL:
    if not isinstance(raw_url, str) or not raw_url:
        raise PermanentTaskError("url: required, as an http or https address")
    try:
        url = httpx.URL(raw_url)
    except httpx.InvalidURL as error:
        raise PermanentTaskError(f"url: {error}") from None
    if url.scheme not in ALLOWED_SCHEMES or not url.host:
        raise PermanentTaskError(f"url: expected an http or https address, got {raw_url!r}")
    return url


class HostCircuitBreakers:
    """One `CircuitBreaker` per host, created on first use."""

    def __init__(self, failure_threshold: int = 5, recovery_timeout_s: float = 30) -> None:
        self._failure_threshold = failure_threshold
        self._recovery_timeout_s = recovery_timeout_s
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_host(self, host: str) -> CircuitBreaker:
        if host not in self._breakers:
            # Built directly rather than through `@circuit`, which would also file every host in the library's
            # process-wide CircuitBreakerMonitor, outliving this registry.
            self._breakers[host] = CircuitBreaker(
                failure_threshold=self._failure_threshold,
                recovery_timeout=self._recovery_timeout_s,
                expected_exception=CIRCUIT_FAILURES,
                name=f"http:{host}",
            )
        return self._breakers[host]


class HttpTaskClient:
    """Runs `http.request` steps over one shared connection pool, with retries and per-host circuits."""

    def __init__(
        self,
        breakers: HostCircuitBreakers | None = None,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 5.0,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.breakers = breakers or HostCircuitBreakers()
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._client: httpx.AsyncClient | None = None

    def _http_client(self) -> httpx.AsyncClient:
        # Created on first use so that importing the task module opens nothing, and after `close()` so a worker that
        # shut its pool down and started again still works.
        if self._client is None:
            self._client = httpx.AsyncClient(limits=self._limits, follow_redirects=True)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def request(self, step_input: dict[str, Any]) -> dict[str, Any]:
        request = HttpRequest.from_step_input(step_input)
        breaker = self.breakers.for_host(request.host)
        failed_attempts = 0
        while True:
            # Checked before every attempt: the circuit can open between our own retries.
            if breaker.opened:
                raise CircuitOpenError(request.host, breaker.open_remaining)
            try:
                response = await breaker.call_async(self._send, request)
            except CIRCUIT_FAILURES as error:
                if failed_attempts == request.retries:
                    raise UpstreamUnavailableError(
                        f"{request.method} {request.url} failed after {failed_attempts + 1} attempt(s): "
                        f"{_describe(error)}"
                    ) from error
                await asyncio.sleep(self._backoff_delay_s(failed_attempts))
                failed_attempts += 1
            else:
                return _task_output(request, response)

    async def _send(self, request: HttpRequest) -> httpx.Response:
        response = await self._http_client().request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            timeout=request.timeout_s,
        )
        if response.status_code >= 500:
            raise UpstreamServerError(request.host, response.status_code)
        return response

    def _backoff_delay_s(self, retry: int) -> float:
        # Exponential growth spaces retries out; the jitter keeps many workers that failed together from
        # retrying in lockstep.
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2**retry)
        return random.uniform(ceiling / 2, ceiling)


def _describe(error: Exception) -> str:
    # Some httpx errors (notably timeouts) have an empty message; the type name still says what happened.
    return str(error) or type(error).__name__


def _task_output(request: HttpRequest, response: httpx.Response) -> dict[str, Any]:
    if 400 <= response.status_code < 500:
        raise PermanentTaskError(
            f"{request.method} {request.url} answered {response.status_code}: {response.text[:200]}"
        )
    content_type = response.headers.get("content-type")
    output: dict[str, Any] = {
        "status": response.status_code,
        "headers": {"content-type": content_type} if content_type else {},
    }
    expect_json = request.expect_json if request.expect_json is not None else _is_json_content_type(content_type)
    if not expect_json:
        output["text"] = response.text
    elif not response.content:
        output["json"] = None
    else:
        try:
            output["json"] = response.json()
        except json.JSONDecodeError as error:
            raise PermanentTaskError(f"{request.method} {request.url} answered invalid JSON: {error}") from None
    return output


def _is_json_content_type(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


default_client = HttpTaskClient()


@task("http.request")
async def http_request(context: TaskContext) -> dict[str, Any]:
    return await default_client.request(context.step_input)


async def close() -> None:
    """Closes the shared connection pool; call it when the worker shuts down."""
    await default_client.close()
