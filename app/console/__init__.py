"""The web console: a single-page application served by the API itself at `/console`, from files in this package
(plain ES modules, no build step, nothing fetched from elsewhere). It talks to the API with the same API keys and
role rules as any other client; the API refuses what a role may not do whatever the console shows."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")
# Scripts, styles, images and connections from the API's own origin only: no inline script or style, no other
# origin. CSP3's 'self' also admits WebSockets to the same host and port (ws: for http, wss: for https).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class WithSecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response of the wrapped application."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


router = APIRouter(include_in_schema=False)


@router.get("/console")
@router.get("/console/{page:path}")
async def console_page(page: str = "") -> FileResponse:
    """The application's one HTML page, whatever console path was asked for: the page routes in the browser."""
    return FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, "cache-control": "no-cache"})


def install(app: FastAPI) -> None:
    # The assets first: `/console/{page:path}` would answer their paths with the HTML page.
    app.mount("/console/static", WithSecurityHeaders(StaticFiles(directory=STATIC)), name="console-static")
    app.include_router(router)
