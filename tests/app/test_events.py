"""The run events WebSocket, over a real server: recorded events first, then live ones, in order, no gaps."""

import asyncio
import json

import pytest
import pytest_asyncio
import uvicorn
import websockets

from app.http.api import create_app
from app.http.routes import events as events_route
from tests.app.conftest import register, start

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def server(running):
    platform, _, _ = running
    config = uvicorn.Config(
        create_app(platform, manage_lifecycle=False), host="127.0.0.1", port=0, log_config=None, lifespan="off"
    )
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    while not served.started:
        await asyncio.sleep(0.01)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}"
    served.should_exit = True
    await task


async def collect(url: str, key: str) -> list[dict]:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        return [json.loads(message) async for message in socket]


async def test_a_watcher_receives_every_event_live_in_order_and_the_stream_closes_at_the_end(server, api):
    await register(
        api,
        "watched",
        [
            {"name": "first", "task": "builtin.sleep", "input": {"seconds": 0.3}},
            {"name": "second", "task": "builtin.fail", "depends_on": ["first"], "input": {"times": 1}, "retries": 1},
        ],
    )
    run_id = (await start(api, "watched"))["id"]
    key = api.headers["Authorization"].split()[1]
    events = await asyncio.wait_for(collect(f"{server}/v1/runs/{run_id}/events", key), timeout=15)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [(event["type"], event["step"]) for event in events] == [
        ("run.created", None),
        ("step.started", "first"),
        ("step.succeeded", "first"),
        ("step.ready", "second"),
        ("step.started", "second"),
        ("step.retrying", "second"),
        ("step.started", "second"),
        ("step.succeeded", "second"),
        ("run.succeeded", None),
    ]


async def test_a_late_watcher_gets_the_recorded_history_then_the_end(server, api):
    await register(api, "quick", [{"name": "only", "task": "builtin.noop"}])
    run_id = (await start(api, "quick"))["id"]
    key = api.headers["Authorization"].split()[1]
    await asyncio.sleep(1)
    events = await asyncio.wait_for(collect(f"{server}/v1/runs/{run_id}/events", key), timeout=10)
    assert [event["type"] for event in events] == ["run.created", "step.started", "step.succeeded", "run.succeeded"]


async def test_a_watcher_resumes_after_the_last_event_it_saw(server, api):
    await register(api, "quick", [{"name": "only", "task": "builtin.noop"}])
    run_id = (await start(api, "quick"))["id"]
    key = api.headers["Authorization"].split()[1]
    events = await asyncio.wait_for(collect(f"{server}/v1/runs/{run_id}/events?after=2", key), timeout=10)
    assert [event["seq"] for event in events] == [3, 4]


async def test_many_watchers_of_a_busy_run_see_the_same_complete_stream(server, api):
    steps = [{"name": f"s{i}", "task": "builtin.sleep", "input": {"seconds": 0.05}} for i in range(20)]
    await register(
        api, "wide", [*steps, {"name": "end", "task": "builtin.noop", "depends_on": [s["name"] for s in steps]}]
    )
    run_id = (await start(api, "wide"))["id"]
    key = api.headers["Authorization"].split()[1]
    streams = await asyncio.wait_for(
        asyncio.gather(*(collect(f"{server}/v1/runs/{run_id}/events", key) for _ in range(5))), timeout=20
    )
    for events in streams:
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "run.succeeded"
    assert all(stream == streams[0] for stream in streams)


async def test_a_watcher_without_a_key_is_refused(server, api):
    await register(api, "quick", [{"name": "only", "task": "builtin.noop"}])
    run_id = (await start(api, "quick"))["id"]
    with pytest.raises(websockets.exceptions.ConnectionClosedError) as refused:
        async with websockets.connect(f"{server}/v1/runs/{run_id}/events") as socket:
            await socket.recv()
    assert refused.value.rcvd.code == 4401


async def test_watching_an_unknown_run_is_refused(server, api):
    key = api.headers["Authorization"].split()[1]
    with pytest.raises(websockets.exceptions.ConnectionClosedError) as refused:
        async with websockets.connect(
            f"{server}/v1/runs/00000000-0000-0000-0000-000000000000/events",
            additional_headers={"Authorization": f"Bearer {key}"},
        ) as socket:
            await socket.recv()
    assert refused.value.rcvd.code == 4404


async def test_a_quiet_stream_stays_open_until_the_run_ends(server, api, monkeypatch):
    # The stream looks for events on its own every EVENTS_POLL_S; a step quiet for several of those must not end it.
    monkeypatch.setattr(events_route, "EVENTS_POLL_S", 0.2)
    await register(api, "slow", [{"name": "only", "task": "builtin.sleep", "input": {"seconds": 1.5}}])
    run_id = (await start(api, "slow"))["id"]
    key = api.headers["Authorization"].split()[1]
    events = await asyncio.wait_for(collect(f"{server}/v1/runs/{run_id}/events", key), timeout=15)
    assert [event["type"] for event in events][-1] == "run.succeeded"


async def test_the_stream_of_a_failed_run_follows_its_retry_to_success(server, api):
    await register(api, "flaky", [{"name": "only", "task": "builtin.fail", "input": {"times": 1}}])
    run_id = (await start(api, "flaky"))["id"]
    key = api.headers["Authorization"].split()[1]
    url = f"{server}/v1/runs/{run_id}/events"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        seen = []
        while not seen or seen[-1] != "run.failed":
            seen.append(json.loads(await asyncio.wait_for(socket.recv(), timeout=15))["type"])
        assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 200
        seen += [json.loads(message)["type"] async for message in socket]
        assert socket.close_code == 1000
    assert seen[seen.index("run.failed") + 1] == "run.retried"
    assert seen[-1] == "run.succeeded"


async def test_the_stream_of_a_failed_run_closes_once_it_stays_failed_for_the_linger_time(
    server, api, platform, monkeypatch
):
    monkeypatch.setattr(platform.settings, "events_linger_s", 0.5)
    await register(api, "broken", [{"name": "only", "task": "builtin.fail"}])
    run_id = (await start(api, "broken"))["id"]
    key = api.headers["Authorization"].split()[1]
    events = await asyncio.wait_for(collect(f"{server}/v1/runs/{run_id}/events", key), timeout=15)
    assert events[-1]["type"] == "run.failed"
