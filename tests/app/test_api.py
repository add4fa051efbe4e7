"""The API's contract: registration and versioning, authentication and roles, limits, and every 4xx answer
in the one error shape."""

import asyncio
import base64
import uuid

import httpx
import pytest

from app.http.api import create_app
from app.runtime import Platform
from tests.app.conftest import register, running_platform, start, wait_for_run

pytestmark = pytest.mark.asyncio

NOOP = [{"name": "only", "task": "builtin.noop"}]


def assert_error(response, status: int, code: str, *words: str):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]


async def test_registering_a_definition_creates_version_one(api):
    response = await api.post("/v1/workflows", json={"name": "orders", "steps": NOOP})
    assert response.status_code == 201
    assert response.json()["version"] == 1 and response.json()["created"] is True


async def test_registering_the_same_definition_again_keeps_its_version(api):
    await register(api, "orders", NOOP)
    response = await api.post("/v1/workflows", json={"name": "orders", "steps": NOOP})
    assert response.status_code == 200 and response.json()["version"] == 1 and response.json()["created"] is False


async def test_a_changed_definition_becomes_the_next_version_and_new_runs_use_it(api, worker):
    await register(api, "orders", NOOP)
    changed = await register(api, "orders", [{"name": "only", "task": "builtin.echo"}])
    assert changed["version"] == 2
    run = await wait_for_run(api, (await start(api, "orders"))["id"])
    assert run["version"] == 2 and run["steps"][0]["task"] == "builtin.echo"
    assert (await api.get("/v1/workflows/orders", params={"version": 1})).json()["steps"][0]["task"] == "builtin.noop"


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        (
            [
                {"name": "a", "task": "builtin.noop", "depends_on": ["b"]},
                {"name": "b", "task": "builtin.noop", "depends_on": ["a"]},
            ],
            ["cycle", "a -> b -> a"],
        ),
        ([{"name": "a", "task": "builtin.noop", "depends_on": ["ghost"]}], ["unknown step 'ghost'"]),
        ([{"name": "a", "task": "builtin.noop"}, {"name": "a", "task": "builtin.echo"}], ["duplicate step name 'a'"]),
        ([{"name": "a", "task": "no.such.task"}], ["unknown task 'no.such.task'"]),
        ([{"name": "a", "task": "builtin.noop", "timeout_s": 0}], ["timeout_s 0", "> 0"]),
        ([{"name": "a", "task": "builtin.noop", "timeout_s": -5}], ["timeout_s -5"]),
        ([{"name": "a", "task": "builtin.noop", "timeout_s": 3600}], ["timeout_s 3600", "<= 30"]),
        ([{"name": f"s{i}", "task": "builtin.noop"} for i in range(201)], ["201 steps", "limit is 200"]),
    ],
    ids=[
        "cycle",
        "unknown-dependency",
        "duplicate-name",
        "unknown-task",
        "zero-timeout",
        "negative-timeout",
        "timeout-over-limit",
        "too-many-steps",
    ],
)
async def test_an_invalid_definition_is_rejected_naming_the_problem(api, steps, words):
    response = await api.post("/v1/workflows", json={"name": "bad", "steps": steps})
    assert_error(response, 422, "invalid_workflow", *words)
    assert (await api.get("/v1/workflows/bad")).status_code == 404


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"name": "x"}, "body.steps"),
        ({"name": "has space", "steps": NOOP}, "body.name"),
        ({"name": "x", "steps": [{"name": "a"}]}, "body.steps.0.task"),
        ({"name": "x", "steps": [{"name": "a", "task": "builtin.noop", "retries": -1}]}, "body.steps.0.retries"),
        ({"name": "x", "steps": [{"name": "a", "task": "builtin.noop", "retries": "many"}]}, "body.steps.0.retries"),
        ({"name": "x", "steps": NOOP, "surprise": 1}, "body.surprise"),
        ({"name": "x", "steps": "none"}, "body.steps"),
        ({"name": "x", "steps": []}, "body.steps"),
        (
            {"name": "x", "steps": [{"name": "a", "task": "builtin.noop", "input": {"k": "a\u0000b"}}]},
            "body.steps.0.input",
        ),
    ],
)
async def test_a_malformed_definition_is_rejected_naming_the_field(api, body, location):
    response = await api.post("/v1/workflows", json=body)
    assert response.status_code == 422
    assert location in [detail["location"] for detail in response.json()["error"]["details"]]


