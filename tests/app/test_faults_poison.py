"""Poison is isolated: an error text the database cannot store, or a message no claim can serve, fails only what it
concerns (or is dead-lettered with its reason) and never holds up the other runs."""

import asyncio

import aio_pika
import pytest

from tests.app.conftest import AMQP, register, start, wait_for_run

pytestmark = pytest.mark.asyncio


CLEANED = {"nul": "not found\ufffd\ufffd", "surrogate": "bad \ufffd byte"}


async def test_error_texts_the_database_cannot_store_are_stored_cleaned_and_hold_up_no_other_run(api, worker):
    for text in CLEANED:
        await register(api, text, [{"name": "bad", "task": "test.raise_unstorable", "input": {"text": text}}])
    await register(api, "normal", [{"name": "ok", "task": "builtin.noop"}])
    bad = {text: await start(api, text) for text in CLEANED}
    normal = await asyncio.gather(*(start(api, "normal") for _ in range(50)))
    runs = [await wait_for_run(api, run["id"]) for run in normal]
    failed = {text: await wait_for_run(api, run["id"]) for text, run in bad.items()}
    assert [run["status"] for run in runs] == ["succeeded"] * 50
    for text, run in failed.items():
        assert run["status"] == "failed"
        assert run["steps"][0]["error"] == {"type": "RuntimeError", "message": CLEANED[text]}


POISON = {
    b"not json": "not JSON",
    b'{"steps": [9223372036854775808]}': "out of range",
    b'{"steps": [-5]}': "out of range",
    b'{"steps": ["7"]}': "integer step ids",
}


async def test_poison_messages_are_dead_lettered_with_their_reason_and_the_next_runs_all_succeed(settings, api, worker):
    await register(api, "after-poison", [{"name": "ok", "task": "builtin.noop"}])
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for body in [*POISON, b'{"steps": [999999999]}']:  # the last names no step: harmless, acked
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=settings.worker_queue)
    created = await asyncio.gather(*(start(api, "after-poison") for _ in range(100)))
    runs = [await wait_for_run(api, run["id"]) for run in created]
    dead = (await api.get("/v1/dead-letters")).json()
    assert [run["status"] for run in runs] == ["succeeded"] * 100
    reasons = {letter["body"]: letter["reason"] for letter in dead}
    assert reasons.keys() == {body.decode() for body in POISON}
    for body, why in POISON.items():
        assert why in reasons[body.decode()]
