"""Runs executed end to end against the real PostgreSQL, RabbitMQ and Redis, with the worker in-process."""

import asyncio
import uuid

import aio_pika
import boto3
import pytest
from moto import mock_aws

from app.engine.engine import RunRequest
from tests.app.conftest import register, running_platform, start, wait_for_run

pytestmark = pytest.mark.asyncio


async def test_a_diamond_passes_outputs_along_and_succeeds(api, worker):
    await register(
        api,
        "diamond",
        [
            {"name": "a", "task": "test.sum", "input": {"value": 1}},
            {"name": "b", "task": "test.sum", "depends_on": ["a"], "input": {"value": 10}},
            {"name": "c", "task": "test.sum", "depends_on": ["a"], "input": {"value": 100}},
            {"name": "d", "task": "test.sum", "depends_on": ["b", "c"]},
        ],
    )
    run = await wait_for_run(api, (await start(api, "diamond", {"value": 1000}))["id"])
    outputs = {step["name"]: step["output"]["value"] for step in run["steps"]}
    assert run["status"] == "succeeded"
    # a = 1000+1; b = 1000+10+a; c = 1000+100+a; d = 1000 + b + c
    assert outputs == {"a": 1001, "b": 2011, "c": 2101, "d": 5112}
    assert all(step["attempt"] == 1 and step["finished_at"] for step in run["steps"])


async def test_a_failing_step_is_retried_until_it_succeeds(api, worker):
    await register(api, "flaky", [{"name": "f", "task": "builtin.fail", "input": {"times": 2}, "retries": 3}])
    run = await wait_for_run(api, (await start(api, "flaky"))["id"])
    (step,) = run["steps"]
    assert run["status"] == "succeeded"
    assert step["attempt"] == 3 and step["output"] == {"succeeded_on_attempt": 3}


async def test_exhausted_retries_fail_the_run_and_cancel_the_rest(api, worker):
    await register(
        api,
        "doomed",
        [
            {"name": "first", "task": "builtin.fail", "retries": 2, "input": {"message": "boom"}},
            {"name": "second", "task": "builtin.noop", "depends_on": ["first"]},
        ],
    )
    run = await wait_for_run(api, (await start(api, "doomed"))["id"])
    steps = {step["name"]: step for step in run["steps"]}
    assert run["status"] == "failed"
    assert steps["first"]["status"] == "failed" and steps["first"]["attempt"] == 3
    assert steps["first"]["error"] == {"type": "RuntimeError", "message": "boom"}
    assert steps["second"]["status"] == "cancelled"
    assert run["error"]["step"] == "first"


async def test_a_permanent_error_fails_without_retrying(api, worker):
    await register(
        api, "permanent", [{"name": "p", "task": "builtin.fail", "retries": 5, "input": {"permanent": True}}]
    )
    run = await wait_for_run(api, (await start(api, "permanent"))["id"])
    assert run["status"] == "failed" and run["steps"][0]["attempt"] == 1


async def test_a_step_running_past_its_timeout_fails(api, worker):
    await register(api, "slow", [{"name": "s", "task": "builtin.sleep", "input": {"seconds": 5}, "timeout_s": 0.2}])
    run = await wait_for_run(api, (await start(api, "slow"))["id"])
    assert run["status"] == "failed" and run["steps"][0]["error"]["type"] == "Timeout"


async def test_cancelling_a_run_stops_its_remaining_steps(api, worker):
    await register(
        api,
        "long",
        [
            {"name": "wait", "task": "builtin.sleep", "input": {"seconds": 1}},
            {"name": "after", "task": "builtin.noop", "depends_on": ["wait"]},
        ],
    )
    run_id = (await start(api, "long"))["id"]
    await wait_for_run(api, run_id, statuses=("running",))
    response = await api.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    await asyncio.sleep(1.5)  # the sleeping step ends; its result must not revive the run
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    assert {step["name"]: step["status"] for step in run["steps"]} == {"wait": "cancelled", "after": "cancelled"}


async def test_the_same_idempotency_key_returns_the_same_run(api, worker):
    await register(api, "once", [{"name": "n", "task": "builtin.noop"}])
    first = await start(api, "once", **{"Idempotency-Key": "order-7"})
    again = await api.post("/v1/workflows/once/runs", json={"input": {}}, headers={"Idempotency-Key": "order-7"})
    assert first["created"] is True
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["created"] is False
    listed = (await api.get("/v1/runs", params={"workflow": "once"})).json()["runs"]
    assert [run["id"] for run in listed] == [first["id"]]


async def test_concurrent_submissions_with_one_key_create_one_run(api, worker):
    await register(api, "race", [{"name": "n", "task": "builtin.noop"}])
    responses = await asyncio.gather(
        *(api.post("/v1/workflows/race/runs", json={}, headers={"Idempotency-Key": "same"}) for _ in range(10))
    )
    assert len({response.json()["id"] for response in responses}) == 1
    assert sum(response.json()["created"] for response in responses) == 1


async def test_a_batch_starts_many_runs_at_once(api, worker):
    await register(api, "bulk", [{"name": "n", "task": "builtin.noop"}])
    response = await api.post(
        "/v1/runs:batch", json={"runs": [{"workflow": "bulk", "input": {"i": i}} for i in range(200)]}
    )
    assert response.status_code == 201
    ids = [run["id"] for run in response.json()["runs"]]
    assert len(set(ids)) == 200
    for run_id in ids:
        assert (await wait_for_run(api, run_id))["status"] == "succeeded"


