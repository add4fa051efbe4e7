"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a real `python -m app dev`
process: signing in, watching runs live, retrying, cancelling, what a read-only key is shown, task output shown as
text, and keys that are refused; and the events WebSocket taking the key as a subprotocol, as the console sends it.
Screenshots of the runs page and a run page go to test-artifacts/."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.app.conftest import ROOT
from tests.app.test_smoke import ADMIN_KEY, dev_platform
from tools.chromium import launch as launch_chromium

ARTIFACTS = ROOT / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"
LIVE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def console_url(tmp_path_factory) -> Iterator[str]:
    with dev_platform(tmp_path_factory.mktemp("console")) as url:
        with admin_client(url) as api:
            register(api, "console.flaky", [{"name": "flaky", "task": "builtin.fail", "input": {"times": 1}}])
            register(api, "console.long", [{"name": "nap", "task": "builtin.sleep", "input": {"seconds": 5}}])
            # Its step waits on a queue no worker consumes: the run stays unfinished as long as a test needs.
            register(api, "console.stuck", [{"name": "idle", "task": "builtin.noop", "queue": "console.nobody"}])
            register(api, "console.xss", [{"name": "echo", "task": "builtin.echo", "input": {"html": XSS}}])
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab with its own session storage; a script's error, or anything the page's policy refused, fails the
    test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # A refused request (a bad key's 401, the missing favicon) is logged as an error too: not a script's.
    tab.on(
        "console",
        lambda line: line.type == "error"
        and not line.text.startswith("Failed to load resource")
        and errors.append(line.text),
    )
    yield tab
    context.close()
    assert errors == []


def admin_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)


def register(api: httpx.Client, name: str, steps: list[dict]) -> None:
    api.post("/v1/workflows", json={"name": name, "steps": steps}).raise_for_status()


def start_run(url: str, workflow: str) -> str:
    with admin_client(url) as api:
        response = api.post(f"/v1/workflows/{workflow}/runs", json={"input": {}})
        response.raise_for_status()
        return response.json()["id"]


def new_key(url: str, role: str) -> dict:
    with admin_client(url) as api:
        response = api.post("/v1/api-keys", json={"name": f"console-{role}-{uuid.uuid4().hex[:6]}", "role": role})
        response.raise_for_status()
        return response.json()


def sign_in(page: Page, url: str, key: str = ADMIN_KEY, path: str = "/console") -> None:
    page.goto(f"{url}{path}")
    page.fill("#api-key", key)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#who-name")).to_be_visible()


def open_run(page: Page, url: str, run_id: str, key: str = ADMIN_KEY) -> None:
    sign_in(page, url, key, f"/console/runs/{run_id}")
    expect(page.locator(".dag-node").first).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=path, full_page=True)
    return path


def test_signing_in_shows_the_runs_page_and_keeps_the_key_in_this_tabs_session_storage_only(page, console_url):
    sign_in(page, console_url)

    expect(page).to_have_url(re.compile(r"/console$"))
    expect(page.locator("h1")).to_have_text("Runs")
    expect(page.locator("#who-name")).to_have_text("bootstrap (admin)")
    assert ADMIN_KEY in page.evaluate("() => JSON.stringify(sessionStorage)")
    assert page.context.cookies() == []
    assert ADMIN_KEY not in page.url


def test_a_demo_diamond_run_started_from_the_console_turns_every_step_succeeded_without_a_reload(page, console_url):
    sign_in(page, console_url, path="/console/workflows/demo.diamond")
    page.evaluate("() => { window.stillTheSamePage = true; }")

    page.fill("#run-input", '{"order": 42}')
    page.click("#start-run button[type=submit]")

    expect(page).to_have_url(re.compile(r"/console/runs/[0-9a-f-]{36}$"))
    expect(page.locator(".dag-node")).to_have_count(4)
    expect(page.locator(".dag-node[data-status=succeeded]")).to_have_count(4, timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#run-status")).to_have_text("succeeded")
    # The event log is filled only by the run's WebSocket: the page's policy let it connect.
    expect(page.locator("#events li").last).to_contain_text("run.succeeded")
    assert page.evaluate("() => window.stillTheSamePage") is True
    page.click("#step-join summary")
    expect(page.locator("#step-join .step-output")).to_contain_text('"order": 42')
    screenshot(page, "console-run.png")


def test_the_runs_page_shows_a_new_run_and_its_status_changes_without_a_reload(page, console_url):
    sign_in(page, console_url)
    page.evaluate("() => { window.stillTheSamePage = true; }")

    run_id = start_run(console_url, "demo.diamond")

    row = page.locator(f"#runs tr[data-run='{run_id}']")
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=LIVE_TIMEOUT_MS)
    expect(row).to_contain_text("demo.diamond v1")
    assert page.evaluate("() => window.stillTheSamePage") is True
    screenshot(page, "console-runs.png")


