"""Every HTTP request is observed in the latency histogram under its route's template, as dashboards and alerts
query it (`/v1/runs/{run_id}`, not the path the client sent), with no service reachable."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.http.api import create_app
from app.observability import metrics
from app.runtime import Platform
from app.settings import Settings

pytestmark = pytest.mark.asyncio


def observed(method: str, route: str, status: str) -> float:
    """How many requests the histogram has observed under these labels so far."""
    labels = {"method": method, "route": route, "status": status}
    return sum(
        sample.value
        for sample in metrics.HTTP_LATENCY.collect()[0].samples
        if sample.name.endswith("_count") and sample.labels == labels
    )


async def requests_counted(method: str, route: str, status: str, send) -> float:
    """How many requests `send` made the histogram observe under these labels."""
    before = observed(method, route, status)
    platform = Platform.build(Settings(database_url="sqlite://"), embedded=True)
    transport = httpx.ASGITransport(app=create_app(platform, manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        await send(api)
    return observed(method, route, status) - before


async def test_a_request_to_a_resource_route_is_observed_under_its_full_template():
    counted = await requests_counted("GET", "/v1/runs/{run_id}", "401", lambda api: api.get(f"/v1/runs/{uuid.uuid4()}"))
    assert counted == 1


async def test_a_request_to_no_route_is_observed_as_unmatched():
    counted = await requests_counted("GET", "unmatched", "404", lambda api: api.get("/v1/nothing-here"))
    assert counted == 1