async def test_retrying_a_failed_run_reruns_only_its_failed_steps(api, worker, tmp_path):
    journal, fixed = tmp_path / "journal", tmp_path / "fixed"
    await register(
        api,
        "fixable",
        [
            {"name": "ok", "task": "test.record", "input": {"journal": str(journal)}},
            {"name": "needs", "task": "test.needs_file", "depends_on": ["ok"], "input": {"path": str(fixed)}},
        ],
    )
    run_id = (await start(api, "fixable"))["id"]
    assert (await wait_for_run(api, run_id))["status"] == "failed"
    fixed.touch()
    response = await api.post(f"/v1/runs/{run_id}/retry")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    run = await wait_for_run(api, run_id)
    assert run["status"] == "succeeded"
    assert journal.read_text().count("done") == 1  # "ok" had succeeded and did not run again


async def test_a_malformed_message_is_dead_lettered_and_listed(api, worker, platform, settings):
    await platform.broker.publish(settings.worker_queue, [(b"not json", {})])
    for _ in range(100):
        dead = (await api.get("/v1/dead-letters")).json()
        if dead:
            break
        await asyncio.sleep(0.05)
    assert dead[0]["body"] == "not json" and dead[0]["queue"] == settings.worker_queue


async def test_a_message_whose_handling_keeps_failing_is_dead_lettered_and_fails_its_step(settings):
    """A step message redelivered past the delivery limit goes to the dead-letter queue; the step and run fail."""
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        await register(api, "poison", [{"name": "n", "task": "builtin.noop"}])
        run_id = (await start(api, "poison"))["id"]
        await platform.broker.depth(settings.worker_queue)  # declares the queue, as a worker would
        async with await aio_pika.connect(settings.amqp_url) as connection:
            queue = await (await connection.channel()).get_queue(settings.worker_queue)
            for _ in range(settings.delivery_limit + 1):
                message = await _get(queue)
                await message.nack(requeue=True)
        worker = platform.worker()
        await worker.start()
        try:
            run = await wait_for_run(api, run_id)
        finally:
            await worker.drain()
        assert run["status"] == "failed"
        assert run["steps"][0]["error"]["type"] == "DeadLettered"
        assert (await api.get("/v1/dead-letters")).json()[0]["step_ids"]


async def _get(queue):
    for _ in range(100):
        message = await queue.get(fail=False)
        if message:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError("no message arrived")


async def test_large_outputs_live_in_object_storage(settings):
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="payloads")
        async with running_platform(settings.model_copy(update={"s3_bucket": "payloads"})) as (_, api, _worker):
            await register(
                api,
                "big",
                [
                    {"name": "make", "task": "test.large", "input": {"size": 200_000}},
                    {"name": "use", "task": "builtin.echo", "depends_on": ["make"]},
                ],
            )
            run = await wait_for_run(api, (await start(api, "big"))["id"])
        steps = {step["name"]: step for step in run["steps"]}
        assert run["status"] == "succeeded"
        assert steps["make"]["output"]["$payload"].startswith("s3://payloads/")
        # echo returns the resolved 200 kB upstream output, so its own output is offloaded too
        assert steps["use"]["output"]["bytes"] > 200_000
        assert boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket="payloads")["KeyCount"] == 2


async def test_a_large_output_without_object_storage_fails_the_step_permanently(api, worker):
    await register(api, "toobig", [{"name": "make", "task": "test.large", "input": {"size": 200_000}, "retries": 3}])
    run = await wait_for_run(api, (await start(api, "toobig"))["id"])
    assert run["status"] == "failed"
    assert run["steps"][0]["attempt"] == 1 and run["steps"][0]["error"]["type"] == "PayloadTooLargeError"


async def test_an_output_the_database_cannot_store_fails_the_step_and_the_worker_goes_on(api, worker):
    await register(api, "nul", [{"name": "make", "task": "test.nul_text", "retries": 3}])
    await register(api, "fine", [{"name": "only", "task": "builtin.noop"}])
    failed = await wait_for_run(api, (await start(api, "nul"))["id"])
    assert failed["status"] == "failed"
    assert failed["steps"][0]["attempt"] == 1 and failed["steps"][0]["error"]["type"] == "UnstorableTextError"
    assert (await wait_for_run(api, (await start(api, "fine"))["id"]))["status"] == "succeeded"


async def test_runs_refused_by_the_database_fail_alone_while_runs_submitted_with_them_start(api, platform):
    await register(api, "orders", [{"name": "only", "task": "builtin.noop"}])
    too_long_key = "k" * 500  # over the column's 200 characters, which the API would have refused with a 422
    outcomes = await asyncio.gather(
        *(platform.engine.start_runs([RunRequest("orders", {"n": n})], None) for n in range(5)),
        platform.engine.start_runs([RunRequest("orders", {}, too_long_key)], None),
        *(platform.engine.start_runs([RunRequest("orders", {"n": n})], None) for n in range(5, 10)),
        return_exceptions=True,
    )
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(refused) == 1 and "too long" in str(refused[0])
    listed = (await api.get("/v1/runs", params={"limit": 50})).json()["runs"]
    assert len(listed) == 10


async def test_every_state_change_is_an_event_in_order(api, worker, platform):
    await register(
        api,
        "evented",
        [{"name": "one", "task": "builtin.noop"}, {"name": "two", "task": "builtin.noop", "depends_on": ["one"]}],
    )
    run_id = (await start(api, "evented"))["id"]
    await wait_for_run(api, run_id)
    events = await platform.store.events_after(uuid.UUID(run_id), 0)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, e.step) for e in events] == [
        ("run.created", None),
        ("step.started", "one"),
        ("step.succeeded", "one"),
        ("step.ready", "two"),
        ("step.started", "two"),
        ("step.succeeded", "two"),
        ("run.succeeded", None),
    ]