def test_the_runs_page_filters_by_status(page, console_url):
    failed = start_run(console_url, "console.flaky")
    sign_in(page, console_url, path="/console/runs?status=failed")

    expect(page.locator(f"#runs tr[data-run='{failed}']")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    for badge in page.locator("#runs .badge").all():
        expect(badge).to_have_text("failed")


def test_the_runs_page_filters_by_workflow_and_pages_with_the_apis_cursor(page, console_url):
    with admin_client(console_url) as api:
        register(api, "console.paged", [{"name": "idle", "task": "builtin.noop", "queue": "console.nobody"}])
        batch = [{"workflow": "console.paged", "input": {"n": n}} for n in range(51)]
        api.post("/v1/runs:batch", json={"runs": batch}).raise_for_status()
    sign_in(page, console_url, path="/console/runs?workflow=console.paged")
    rows = page.locator("#runs tr[data-run]")
    expect(rows).to_have_count(50)
    first_page = set(rows.evaluate_all("rows => rows.map((row) => row.dataset.run)"))

    page.click("#older")

    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-run") not in first_page
    expect(page.locator("#older")).to_be_disabled()
    page.click("#newer")
    expect(rows).to_have_count(50)
    for row in rows.all():
        expect(row).to_contain_text("console.paged v1")


def test_an_input_that_is_not_a_json_object_is_refused_before_anything_is_sent(page, console_url):
    sign_in(page, console_url, path="/console/workflows/demo.diamond")
    posts: list[str] = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))

    page.fill("#run-input", '{"order": ')
    page.click("#start-run button[type=submit]")
    expect(page.locator("#start-problem")).to_contain_text("The input is not JSON")
    page.fill("#run-input", "[1, 2]")
    page.click("#start-run button[type=submit]")
    expect(page.locator("#start-problem")).to_contain_text("must be a JSON object")

    assert posts == []


