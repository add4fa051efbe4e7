"""Tasks: plain Python functions registered by name, and the built-in ones.

A task receives a `TaskContext` (the run's input, the step's input and the outputs of the steps it depends on) and
returns a JSON-serialisable value. `async def` tasks run on the worker's event loop; plain `def` tasks run on the
worker's own bounded thread pool so they cannot stall it (not asyncio's default pool, which name resolution needs to
reconnect). A `def` task's timeout counts from when its thread starts it; a timed-out `def` task's thread cannot be
stopped: it runs on, holding a thread of the pool, until the function returns. Raising `PermanentTaskError` fails
the step at once; any other exception is retried until the step's attempts run out.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


class PermanentTaskError(Exception):
    """A failure that retrying cannot fix (bad input, a 4xx answer): the step fails without further attempts."""


class UnknownTaskError(LookupError):
    pass


@dataclass(frozen=True)
class TaskContext:
    run_id: str
    step: str
    attempt: int
    run_input: dict[str, Any] = field(default_factory=dict)
    step_input: dict[str, Any] = field(default_factory=dict)
    upstream: dict[str, Any] = field(default_factory=dict)


TaskFunction = Callable[[TaskContext], Any] | Callable[[TaskContext], Awaitable[Any]]


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction] = {}

    def task(self, name: str) -> Callable[[TaskFunction], TaskFunction]:
        """Decorator registering `fn` under `name` (e.g. "billing.charge")."""

        def register(fn: TaskFunction) -> TaskFunction:
            if name in self._tasks and self._tasks[name] is not fn:
                raise ValueError(f"task {name!r} is registered twice")
            self._tasks[name] = fn
            return fn

        return register

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        return sorted(self._tasks)

    async def run(
        self, name: str, context: TaskContext, timeout_s: float | None = None, threads: Executor | None = None
    ) -> Any:
        """Runs the task; TimeoutError when it runs longer than `timeout_s`, counted from when it starts: a `def`
        task waiting for a free thread of `threads` is not yet running."""
        try:
            fn = self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name) from None
        if inspect.iscoroutinefunction(fn):
            async with asyncio.timeout(timeout_s):
                return await fn(context)
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def call() -> Any:
            loop.call_soon_threadsafe(started.set)
            return fn(context)

        running = loop.run_in_executor(threads, call)
        await started.wait()
        async with asyncio.timeout(timeout_s):
            return await running

    def load_modules(self, modules: list[str]) -> None:
        """Imports the modules named by APP_TASK_MODULES; their `@task` decorators register into this registry."""
        for module in modules:
            importlib.import_module(module)


registry = TaskRegistry()
task = registry.task


@task("builtin.noop")
async def noop(context: TaskContext) -> None:
    return None


@task("builtin.echo")
async def echo(context: TaskContext) -> dict[str, Any]:
    return {"run_input": context.run_input, "step_input": context.step_input, "upstream": context.upstream}


@task("builtin.sleep")
async def sleep(context: TaskContext) -> dict[str, float]:
    seconds = float(context.step_input.get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@task("builtin.fail")
async def fail(context: TaskContext) -> None:
    """Fails its first `times` attempts (every attempt when `times` is absent); `permanent` skips the retries."""
    times = context.step_input.get("times")
    if times is None or context.attempt <= int(times):
        message = context.step_input.get("message", "builtin.fail failed as asked")
        if context.step_input.get("permanent"):
            raise PermanentTaskError(message)
        raise RuntimeError(message)
    return {"succeeded_on_attempt": context.attempt}
