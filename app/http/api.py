"""The HTTP API (`/v1`), health and metrics endpoints, and the run events WebSocket."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.adapters.cache import RateLimiter
from app.adapters.errors import is_outage
from app.adapters.payloads import PayloadTooLargeError
from app.adapters.store import ApiKey
from app.engine.definitions import DefinitionError
from app.engine.engine import RunRequest, UnknownWorkflowError
from app.engine.idempotency import ConflictingKeysInBatchError, IdempotencyKeyReusedError
from app.engine.state import FINISHED_RUN, REOPENABLE_RUN, RunStatus
from app.http import schemas
from app.observability import metrics
from app.runtime import Platform, generate_api_key

ROLE_RANK = {"read": 0, "submit": 1, "admin": 2}
# Bounds of the database's integer columns: a larger number in a request is a 422, never a database error.
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
WorkflowName = Annotated[str, FastApiPath(pattern=schemas.NAME_PATTERN)]
# The events stream looks for new events this often on its own: a doorbell ring is a hint that can be lost.
EVENTS_POLL_S = 5


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error_response(status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _responses(*statuses: int) -> dict[int, dict[str, Any]]:
    meaning = {
        400: "The request is malformed: a body that is not decodable JSON, or a cursor this API did not issue.",
        401: "Missing or unknown API key.",
        403: "The API key's role does not allow this.",
        404: "No such resource.",
        409: "The request conflicts with the resource's state.",
        413: "The request body is larger than the limit.",
        422: "The request is well-formed but invalid; the message names the problem (e.g. the field, or an "
        "Idempotency-Key already used for a different workflow or input).",
        429: "Too many requests for this API key; retry after the Retry-After header's seconds.",
        503: "A dependency (database, cache) is unreachable; retry after the Retry-After header's seconds.",
    }
    return {status: {"model": schemas.ErrorOut, "description": meaning[status]} for status in statuses}


AUTHENTICATED = (401, 403, 422, 429, 503)
WITH_BODY = (400, 413)  # a body that cannot be decoded; a body over the limit


class BodyLimit:
    """Rejects request bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = _error_response(413, "body_too_large", f"the request body exceeds {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class MeasureLatency:
    """Observes every HTTP request's latency by method, route template and status (plain ASGI: cheaper than
    a BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_LATENCY.labels(scope["method"], path, str(status)).observe(time.perf_counter() - started)


class ApiKeys:
    """Looks up API keys by their hash, caching hits briefly so authentication costs no query per request."""

    def __init__(self, platform: Platform):
        self._platform = platform
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def resolve(self, secret: str) -> ApiKey | None:
        ttl = self._platform.settings.api_key_cache_s
        cached = self._cache.get(secret)
        if cached and time.monotonic() - cached[0] < ttl:
            return cached[1]
        key = await self._platform.store.api_key_by_secret(secret)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[secret] = (time.monotonic(), key)
        return key

    def forget(self) -> None:
        self._cache.clear()


def create_app(platform: Platform, *, manage_lifecycle: bool = True) -> FastAPI:
    settings = platform.settings
    api_keys = ApiKeys(platform)
    limiter = RateLimiter(platform.redis, settings.rate_limit_per_second)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if manage_lifecycle:
            await platform.start()
        yield
        if manage_lifecycle:
            await platform.stop()

    app = FastAPI(
        title="workflow-platform",
        version="1.0.0",
        description="Register workflows (DAGs of steps), start runs, and watch them.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # A span per request (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set); runs started in it join its trace.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")

    app.add_middleware(MeasureLatency)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        if is_outage(error):
            return _error_response(
                503, "unavailable", "a dependency is unreachable; retry shortly", headers={"Retry-After": "1"}
            )
        return _error_response(500, "internal", "an unexpected error; it has been logged")

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error.status, error.code, error.message, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"location": ".".join(str(part) for part in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in error.errors()
        ]
        summary = "; ".join(f"{d['location']}: {d['message']}" for d in details[:5])
        return _error_response(422, "invalid_request", summary, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error"
        )
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by several routes has more.
            allowed = {
                method
                for route in app.router.routes
                if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
                for method in route.methods or ()
            }
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return _error_response(error.status_code, code, str(error.detail), headers=headers)

    def require(role: str):
        async def authorised(authorization: Annotated[str | None, Header()] = None) -> ApiKey:
            scheme, _, secret = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not secret:
                raise ApiError(401, "unauthenticated", "send an API key as 'Authorization: Bearer <key>'")
            key = await api_keys.resolve(secret.strip())
            if key is None:
                raise ApiError(401, "unauthenticated", "unknown or revoked API key")
            if ROLE_RANK[key.role] < ROLE_RANK[role]:
                raise ApiError(403, "forbidden", f"this needs the {role!r} role; the key has {key.role!r}")
            allowance = await limiter.take(str(key.id))
            if not allowance.allowed:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"more than {settings.rate_limit_per_second} requests per second for this key",
                    headers={"Retry-After": str(allowance.retry_after_s)},
                )
            return key

        return authorised

    reader, submitter, admin = Depends(require("read")), Depends(require("submit")), Depends(require("admin"))

    # Health and metrics

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: database, broker and cache reachable",
        responses={503: {"model": schemas.ErrorOut, "description": "A dependency is unreachable."}},
    )
    async def readyz():
        failed = await platform.unready_dependencies()
        if failed:
            return _error_response(
                503, "not_ready", "not ready: " + ", ".join(failed) + " unreachable", headers={"Retry-After": "1"}
            )
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # Workflows

    @app.post(
        "/v1/workflows",
        tags=["workflows"],
        status_code=201,
        response_model=schemas.WorkflowOut,
        responses={
            200: {"model": schemas.WorkflowOut, "description": "This definition is already the latest."},
            **_responses(*AUTHENTICATED, *WITH_BODY),
        },
        summary="Register a workflow; a changed definition becomes its next version",
    )
    async def register_workflow(body: schemas.WorkflowIn, response: Response, _key: ApiKey = submitter):
        spec = body.to_spec(settings.worker_queue, settings.max_task_timeout_s)
        try:
            workflow, created = await platform.engine.register_workflow(spec)
        except DefinitionError as error:
            raise ApiError(422, "invalid_workflow", str(error)) from None
        response.status_code = 201 if created else 200
        return _workflow_out(workflow, created)

    @app.get(
        "/v1/workflows/{name}",
        tags=["workflows"],
        response_model=schemas.WorkflowOut,
        responses=_responses(*AUTHENTICATED, 404),
        summary="The latest version of a workflow",
    )
    async def get_workflow(
        name: WorkflowName, version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None, _key: ApiKey = reader
    ):
        workflow = await platform.store.workflow(name, version)
        if workflow is None:
            raise ApiError(404, "not_found", f"no workflow {name!r}" + (f" version {version}" if version else ""))
        return _workflow_out(workflow, False)

    # Runs

    @app.post(
        "/v1/workflows/{name}/runs",
        tags=["runs"],
        status_code=201,
        response_model=schemas.RunCreated,
        responses={
            200: {"model": schemas.RunCreated, "description": "The Idempotency-Key returned an existing run."},
            **_responses(*AUTHENTICATED, 404, *WITH_BODY),
        },
        summary="Start a run of the workflow's latest version",
    )
    async def start_run(
        name: WorkflowName,
        body: schemas.RunIn,
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
        key: ApiKey = submitter,
    ):
        (run,) = await _start(platform, [RunRequest(name, body.input, idempotency_key)], key)
        response.status_code = 201 if run.created else 200
        return schemas.RunCreated(id=run.id, workflow=run.workflow, status=run.status, created=run.created)

    @app.post(
        "/v1/runs:batch",
        tags=["runs"],
        status_code=201,
        response_model=schemas.BatchRunsOut,
        responses=_responses(*AUTHENTICATED, 404, *WITH_BODY),
        summary="Start many runs in one request (all or none)",
    )
    async def start_runs(body: schemas.BatchRunsIn, key: ApiKey = submitter):
        if len(body.runs) > settings.max_batch_runs:
            raise ApiError(
                422, "batch_too_large", f"{len(body.runs)} runs; a batch holds at most {settings.max_batch_runs}"
            )
        created = await _start(
            platform,
            [RunRequest(item.workflow, item.input, item.idempotency_key) for item in body.runs],
            key,
            batch=True,
        )
        return schemas.BatchRunsOut(
            runs=[schemas.RunCreated(id=r.id, workflow=r.workflow, status=r.status, created=r.created) for r in created]
        )

    @app.get(
        "/v1/runs/{run_id}",
        tags=["runs"],
        response_model=schemas.RunOut,
        responses=_responses(*AUTHENTICATED, 404),
        summary="A run with its steps, outputs, errors and timings",
    )
    async def get_run(run_id: uuid.UUID, _key: ApiKey = reader):
        found = await platform.store.get_run(run_id)
        if found is None:
            raise ApiError(404, "not_found", f"no run {run_id}")
        run, steps = found
        return schemas.RunOut(
            **_summary(run).model_dump(),
            input=await platform.payloads.resolve(run.input),
            error=run.error,
            steps=[
                schemas.StepOut(
                    name=s.name,
                    task=s.task,
                    status=s.status,
                    depends_on=s.depends_on,
                    attempt=s.attempt,
                    max_attempts=s.max_attempts,
                    output=s.output,
                    error=s.error,
                    started_at=s.started_at,
                    finished_at=s.finished_at,
                )
                for s in steps
            ],
        )

    @app.get(
        "/v1/runs",
        tags=["runs"],
        response_model=schemas.RunPage,
        responses=_responses(*AUTHENTICATED, 400),
        summary="Runs, newest first, filtered and paged by cursor",
    )
    async def list_runs(
        workflow: Annotated[str | None, Query(pattern=schemas.NAME_PATTERN)] = None,
        status: Annotated[RunStatus | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        _key: ApiKey = reader,
    ):
        after = _decode_cursor(cursor) if cursor else None
        rows = await platform.store.list_runs(workflow, status, after, limit + 1)
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return schemas.RunPage(runs=[_summary(row) for row in page], next_cursor=next_cursor)

    @app.post(
        "/v1/runs/{run_id}/cancel",
        tags=["runs"],
        response_model=schemas.RunStatusOut,
        responses=_responses(*AUTHENTICATED, 404, 409),
        summary="Cancel a run and its unfinished steps",
    )
    async def cancel_run(run_id: uuid.UUID, _key: ApiKey = submitter):
        status, _changed = await platform.engine.cancel_run(run_id)
        if status is None:
            raise ApiError(404, "not_found", f"no run {run_id}")
        if status != "cancelled":
            raise ApiError(409, "run_finished", f"run {run_id} already {status}")
        return schemas.RunStatusOut(id=run_id, status=status)

    @app.post(
        "/v1/runs/{run_id}/retry",
        tags=["runs"],
        response_model=schemas.RunStatusOut,
        responses=_responses(*AUTHENTICATED, 404, 409),
        summary="Run a failed run's failed steps again",
    )
    async def retry_run(run_id: uuid.UUID, _key: ApiKey = submitter):
        status, changed = await platform.engine.retry_run(run_id)
        if status is None:
            raise ApiError(404, "not_found", f"no run {run_id}")
        if not changed:
            raise ApiError(409, "run_not_failed", f"run {run_id} is {status}; only failed or cancelled runs retry")
        return schemas.RunStatusOut(id=run_id, status=status)

    @app.get(
        "/v1/dead-letters",
        tags=["operations"],
        response_model=list[schemas.DeadLetterOut],
        responses=_responses(*AUTHENTICATED),
        summary="Messages the broker dead-lettered, newest first",
    )
    async def list_dead_letters(
        before: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        _key: ApiKey = reader,
    ):
        rows = await platform.store.list_dead_letters(before, limit)
        return [schemas.DeadLetterOut.model_validate(row, from_attributes=True) for row in rows]

    # API keys

    @app.post(
        "/v1/api-keys",
        tags=["api keys"],
        status_code=201,
        response_model=schemas.ApiKeyCreated,
        responses=_responses(*AUTHENTICATED, *WITH_BODY),
        summary="Create an API key (shown once)",
    )
    async def create_api_key(body: schemas.ApiKeyIn, _key: ApiKey = admin):
        secret = generate_api_key()
        key = await platform.store.create_api_key(body.name, body.role, secret)
        return schemas.ApiKeyCreated(**_key_out(key).model_dump(), key=secret)

    @app.get(
        "/v1/api-keys",
        tags=["api keys"],
        response_model=list[schemas.ApiKeyOut],
        responses=_responses(*AUTHENTICATED),
        summary="API keys (never their secrets)",
    )
    async def list_api_keys(_key: ApiKey = admin):
        return [_key_out(key) for key in await platform.store.list_api_keys()]

    @app.delete(
        "/v1/api-keys/{key_id}",
        tags=["api keys"],
        status_code=204,
        responses=_responses(*AUTHENTICATED, 404),
        summary="Revoke an API key",
    )
    async def revoke_api_key(key_id: uuid.UUID, _key: ApiKey = admin) -> Response:
        if not await platform.store.revoke_api_key(key_id):
            raise ApiError(404, "not_found", f"no active API key {key_id}")
        api_keys.forget()
        return Response(status_code=204)

    # Events

    @app.websocket("/v1/runs/{run_id}/events")
    async def run_events(
        websocket: WebSocket,
        run_id: uuid.UUID,
        after: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
        token: Annotated[str | None, Query(max_length=200)] = None,
    ):
        """Every event of the run in order: first those recorded, then live ones. Closes (1000) after
        `run.succeeded`; after `run.failed` or `run.cancelled` it stays open `APP_EVENTS_LINGER_S`, so that a retry,
        which re-opens the run, streams on."""
        # Accept first so a refusal can carry its reason: close codes 4401, 4403, 4404 and 4429 mirror HTTP's.
        await websocket.accept()
        authorization = websocket.headers.get("authorization") or (f"Bearer {token}" if token else None)
        try:
            await require("read")(authorization)
        except ApiError as error:
            await websocket.close(code=4000 + error.status, reason=error.message)
            return
        if await platform.store.run_statuses([run_id]) == {}:
            await websocket.close(code=4404, reason=f"no run {run_id}")
            return
        await _stream_events(websocket, platform, run_id, after)

    return app


async def _stream_events(websocket: WebSocket, platform: Platform, run_id: uuid.UUID, delivered: int) -> None:
    """Sends the run's events after `delivered` as they are recorded, until the run has finished for good, the
    client goes away, or a failed or cancelled run stays so for the linger time. Quiet periods keep the stream
    open: the server's WebSocket pings keep the connection alive meanwhile."""
    loop = asyncio.get_running_loop()
    rings = platform.doorbell.listen(str(run_id))
    client_gone = asyncio.ensure_future(_until_disconnect(websocket))
    next_ring: asyncio.Future | None = None
    finished_at: float | None = None  # when the run last became failed or cancelled
    try:
        await anext(rings)  # subscribed: anything committed from here on rings
        while True:
            for event in await platform.store.events_after(run_id, delivered):
                await websocket.send_json(
                    {
                        "seq": event.seq,
                        "type": event.type,
                        "step": event.step,
                        "data": event.data,
                        "created_at": event.created_at.isoformat(),
                    }
                )
                delivered = event.seq
                status = event.type.removeprefix("run.") if event.type.startswith("run.") else None
                if status in FINISHED_RUN and status not in REOPENABLE_RUN:
                    await websocket.close(code=1000)
                    return
                if status is not None:
                    finished_at = loop.time() if status in REOPENABLE_RUN else None
            wait_s = EVENTS_POLL_S
            if finished_at is not None:
                wait_s = min(wait_s, finished_at + platform.settings.events_linger_s - loop.time())
                if wait_s <= 0:
                    await websocket.close(code=1000)
                    return
            # One ring is awaited across polls: cancelling it on a timeout would end the generator.
            next_ring = next_ring or asyncio.ensure_future(anext(rings))
            done, _ = await asyncio.wait({next_ring, client_gone}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if client_gone in done:
                return
            if next_ring in done:
                next_ring = None
    except WebSocketDisconnect:
        return
    finally:
        pending = [task for task in (next_ring, client_gone) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await rings.aclose()


async def _until_disconnect(websocket: WebSocket) -> None:
    """Returns when the client closes (whatever it sends before is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _start(platform: Platform, requests: list[RunRequest], key: ApiKey, *, batch: bool = False):
    try:
        return await platform.engine.start_runs(requests, key.id)
    except UnknownWorkflowError as error:
        raise ApiError(404, "not_found", f"no workflow {error.args[0]!r}") from None
    except IdempotencyKeyReusedError as error:
        field = f"body.runs.{error.index}.idempotency_key" if batch else "header.idempotency-key"
        raise ApiError(422, "idempotency_key_reused", f"{field}: {error}") from None
    except ConflictingKeysInBatchError as error:
        raise ApiError(422, "idempotency_key_reused", str(error)) from None
    except PayloadTooLargeError as error:
        raise ApiError(413, "input_too_large", str(error)) from None


def _workflow_out(workflow, created: bool) -> schemas.WorkflowOut:
    return schemas.WorkflowOut(
        name=workflow.name,
        version=workflow.version,
        created=created,
        created_at=workflow.created_at,
        steps=[schemas.StepIn(**step) for step in workflow.spec.canonical()["steps"]],
    )


def _summary(run) -> schemas.RunSummary:
    return schemas.RunSummary(
        id=run.id,
        workflow=run.workflow_name,
        version=run.workflow_version,
        status=run.status,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _key_out(key: ApiKey) -> schemas.ApiKeyOut:
    return schemas.ApiKeyOut(
        id=key.id, name=key.name, role=key.role, created_at=key.created_at, revoked_at=key.revoked_at
    )


def _encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        after = datetime.fromisoformat(created_at), uuid.UUID(run_id)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
    try:
        # The database compares in UTC: a time that leaves the calendar's range there (0001-01-01T00:00+05:00)
        # is well-formed but can match nothing.
        after[0].astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid_request", "query.cursor: its time is out of range in UTC") from None
    return after