def test_a_failing_run_shows_its_error_and_retrying_it_succeeds(page, console_url):
    run_id = start_run(console_url, "console.flaky")
    open_run(page, console_url, run_id)

    expect(page.locator(".dag-node[data-step=flaky]")).to_have_attribute(
        "data-status", "failed", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#step-flaky .step-error")).to_contain_text("builtin.fail failed as asked")
    page.click("#retry")

    expect(page.locator(".dag-node[data-step=flaky]")).to_have_attribute(
        "data-status", "succeeded", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#step-flaky")).to_contain_text("2 of 2")


def test_cancelling_a_long_run_cancels_it_and_its_running_step(page, console_url):
    run_id = start_run(console_url, "console.long")
    open_run(page, console_url, run_id)
    expect(page.locator(".dag-node[data-step=nap]")).to_have_attribute(
        "data-status", "running", timeout=LIVE_TIMEOUT_MS
    )

    page.click("#cancel")

    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator(".dag-node[data-step=nap]")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#cancel")).to_have_count(0)
    with admin_client(console_url) as api:
        assert api.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"


def test_a_read_only_key_sees_no_cancel_button_and_no_key_management(page, console_url):
    run_id = start_run(console_url, "console.stuck")
    reader = new_key(console_url, "read")["key"]

    open_run(page, console_url, run_id, key=reader)

    expect(page.locator("#run-status")).to_have_text("queued")
    expect(page.locator("#cancel")).to_have_count(0)
    expect(page.locator("#nav-api-keys")).to_be_hidden()
    page.click("text=Workflows")
    page.click("text=demo.diamond")
    expect(page.locator("#definition-json")).to_be_visible()
    expect(page.locator("#start-run")).to_have_count(0)
    with httpx.Client(base_url=console_url, headers={"Authorization": f"Bearer {reader}"}) as api:
        assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 403


def test_an_admin_sees_the_cancel_button_on_that_same_unfinished_run(page, console_url):
    run_id = start_run(console_url, "console.stuck")

    open_run(page, console_url, run_id)

    expect(page.locator("#run-status")).to_have_text("queued")
    expect(page.locator("#cancel")).to_be_visible()


def test_html_in_a_step_output_is_shown_as_text_and_runs_no_script(page, console_url):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    run_id = start_run(console_url, "console.xss")

    open_run(page, console_url, run_id)
    expect(page.locator(".dag-node[data-step=echo]")).to_have_attribute(
        "data-status", "succeeded", timeout=LIVE_TIMEOUT_MS
    )
    page.click("#step-echo summary")

    output = page.locator("#step-echo .step-output")
    expect(output).to_be_visible()
    expect(output).to_contain_text(XSS)
    assert page.locator("img").count() == 0
    page.wait_for_timeout(300)  # time for an injected handler to have fired
    assert dialogs == []


def test_a_bad_key_is_refused_at_sign_in_with_the_apis_reason(page, console_url):
    page.goto(f"{console_url}/console")
    page.fill("#api-key", "not-a-key")
    page.click("#sign-in button[type=submit]")

    expect(page.locator("#sign-in-problem")).to_contain_text("unknown or revoked API key")
    expect(page.locator("#who-name")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('workflow-console.session')") is None


def test_a_key_revoked_while_signed_in_sends_the_user_back_to_sign_in_with_a_message(page, console_url):
    reader = new_key(console_url, "read")
    sign_in(page, console_url, reader["key"])
    expect(page.locator("#runs tr").first).to_be_visible()

    with admin_client(console_url) as api:
        assert api.delete(f"/v1/api-keys/{reader['id']}").status_code == 204

    # The runs page reads again within seconds; the API now answers 401.
    expect(page.locator("#sign-in")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#sign-in-problem")).to_contain_text("no longer accepted")
    expect(page.locator("#sign-in-problem")).to_contain_text("Sign in again")
    assert page.evaluate("() => sessionStorage.getItem('workflow-console.session')") is None


def test_an_admin_creates_a_key_seeing_its_secret_once_and_revokes_it(page, console_url):
    sign_in(page, console_url, path="/console/api-keys")
    name = f"made-in-console-{uuid.uuid4().hex[:6]}"

    page.fill("#key-name", name)
    page.select_option("#key-role", "submit")
    page.click("#create-key button[type=submit]")
    secret = page.locator("#new-key-secret").inner_text()
    with httpx.Client(base_url=console_url, headers={"Authorization": f"Bearer {secret}"}) as api:
        assert api.get("/v1/me").json()["name"] == name
    page.click(f"button[data-revoke='{name}']")

    expect(page.locator("#keys-notice")).to_contain_text(f"Revoked {name}.")
    expect(page.locator("#new-key-secret")).to_have_count(0)
    with httpx.Client(base_url=console_url, headers={"Authorization": f"Bearer {secret}"}) as api:
        assert api.get("/v1/me").status_code == 401


def bearer_subprotocol(key: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def test_the_events_websocket_takes_the_key_as_a_subprotocol_so_that_it_is_in_no_url(console_url):
    run_id = start_run(console_url, "demo.diamond")
    url = f"{console_url.replace('http', 'ws', 1)}/v1/runs/{run_id}/events"

    with connect(url, subprotocols=["workflow-platform", bearer_subprotocol(ADMIN_KEY)]) as socket:
        assert socket.subprotocol == "workflow-platform"
        assert json.loads(socket.recv(timeout=10))["type"] == "run.created"


def test_the_events_websocket_refuses_an_unknown_key_given_as_a_subprotocol(console_url):
    run_id = start_run(console_url, "demo.diamond")
    url = f"{console_url.replace('http', 'ws', 1)}/v1/runs/{run_id}/events"

    with connect(url, subprotocols=["workflow-platform", bearer_subprotocol("not-a-key")]) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)

    assert closed.value.rcvd.code == 4401
