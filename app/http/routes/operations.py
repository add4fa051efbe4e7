"""Liveness, readiness and Prometheus metrics: unauthenticated, for the cluster and its monitoring."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.http import schemas
from app.http.deps import PlatformDep
from app.http.errors import error_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, broker and cache reachable",
    responses={503: {"model": schemas.ErrorOut, "description": "A dependency is unreachable."}},
)
async def readyz(platform: PlatformDep):
    failed = await platform.unready_dependencies()
    if failed:
        return error_response(
            503, "not_ready", "not ready: " + ", ".join(failed) + " unreachable", headers={"Retry-After": "1"}
        )
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
