"""`python -m app api|worker|migrate|dev|smoke`: the container contract's entry point."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app import migrations, smoke
from app.http.api import create_app
from app.http.schemas import WorkflowIn
from app.liveness import Liveness
from app.observability import configure_logging, configure_tracing
from app.runtime import Platform, generate_api_key
from app.settings import Settings

log = logging.getLogger("app")
# Envoy and most HTTP clients drop idle upstream connections well within this.
KEEP_ALIVE_S = 75

DEMO_WORKFLOW = {
    "name": "demo.diamond",
    "steps": [
        {"name": "fetch", "task": "builtin.echo", "input": {"source": "demo"}},
        {"name": "left", "task": "builtin.sleep", "depends_on": ["fetch"], "input": {"seconds": 0.2}},
        {"name": "right", "task": "builtin.echo", "depends_on": ["fetch"], "input": {"side": "right"}},
        {"name": "join", "task": "builtin.echo", "depends_on": ["left", "right"]},
    ],
}


def _server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            access_log=False,
            log_config=None,
            ws="websockets-sansio",
            # Longer than the idle timeout of the proxies and clients that keep connections to the API open: a
            # server that closes an idle connection first races the next request sent on it (a reset, not a 5xx).
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    )


async def _serve_api(settings: Settings) -> None:
    platform = Platform.build(settings)
    # Liveness on APP_METRICS_PORT from a thread: it answers within milliseconds however busy the event loop is.
    liveness = Liveness(settings.host, settings.metrics_port)
    liveness.start()
    beating = asyncio.create_task(liveness.beat(), name="liveness-beat")
    try:
        await _serve(_server(create_app(platform), settings.host, settings.port))
    finally:
        beating.cancel()
        liveness.stop()


async def _serve(server: uvicorn.Server) -> None:
    # uvicorn stops gracefully on SIGTERM by itself: it finishes in-flight requests first.
    await server.serve()


def _worker_health_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _run_worker(settings: Settings) -> None:
    platform = Platform.build(settings)
    await platform.start()
    worker = platform.worker()
    await worker.start()
    health = _server(_worker_health_app(), settings.host, settings.metrics_port)
    health.install_signal_handlers = lambda: None
    health_task = asyncio.create_task(health.serve())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("worker %s consuming %s", worker.owner, settings.worker_queue)
    await stopping.wait()
    log.info("stopping: finishing %d running steps, taking no new ones", worker.busy)
    await worker.drain()
    health.should_exit = True
    await health_task
    await platform.stop()


async def _run_dev(settings: Settings, host: str, port: int) -> None:
    platform = Platform.build(settings, embedded=True)
    app = create_app(platform, manage_lifecycle=False)
    await platform.start()
    worker = platform.worker()
    await worker.start()
    key = settings.bootstrap_api_key or generate_api_key()
    await platform.ensure_admin_key(key)
    demo = WorkflowIn.model_validate(DEMO_WORKFLOW)
    await platform.engine.register_workflow(demo.to_spec(settings.worker_queue, settings.max_task_timeout_s))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(
        f"""
workflow-platform dev: API, worker and relay in one process (SQLite, in-process broker, in-process Redis)
  API        {url}   (docs: {url}/docs)
  API key    {key}
  console    {url}/console   (sign in with the API key)
  try        curl -s -X POST {url}/v1/workflows/demo.diamond/runs -H 'Authorization: Bearer {key}' \\
               -H 'Content-Type: application/json' -d '{{"input": {{"order": 42}}}}'
""",
        flush=True,
    )
    try:
        await _serve(_server(app, host, port))
    finally:
        await worker.drain()
        await platform.stop()


def tune_garbage_collector() -> None:
    """The hot paths allocate many short-lived objects (rows, events, messages) and few cycles: with the default
    threshold the cyclic collector runs hundreds of times a second and rescans every module object loaded at
    start-up. Those are frozen out of its sight, and it runs a fraction as often."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Run one role of the workflow platform.")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("api", help="serve the HTTP API on APP_PORT (8000)")
    roles.add_parser("worker", help="run steps; health and metrics on APP_METRICS_PORT (9100)")
    roles.add_parser("migrate", help="apply database migrations and exit")
    dev = roles.add_parser("dev", help="the whole platform in one process on embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--database", help="SQLite file (default: a file in the temp directory)")
    smoke.add_arguments(roles.add_parser("smoke", help="run a workflow end to end through a deployed API, then exit"))
    args = parser.parse_args(argv)
    if args.role == "smoke":
        # A client of the API: the platform's own settings, logging and tracing are not its concern.
        return smoke.main(args)

    try:
        settings = Settings()
    except (SettingsError, ValidationError) as error:
        parser.exit(2, f"{parser.prog}: invalid configuration: {error}\n")
    configure_logging(settings.log_format if args.role != "dev" else "text", settings.log_level)
    configure_tracing(f"workflow-{args.role}")
    tune_garbage_collector()

    if args.role == "migrate":
        if not settings.database_url:
            parser.error("neither APP_DATABASE_URL nor APP_DATABASE_URL_FILE is set")
        retry = migrations.ConnectRetry(
            timeout_s=settings.migrate_connect_timeout_s,
            initial_s=settings.migrate_retry_initial_s,
            max_s=settings.migrate_retry_max_s,
        )
        try:
            migrations.upgrade_when_reachable(settings.database_url, retry)
        except migrations.DatabaseUnreachable as error:
            log.error("migrations not applied: %s", error)
            return 1
        log.info("database schema is up to date")
        return 0
    if args.role == "api":
        asyncio.run(_serve_api(settings))
        return 0
    if args.role == "worker":
        asyncio.run(_run_worker(settings))
        return 0
    database = Path(args.database or os.path.join(tempfile.gettempdir(), "workflow-platform-dev.sqlite3"))
    settings = settings.model_copy(update={"database_url": settings.database_url or f"sqlite:///{database}"})
    migrations.upgrade(settings.database_url)
    asyncio.run(_run_dev(settings, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
