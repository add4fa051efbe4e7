"""Tasks the tests register through APP_TASK_MODULES, as an application team would."""

import asyncio
import logging
import time
from pathlib import Path

from app.engine.tasks import TaskContext, task


@task("test.record")
async def record(context: TaskContext) -> dict:
    """Writes when each attempt starts and finishes, so a test can count executions across processes."""
    journal = Path(context.step_input["journal"])
    with journal.open("a") as file:
        file.write(f"start {context.run_id} {context.attempt}\n")
    await asyncio.sleep(float(context.step_input.get("seconds", 0)))
    with journal.open("a") as file:
        file.write(f"done {context.run_id} {context.attempt}\n")
    return {"attempt": context.attempt}


@task("test.sum")
async def add(context: TaskContext) -> dict:
    """Adds the `value` of the run input, the step input and every upstream output."""
    total = context.run_input.get("value", 0) + context.step_input.get("value", 0)
    total += sum(output["value"] for output in context.upstream.values())
    return {"value": total}


@task("test.large")
async def large(context: TaskContext) -> dict:
    return {"blob": "x" * int(context.step_input["size"])}


@task("test.needs_file")
async def needs_file(context: TaskContext) -> dict:
    """Fails until the file named in its input exists: an outside cause a person fixes before retrying."""
    if not Path(context.step_input["path"]).exists():
        raise RuntimeError(f"{context.step_input['path']} is missing")
    return {"found": True}


@task("test.nul_text")
async def nul_text(context: TaskContext) -> dict:
    """Returns text PostgreSQL cannot store, as a careless task might."""
    return {"text": "before\x00after"}


@task("test.log")
async def log_line(context: TaskContext) -> dict:
    logging.getLogger("orders").info("charging order %s", context.run_input.get("order"))
    return {}


@task("test.raise_unstorable")
async def raise_unstorable(context: TaskContext) -> dict:
    """Fails with an error text PostgreSQL cannot store: a NUL (as in a 404 body) or a lone surrogate."""
    text = {"nul": "not found\x00\x00", "surrogate": "bad \udc80 byte"}[context.step_input["text"]]
    raise RuntimeError(text)


@task("test.cancelled_once")
async def cancelled_once(context: TaskContext) -> dict:
    """Raises CancelledError on its first attempt, as a task awaiting a future someone else cancelled does."""
    if context.attempt == 1:
        raise asyncio.CancelledError("an inner future was cancelled")
    return {"attempt": context.attempt}


@task("test.sync_sleep")
def sync_sleep(context: TaskContext) -> dict:
    """A plain `def` task that blocks its thread, writing when it starts and ends."""
    journal = Path(context.step_input["journal"])
    with journal.open("a") as file:
        file.write(f"start {context.run_id} {context.attempt}\n")
    time.sleep(float(context.step_input.get("seconds", 0)))
    with journal.open("a") as file:
        file.write(f"done {context.run_id} {context.attempt}\n")
    return {"slept": context.step_input.get("seconds", 0)}
