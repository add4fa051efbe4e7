"""The OpenAPI document is exact. Schemathesis generates requests from it, valid ones and every kind of invalid
one (wrong types, out-of-range numbers, missing fields, malformed bodies), and sends them to a real
`python -m app api` process: no answer may be a 5xx, every status and body must be one the document lists, and
invalid input must be refused with a 4xx."""

import asyncio
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.app.conftest import delete_queues, make_settings, start_process, wait_answering

ADMIN_KEY = f"contract-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def api_url(database_url: str):
    # A body limit high enough that oversized arrays reach validation (the 413 has its own test).
    platform_settings = make_settings(database_url, bootstrap_api_key=ADMIN_KEY, max_body_bytes=16 * 1024 * 1024)
    process, port = start_process("api", platform_settings)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_answering(f"{url}/readyz"))
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            # Something to find: a workflow and a run, so generated requests also reach past the 404s.
            client.post("/v1/workflows", json={"name": "orders", "steps": [{"name": "a", "task": "builtin.noop"}]})
            client.post("/v1/workflows/orders/runs", json={}).raise_for_status()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(delete_queues(platform_settings.worker_queue))


@pytest.fixture(scope="module")
def api_schema(api_url: str):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")

# Valid-looking input the document cannot describe is refused on purpose: text holding NUL, which PostgreSQL
# cannot store, and cursors this API did not issue.
EXCLUDED = [checks.positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_document_says(case, api_url: str):
    case.call_and_validate(
        base_url=api_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, excluded_checks=EXCLUDED, timeout=30
    )
