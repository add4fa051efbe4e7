"""`python -m app smoke --url URL`: proves a deployed platform runs a workflow end to end, as a client of its API.

It registers the smoke workflow (a small diamond of built-in tasks), starts a run of it with a fresh input, follows
the run's events over the WebSocket until the run finishes, and checks each step's output against the one computed
from that input. Exit 0 with a one-line summary; 1 with a message naming what failed (the step and its error, a
refused API key, an unreachable URL, the timeout); 2 for a usage error.

The API key comes from APP_SMOKE_API_KEY or from a file (`--api-key-file`, or APP_SMOKE_API_KEY_FILE, as the app's
own `APP_<NAME>_FILE` settings), never from the command line, where process listings would show it.

Only the HTTP API is used: nothing here imports the engine or the adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake, InvalidStatus

KEY_VARIABLE = "APP_SMOKE_API_KEY"
KEY_FILE_VARIABLE = "APP_SMOKE_API_KEY_FILE"

# The version is part of the name: re-registering this exact definition is a no-op (200), while a changed smoke
# workflow gets a name of its own, so old and new images smoke-testing the same platform never take turns
# publishing new versions of one workflow.
WORKFLOW_NAME = "smoke.diamond.v1"
# Steps are listed dependencies first. Timeouts and retries are left to the platform: a failure fails the test.
SMOKE_WORKFLOW = {
    "name": WORKFLOW_NAME,
    "steps": [
        {"name": "fetch", "task": "builtin.echo", "input": {"source": "smoke"}},
        {"name": "wait", "task": "builtin.sleep", "depends_on": ["fetch"], "input": {"seconds": 0.2}},
        {"name": "right", "task": "builtin.echo", "depends_on": ["fetch"], "input": {"side": "right"}},
        {"name": "join", "task": "builtin.echo", "depends_on": ["wait", "right"]},
    ],
}
# What the built-in tasks return (app/engine/tasks.py), restated here: the deployed platform is checked against it.
BUILTIN_OUTPUTS = {
    "builtin.echo": lambda run_input, step_input, upstream: {
        "run_input": run_input,
        "step_input": step_input,
        "upstream": upstream,
    },
    "builtin.sleep": lambda run_input, step_input, upstream: {"slept": float(step_input["seconds"])},
}
FINAL_EVENTS = ("run.succeeded", "run.failed", "run.cancelled")


class SmokeFailure(Exception):
    """The platform failed the smoke test; the message says where and why."""


class UsageError(Exception):
    """The command was not given what it needs (an API key, a usable URL)."""


def expected_outputs(run_input: dict[str, Any]) -> dict[str, Any]:
    """Each smoke step's output for `run_input`, computed as the built-in tasks compute it."""
    outputs: dict[str, Any] = {}
    for step in SMOKE_WORKFLOW["steps"]:
        upstream = {name: outputs[name] for name in step.get("depends_on", [])}
        outputs[step["name"]] = BUILTIN_OUTPUTS[step["task"]](run_input, step.get("input", {}), upstream)
    return outputs


