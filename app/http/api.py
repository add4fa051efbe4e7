"""The application: the HTTP API (`/v1`), health and metrics endpoints, the run events WebSocket and the web
console (`/console`, from `app/console/`), composed from one router per resource (`routes/`), the shared
dependencies (`deps.py`), the error handlers (`errors.py`) and the middleware (`middleware.py`)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from app import console
from app.http import deps
from app.http.errors import register_exception_handlers
from app.http.middleware import BodyLimit, MeasureLatency
from app.http.routes import api_keys, dead_letters, events, operations, runs, workflows
from app.runtime import Platform


def create_app(platform: Platform, *, manage_lifecycle: bool = True) -> FastAPI:
    """The API serving `platform`; with `manage_lifecycle` it starts and stops the platform with itself."""

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
    deps.install(app, platform)
    app.add_middleware(BodyLimit, limit=platform.settings.max_body_bytes)
    # A span per request (exported when OTEL_EXPORTER_OTLP_ENDPOINT is set); runs started in it join its trace.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    app.add_middleware(MeasureLatency)
    register_exception_handlers(app)

    # Each router carries its full paths (`/v1/...`): the route a request matched is the router's own route
    # object, whose path names the request in the latency metric.
    for resource in (operations, workflows, runs, dead_letters, api_keys, events):
        app.include_router(resource.router)
    console.install(app)
    return app
