"""How the API serves the console: one HTML page for every console path, its assets from the package, and on all
of them a Content-Security-Policy that admits scripts, styles and connections from the API's own origin only. The
HTML holds no inline script or style. Served by an application that is never started: no service is needed."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
import pytest_asyncio

from app.console import STATIC
from app.http.api import create_app
from app.runtime import Platform
from app.settings import Settings


@pytest_asyncio.fixture
async def client():
    platform = Platform.build(Settings(database_url="sqlite://", amqp_url="", redis_url=""), embedded=True)
    transport = httpx.ASGITransport(app=create_app(platform, manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


@pytest.mark.parametrize("path", ["/console", "/console/runs", "/console/runs/0b5e8f52-6e36-4d71-a3b2-000000000000"])
@pytest.mark.asyncio
async def test_every_console_path_answers_the_one_html_page(client, path):
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == (STATIC / "index.html").read_text()


@pytest.mark.parametrize("path", ["/console", "/console/workflows/orders", "/console/static/app.js"])
@pytest.mark.asyncio
async def test_console_responses_allow_scripts_styles_and_connections_from_the_apis_own_origin_only(client, path):
    response = await client.get(path)

    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == ["'self'"], directive
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.asyncio
async def test_the_assets_are_served_from_the_package_as_javascript_and_css(client):
    script = await client.get("/console/static/app.js")
    style = await client.get("/console/static/console.css")

    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


@pytest.mark.asyncio
async def test_a_missing_asset_is_a_404_not_the_page(client):
    assert (await client.get("/console/static/nothing.js")).status_code == 404


@pytest.mark.asyncio
async def test_the_api_keeps_its_own_answers_beside_the_console(client):
    assert (await client.get("/v1/runs")).status_code == 401
    assert not [path for path in (await client.get("/openapi.json")).json()["paths"] if path.startswith("/console")]


class _InlineCode(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        self._in_script = tag == "script"
        self.found += [f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")]

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("script text")

    def handle_endtag(self, tag):
        self._in_script = False


def test_the_html_holds_no_inline_script_style_or_event_handler():
    parser = _InlineCode()
    parser.feed((STATIC / "index.html").read_text())

    assert parser.found == []


def test_no_script_of_the_console_parses_text_as_html_or_code():
    """Everything shown is set as text: the scripts never hand a string to the HTML parser or to eval."""
    risky = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setHTML")
    scripts = sorted(STATIC.rglob("*.js"))

    assert scripts
    assert {script.name: risky.findall(script.read_text()) for script in scripts} == {s.name: [] for s in scripts}