async def test_a_body_that_is_not_json_is_rejected(api):
    response = await api.post("/v1/workflows", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_request")


async def test_a_body_that_is_not_text_is_malformed(api):
    response = await api.post("/v1/workflows", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert_error(response, 400, "malformed_request")


async def test_run_input_with_a_nul_character_is_rejected_naming_the_field(api):
    await register(api, "orders", NOOP)
    single = await api.post("/v1/workflows/orders/runs", json={"input": {"note": "a\u0000b"}})
    assert_error(single, 422, "invalid_request", "body.input", "NUL")
    batch = await api.post("/v1/runs:batch", json={"runs": [{"workflow": "orders", "input": {"a\u0000": 1}}]})
    assert_error(batch, 422, "invalid_request", "body.runs.0.input")
    assert (await api.get("/v1/runs")).json()["runs"] == []


async def test_numbers_beyond_what_the_database_holds_are_rejected(api):
    await register(api, "orders", NOOP)
    response = await api.get("/v1/workflows/orders", params={"version": 2**31})
    assert_error(response, 422, "invalid_request", "version")


def nested(levels: int) -> dict:
    """An object nested `levels` deep: {"a": {"a": ... {} }}."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30])
async def test_integers_beyond_64_bits_are_rejected_naming_the_field(api, number):
    step = {"name": "only", "task": "builtin.noop", "input": {"limit": number}}
    registration = await api.post("/v1/workflows", json={"name": "orders", "steps": [step]})
    assert_error(registration, 422, "invalid_request", "body.steps.0.input", "'limit'", "64-bit")
    await register(api, "orders", NOOP)
    single = await api.post("/v1/workflows/orders/runs", json={"input": {"order": {"total": number}}})
    assert_error(single, 422, "invalid_request", "body.input", "'order.total'", "64-bit")
    batch = await api.post("/v1/runs:batch", json={"runs": [{"workflow": "orders", "input": {"ids": [1, number]}}]})
    assert_error(batch, 422, "invalid_request", "body.runs.0.input", "'ids[1]'", "64-bit")
    assert (await api.get("/v1/runs")).json()["runs"] == []


async def test_integers_at_the_64_bit_bounds_are_stored(api):
    await register(api, "orders", NOOP)
    bounds = {"low": -(2**63), "high": 2**63 - 1}
    run = await start(api, "orders", bounds)
    assert (await api.get(f"/v1/runs/{run['id']}")).json()["input"] == bounds


async def test_input_nested_deeper_than_64_levels_is_rejected_naming_the_field(api):
    step = {"name": "only", "task": "builtin.noop", "input": nested(300)}
    registration = await api.post("/v1/workflows", json={"name": "orders", "steps": [step]})
    assert_error(registration, 422, "invalid_request", "body.steps.0.input", "deeper than 64 levels")
    await register(api, "orders", NOOP)
    single = await api.post("/v1/workflows/orders/runs", json={"input": nested(300)})
    assert_error(single, 422, "invalid_request", "body.input", "deeper than 64 levels")
    batch = await api.post("/v1/runs:batch", json={"runs": [{"workflow": "orders", "input": nested(65)}]})
    assert_error(batch, 422, "invalid_request", "body.runs.0.input", "deeper than 64 levels")
    assert (await api.get("/v1/runs")).json()["runs"] == []


async def test_input_nested_64_levels_is_stored(api):
    await register(api, "orders", NOOP)
    run = await start(api, "orders", nested(64))
    assert (await api.get(f"/v1/runs/{run['id']}")).json()["input"] == nested(64)


async def test_a_cursor_whose_time_is_out_of_range_in_utc_is_rejected_naming_it(api):
    cursor = base64.urlsafe_b64encode(f"0001-01-01T00:00:00+05:00|{uuid.uuid4()}".encode()).decode()
    assert_error(await api.get("/v1/runs", params={"cursor": cursor}), 422, "invalid_request", "cursor")


def client_of(platform: Platform, key: str = "some-key") -> httpx.AsyncClient:
    """A client that gets the answer a real server sends for an unhandled error, instead of the exception."""
    transport = httpx.ASGITransport(app=create_app(platform, manage_lifecycle=False), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"})


async def test_an_unreachable_database_answers_503_with_retry_after(settings):
    unreachable = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/none"})
    platform = Platform.build(unreachable)
    await platform.start()
    try:
        async with client_of(platform) as client:
            response = await client.get("/v1/runs")
    finally:
        await platform.stop()
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"


async def test_an_unexpected_failure_answers_500_in_the_error_shape(platform, monkeypatch):
    admin_key = "admin-" + uuid.uuid4().hex
    await platform.ensure_admin_key(admin_key)

    async def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(platform.store, "list_runs", broken)
    async with client_of(platform, admin_key) as client:
        response = await client.get("/v1/runs")
    assert_error(response, 500, "internal")
    assert "a bug" not in response.text


async def test_a_body_over_the_limit_is_rejected(api, settings):
    response = await api.post("/v1/workflows/x/runs", json={"input": {"blob": "x" * settings.max_body_bytes}})
    assert_error(response, 413, "body_too_large", str(settings.max_body_bytes))


async def test_a_request_without_an_api_key_is_unauthenticated(api):
    response = await api.get("/v1/runs", headers={"Authorization": ""})
    assert_error(response, 401, "unauthenticated", "Bearer")


async def test_an_unknown_api_key_is_unauthenticated(api):
    response = await api.get("/v1/runs", headers={"Authorization": "Bearer wfp_nope"})
    assert_error(response, 401, "unauthenticated", "unknown")


async def test_roles_limit_what_a_key_may_do(api):
    created = (await api.post("/v1/api-keys", json={"name": "dashboard", "role": "read"})).json()
    reader = {"Authorization": f"Bearer {created['key']}"}
    assert (await api.get("/v1/runs", headers=reader)).status_code == 200
    assert_error(
        await api.post("/v1/workflows", json={"name": "x", "steps": NOOP}, headers=reader), 403, "forbidden", "submit"
    )
    assert_error(await api.get("/v1/api-keys", headers=reader), 403, "forbidden", "admin")


async def test_api_keys_are_stored_hashed_and_revocable(api, platform):
    created = (await api.post("/v1/api-keys", json={"name": "ci", "role": "submit"})).json()
    listed = (await api.get("/v1/api-keys")).json()
    assert created["key"] not in str(listed)
    assert (await api.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    response = await api.get("/v1/runs", headers={"Authorization": f"Bearer {created['key']}"})
    assert_error(response, 401, "unauthenticated")


async def test_a_key_over_its_rate_limit_gets_429_with_retry_after(settings):
    async with running_platform(settings.model_copy(update={"rate_limit_per_second": 3}), with_worker=False) as parts:
        responses = [await parts[1].get("/v1/runs") for _ in range(8)]
    limited = [response for response in responses if response.status_code == 429]
    assert limited and all(r.status_code == 200 for r in responses[:3])
    assert_error(limited[0], 429, "rate_limited", "3 requests per second")
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 2


async def test_starting_a_run_of_an_unknown_workflow_is_not_found(api):
    assert_error(await api.post("/v1/workflows/ghost/runs", json={}), 404, "not_found", "ghost")


async def test_an_unknown_run_is_not_found(api):
    assert_error(await api.get(f"/v1/runs/{uuid.uuid4()}"), 404, "not_found")


async def test_a_malformed_run_id_is_rejected(api):
    assert_error(await api.get("/v1/runs/not-a-uuid"), 422, "invalid_request", "run_id")


async def test_an_empty_idempotency_key_is_rejected(api):
    await register(api, "orders", NOOP)
    response = await api.post("/v1/workflows/orders/runs", json={}, headers={"Idempotency-Key": ""})
    assert_error(response, 422, "invalid_request", "idempotency-key")


async def test_reusing_an_idempotency_key_for_another_workflow_is_refused_naming_the_key(api):
    await register(api, "orders", NOOP)
    await register(api, "invoices", NOOP)
    await start(api, "orders", **{"Idempotency-Key": "k1"})
    response = await api.post("/v1/workflows/invoices/runs", json={}, headers={"Idempotency-Key": "k1"})
    assert_error(response, 422, "idempotency_key_reused", "'k1'", "orders", "idempotency-key")
    assert len((await api.get("/v1/runs")).json()["runs"]) == 1


async def test_reusing_an_idempotency_key_with_another_input_is_refused_naming_the_key(api):
    await register(api, "orders", NOOP)
    await start(api, "orders", {"order": 1}, **{"Idempotency-Key": "k1"})
    response = await api.post(
        "/v1/workflows/orders/runs", json={"input": {"order": 2}}, headers={"Idempotency-Key": "k1"}
    )
    assert_error(response, 422, "idempotency_key_reused", "'k1'")
    assert len((await api.get("/v1/runs")).json()["runs"]) == 1


async def test_the_same_key_with_the_same_input_in_a_batch_returns_the_first_run(api):
    await register(api, "orders", NOOP)
    first = await start(api, "orders", {"order": 1, "lines": [1, 2]}, **{"Idempotency-Key": "k1"})
    response = await api.post(
        "/v1/runs:batch",
        json={"runs": [{"workflow": "orders", "input": {"lines": [1, 2], "order": 1}, "idempotency_key": "k1"}]},
    )
    assert response.status_code == 201, response.text
    # The first run's status is whatever it has reached by now: a worker may have started it.
    (item,) = response.json()["runs"]
    assert (item["id"], item["workflow"], item["created"]) == (first["id"], "orders", False)


async def test_a_batch_with_a_key_used_before_for_another_input_starts_none_of_its_runs(api):
    await register(api, "orders", NOOP)
    first = await start(api, "orders", {"order": 1}, **{"Idempotency-Key": "k1"})
    runs = [
        {"workflow": "orders", "input": {"order": 2}},
        {"workflow": "orders", "input": {"order": 3}, "idempotency_key": "k2"},
        {"workflow": "orders", "input": {"order": 4}, "idempotency_key": "k1"},
    ]
    response = await api.post("/v1/runs:batch", json={"runs": runs})
    assert_error(response, 422, "idempotency_key_reused", "'k1'", "body.runs.2.idempotency_key")
    assert [run["id"] for run in (await api.get("/v1/runs")).json()["runs"]] == [first["id"]]


async def test_one_key_for_two_workflows_in_one_batch_is_refused_naming_the_items(api):
    await register(api, "orders", NOOP)
    await register(api, "invoices", NOOP)
    runs = [
        {"workflow": "orders", "idempotency_key": "k1"},
        {"workflow": "orders"},
        {"workflow": "invoices", "idempotency_key": "k1"},
    ]
    response = await api.post("/v1/runs:batch", json={"runs": runs})
    assert_error(response, 422, "idempotency_key_reused", "runs[0], runs[2]", "'k1'")
    assert (await api.get("/v1/runs")).json()["runs"] == []


async def test_a_reused_key_fails_only_its_own_request_among_concurrent_ones(api):
    """Concurrent requests share one transaction (group commit): the one refused must not take the others along."""
    await register(api, "orders", NOOP)
    await start(api, "orders", {"order": 0}, **{"Idempotency-Key": "taken"})
    requests = [api.post("/v1/workflows/orders/runs", json={"input": {"order": n}}) for n in range(1, 20)]
    reused = api.post("/v1/workflows/orders/runs", json={"input": {"order": 99}}, headers={"Idempotency-Key": "taken"})
    *answers, refused = await asyncio.gather(*requests, reused)
    assert [answer.status_code for answer in answers] == [201] * 19
    assert_error(refused, 422, "idempotency_key_reused", "'taken'")
    assert len((await api.get("/v1/runs")).json()["runs"]) == 20


async def test_a_batch_over_the_limit_is_rejected(api, settings):
    runs = [{"workflow": "orders"}] * (settings.max_batch_runs + 1)
    assert_error(await api.post("/v1/runs:batch", json={"runs": runs}), 422, "batch_too_large")


async def test_a_batch_naming_an_unknown_workflow_starts_nothing(api):
    await register(api, "orders", NOOP)
    response = await api.post("/v1/runs:batch", json={"runs": [{"workflow": "orders"}, {"workflow": "ghost"}]})
    assert_error(response, 404, "not_found", "ghost")
    assert (await api.get("/v1/runs")).json()["runs"] == []


async def test_cancelling_a_finished_run_conflicts(api, worker):
    await register(api, "orders", NOOP)
    run_id = (await start(api, "orders"))["id"]
    await wait_for_run(api, run_id)
    assert_error(await api.post(f"/v1/runs/{run_id}/cancel"), 409, "run_finished", "succeeded")


async def test_retrying_a_run_that_did_not_fail_conflicts(api, worker):
    await register(api, "orders", NOOP)
    run_id = (await start(api, "orders"))["id"]
    await wait_for_run(api, run_id)
    assert_error(await api.post(f"/v1/runs/{run_id}/retry"), 409, "run_not_failed", "succeeded")


async def test_runs_are_listed_newest_first_with_a_cursor(api):
    await register(api, "orders", NOOP)
    await register(api, "invoices", NOOP)
    started = [(await start(api, "orders"))["id"] for _ in range(5)]
    await start(api, "invoices")
    first = (await api.get("/v1/runs", params={"workflow": "orders", "limit": 3})).json()
    second = (
        await api.get("/v1/runs", params={"workflow": "orders", "limit": 3, "cursor": first["next_cursor"]})
    ).json()
    assert [r["id"] for r in first["runs"] + second["runs"]] == list(reversed(started))
    assert second["next_cursor"] is None


async def test_runs_can_be_filtered_by_status(api):
    # A step that outlasts the test: the run is still going when it is cancelled, never already succeeded.
    await register(api, "orders", [{"name": "nap", "task": "builtin.sleep", "input": {"seconds": 5}}])
    run_id = (await start(api, "orders"))["id"]
    await api.post(f"/v1/runs/{run_id}/cancel")
    assert [r["id"] for r in (await api.get("/v1/runs", params={"status": "cancelled"})).json()["runs"]] == [run_id]
    assert (await api.get("/v1/runs", params={"status": "succeeded"})).json()["runs"] == []


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"cursor": "garbage"}, 400, "invalid_cursor"),
        ({"limit": 0}, 422, "invalid_request"),
        ({"limit": 100000}, 422, "invalid_request"),
        ({"status": "exploded"}, 422, "invalid_request"),
        ({"workflow": "bad name"}, 422, "invalid_request"),
    ],
)
async def test_bad_listing_parameters_are_rejected(api, params, status, code):
    assert_error(await api.get("/v1/runs", params=params), status, code)


async def test_a_method_a_path_does_not_serve_is_refused_naming_every_method_it_does(api):
    response = await api.delete("/v1/api-keys")
    assert_error(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= {method.strip() for method in response.headers["Allow"].split(",")}


async def test_an_unknown_path_is_not_found_in_the_error_shape(api):
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")


async def test_health_readiness_and_metrics_answer(api):
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    metrics = (await api.get("/metrics")).text
    assert "workflow_http_request_duration_seconds" in metrics


async def test_readiness_fails_naming_an_unreachable_dependency(settings):
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with running_platform(unreachable, with_worker=False) as (_, api, _worker):
        response = await api.get("/readyz")
    assert_error(response, 503, "not_ready", "cache")


async def test_the_openapi_document_lists_every_error_status(api):
    document = (await api.get("/openapi.json")).json()
    start_run = document["paths"]["/v1/workflows/{name}/runs"]["post"]["responses"]
    assert {"200", "201", "401", "403", "404", "413", "422", "429"} <= set(start_run)
    assert start_run["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")


async def test_concurrent_requests_are_all_answered(api, worker):
    await register(api, "orders", NOOP)
    responses = await asyncio.gather(*(api.post("/v1/workflows/orders/runs", json={}) for _ in range(50)))
    assert {response.status_code for response in responses} == {201}
