"""`python -m app smoke`, run as the pipeline runs it, against a real `python -m app dev` process: a passing run, a
refused key, an unreachable URL, a timeout, and a platform on which a step of the smoke workflow really fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.smoke import WORKFLOW_NAME, SmokeFailure, check_outputs, expected_outputs
from tests.app.conftest import ROOT, free_port

ADMIN_KEY = "smoke-test-admin-key"


@contextmanager
def dev_platform(directory: Path, **settings: str) -> Iterator[str]:
    """`python -m app dev` on a fresh SQLite file with ADMIN_KEY as its admin key and the given APP_* settings;
    yields its URL."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(directory), "APP_BOOTSTRAP_API_KEY": ADMIN_KEY, **settings}
    for name in ("APP_DATABASE_URL", "APP_AMQP_URL", "APP_REDIS_URL"):
        env.pop(name, None)
    command = [sys.executable, "-m", "app", "dev", "--port", str(port), "--database", str(directory / "dev.sqlite3")]
    with open(directory / "dev.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, url, directory / "dev.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 90) -> None:
    """Waits for the platform's /healthz; its start-up takes seconds, more on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dev exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def platform_url(tmp_path_factory) -> Iterator[str]:
    with dev_platform(tmp_path_factory.mktemp("dev")) as url:
        yield url


def smoke(*arguments: str, api_key: str | None = ADMIN_KEY) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("APP_SMOKE_")}
    if api_key is not None:
        env["APP_SMOKE_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "app", "smoke", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def test_a_passing_run_exits_0_with_a_one_line_summary_of_a_run_that_really_succeeded(platform_url):
    result = smoke("--url", platform_url)

    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert f"of {WORKFLOW_NAME} version 1" in result.stdout
    assert "4 steps succeeded with the expected outputs" in result.stdout
    run_id = re.search(r"run (\S+) of", result.stdout).group(1)
    with admin(platform_url) as api:
        run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert [step["name"] for step in run["steps"]] == ["fetch", "wait", "right", "join"]


def test_running_smoke_again_reuses_the_registered_workflow_version(platform_url):
    first, second = smoke("--url", platform_url), smoke("--url", platform_url)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    with admin(platform_url) as api:
        assert api.get(f"/v1/workflows/{WORKFLOW_NAME}").json()["version"] == 1


def test_the_api_key_may_come_from_a_file(platform_url, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text(ADMIN_KEY + "\n")

    result = smoke("--url", platform_url, "--api-key-file", str(key_file), api_key=None)

    assert result.returncode == 0, result.stderr


def test_an_unknown_key_fails_naming_the_refusal_as_401(platform_url):
    result = smoke("--url", platform_url, api_key="not-a-key")

    assert result.returncode == 1
    assert "the API key was refused: 401 Unauthorized: unknown or revoked API key" in result.stderr


def test_a_read_only_key_fails_naming_the_missing_role_as_403(platform_url):
    with admin(platform_url) as api:
        reader = api.post("/v1/api-keys", json={"name": "smoke-reader", "role": "read"}).json()["key"]

    result = smoke("--url", platform_url, api_key=reader)

    assert result.returncode == 1
    assert "the API key lacks the role this needs: 403 Forbidden" in result.stderr
    assert "'submit' role" in result.stderr


def test_an_unreachable_url_fails_naming_the_url_and_the_connection_error():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    result = smoke("--url", url)

    assert result.returncode == 1
    assert f"cannot reach {url}: ConnectionRefusedError" in result.stderr


def test_a_run_longer_than_the_timeout_fails_naming_the_timeout(platform_url):
    # The smoke workflow's `wait` step alone sleeps 0.2 s: no run of it can finish within 0.1 s.
    result = smoke("--url", platform_url, "--timeout", "0.1")

    assert result.returncode == 1
    assert "smoke failed: timed out after 0.1 s" in result.stderr


def test_a_failing_step_fails_the_smoke_naming_the_step_and_its_error(tmp_path):
    """A platform on which the smoke workflow really fails: its longest allowed task time (APP_MAX_TASK_TIMEOUT_S,
    0.05 s) is shorter than the smoke's `wait` step, which sleeps 0.2 s. The smoke workflow leaves step timeouts to
    the platform, so the worker cancels that step when its time is up and the run fails on the server, as it would
    on a platform misconfigured this way; the smoke command is run unchanged."""
    with dev_platform(tmp_path, APP_MAX_TASK_TIMEOUT_S="0.05") as url:
        result = smoke("--url", url)

    assert result.returncode == 1
    assert "smoke failed: step 'wait' failed: Timeout: the task ran longer than 0.05 s" in result.stderr


def test_without_an_api_key_it_is_a_usage_error():
    result = smoke("--url", "http://127.0.0.1:1", api_key=None)

    assert result.returncode == 2
    assert "no API key: set APP_SMOKE_API_KEY" in result.stderr


def test_an_output_other_than_the_expected_one_fails_naming_the_step():
    run_input = {"order": 7, "nonce": "n"}
    outputs = expected_outputs(run_input)
    outputs["join"] = {**outputs["join"], "run_input": {"order": 8, "nonce": "n"}}
    run = {"id": "r", "steps": [{"name": name, "output": output} for name, output in outputs.items()]}

    with pytest.raises(SmokeFailure, match=r"step 'join' returned .*\"order\": 8.*, expected .*\"order\": 7"):
        check_outputs(run, expected_outputs(run_input))


def test_the_smoke_client_loads_neither_the_engine_nor_the_adapters():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.smoke; print(*sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert not [module for module in loaded if module.startswith(("app.engine", "app.adapters", "app.http"))]