def check_outputs(run: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raises SmokeFailure naming the first step whose output is missing or not the expected one."""
    outputs = {step["name"]: step["output"] for step in run["steps"]}
    for name, want in expected.items():
        if name not in outputs:
            raise SmokeFailure(f"step {name!r} is missing from run {run['id']}")
        if outputs[name] != want:
            raise SmokeFailure(
                f"step {name!r} returned {json.dumps(outputs[name])}, expected {json.dumps(want)} (run {run['id']})"
            )


def read_api_key(key_file: str | None) -> str:
    """The key from APP_SMOKE_API_KEY or from `key_file` (without its trailing newline); exactly one must be set."""
    from_environment = os.environ.get(KEY_VARIABLE)
    if key_file and from_environment:
        raise UsageError(f"{KEY_VARIABLE} and --api-key-file ({KEY_FILE_VARIABLE}) are both set: set only one of them")
    if not key_file:
        if not from_environment:
            raise UsageError(f"no API key: set {KEY_VARIABLE}, or pass --api-key-file (or set {KEY_FILE_VARIABLE})")
        return from_environment
    try:
        with open(key_file, encoding="utf-8") as file:
            key = file.read().rstrip("\r\n")
    except OSError as error:
        raise UsageError(f"--api-key-file {key_file}: cannot read the file ({error.strerror})") from error
    if not key:
        raise UsageError(f"--api-key-file {key_file}: the file is empty")
    return key


def websocket_url(url: str) -> str:
    """The WebSocket base URL of an http(s) base URL."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("http", "https"):
        raise UsageError(f"--url {url}: expected an http:// or https:// URL")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception behind `error`: httpx's "All connection attempts failed" hides the refusal."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def _describe(error: BaseException) -> str:
    cause = _root_cause(error)
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


def _api_error(response: httpx.Response) -> str:
    """`<status> <reason>: <message>` from the API's error shape, or the body's start when it is not one."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"{response.status_code} {response.reason_phrase}: {message}"


class Smoke:
    """One smoke test against the API at `url`; `stage` says what it is doing, for the timeout's message."""

    def __init__(self, url: str, ws_url: str, api_key: str) -> None:
        self.url, self.ws_url = url.rstrip("/"), ws_url.rstrip("/")
        self.authorization = {"Authorization": f"Bearer {api_key}"}
        self.stage = f"connecting to {self.url}"

    async def within(self, timeout_s: float) -> str:
        """Runs the test; a SmokeFailure naming the stage reached when it takes longer than `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.run()
        except TimeoutError:
            raise SmokeFailure(f"timed out after {timeout_s:g} s {self.stage}") from None

    async def run(self) -> str:
        """The one-line summary of a passing test, or a SmokeFailure."""
        began = time.monotonic()
        run_input = {"order": secrets.randbelow(1_000_000), "nonce": secrets.token_hex(8)}
        # No client timeout: the whole test has one deadline (`within`), and its message names the stage.
        async with httpx.AsyncClient(base_url=self.url, headers=self.authorization, timeout=None) as api:
            self.stage = f"registering workflow {WORKFLOW_NAME}"
            workflow = await self._call(api, "POST", "/v1/workflows", SMOKE_WORKFLOW)
            self.stage = f"starting a run of {WORKFLOW_NAME}"
            started = await self._call(api, "POST", f"/v1/workflows/{WORKFLOW_NAME}/runs", {"input": run_input})
            await self._follow(started["id"])
            self.stage = f"reading the outputs of run {started['id']}"
            run = await self._call(api, "GET", f"/v1/runs/{started['id']}")
        check_outputs(run, expected_outputs(run_input))
        return (
            f"smoke passed: run {run['id']} of {WORKFLOW_NAME} version {workflow['version']} at {self.url}: "
            f"{len(run['steps'])} steps succeeded with the expected outputs in {time.monotonic() - began:.2f} s"
        )

    async def _call(self, api: httpx.AsyncClient, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = await api.request(method, path, json=body)
        except httpx.TransportError as error:
            raise SmokeFailure(f"cannot reach {self.url}: {_describe(error)}") from None
        if response.status_code == 401:
            raise SmokeFailure(f"{method} {path}: the API key was refused: {_api_error(response)}")
        if response.status_code == 403:
            raise SmokeFailure(f"{method} {path}: the API key lacks the role this needs: {_api_error(response)}")
        if not response.is_success:
            raise SmokeFailure(f"{method} {path}: {_api_error(response)}")
        return response.json()

    async def _follow(self, run_id: str) -> None:
        """Reads the run's events until it finishes; a SmokeFailure naming the failed step unless it succeeds."""
        uri = f"{self.ws_url}/v1/runs/{run_id}/events"
        self.stage = f"following run {run_id} at {uri}"
        try:
            async with connect(uri, additional_headers=self.authorization, open_timeout=None) as events:
                try:
                    async for message in events:
                        event = json.loads(message)
                        step = f" of step {event['step']!r}" if event["step"] else ""
                        self.stage = f"following run {run_id} (last event: {event['type']}{step})"
                        if event["type"] in FINAL_EVENTS:
                            _raise_unless_succeeded(run_id, event)
                            return
                except ConnectionClosedError:
                    pass  # the close code and reason tell why, below
                code, reason = events.close_code, events.close_reason
        except InvalidStatus as error:
            raise SmokeFailure(f"{uri}: the WebSocket was refused: HTTP {error.response.status_code}") from None
        except (OSError, InvalidHandshake) as error:
            raise SmokeFailure(f"cannot reach {self.ws_url}: {_describe(error)}") from None
        if code in (4401, 4403):
            raise SmokeFailure(f"{uri}: the API key was refused: close code {code}: {reason}")
        raise SmokeFailure(f"the events of run {run_id} stopped before it finished: close code {code} {reason}")


def _raise_unless_succeeded(run_id: str, final_event: dict[str, Any]) -> None:
    if final_event["type"] == "run.cancelled":
        raise SmokeFailure(f"run {run_id} was cancelled before it finished")
    if final_event["type"] == "run.failed":
        error = final_event["data"].get("error") or {}
        raise SmokeFailure(
            f"step {final_event['data'].get('step')!r} failed: {error.get('type', 'error')}: "
            f"{error.get('message', 'no message recorded')} (run {run_id})"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the API's base URL, e.g. https://api.example.com")
    parser.add_argument(
        "--ws-url",
        help="the base URL of the run event streams when another host serves them (default: --url as ws(s)://)",
    )
    parser.add_argument(
        "--api-key-file",
        default=os.environ.get(KEY_FILE_VARIABLE),
        help=f"a file holding the API key (default: ${KEY_FILE_VARIABLE}); or set {KEY_VARIABLE}",
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds the whole test may take (default 60)")


def main(args: argparse.Namespace) -> int:
    try:
        api_key = read_api_key(args.api_key_file)
        default_ws_url = websocket_url(args.url)
        smoke = Smoke(args.url, args.ws_url or default_ws_url, api_key)
    except UsageError as error:
        print(f"smoke: {error}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(smoke.within(args.timeout))
    except SmokeFailure as failure:
        print(f"smoke failed: {failure}", file=sys.stderr)
        return 1
    print(summary)
    return 0
