"""The run events WebSocket: a run's recorded events, then each new one, in order."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from app.engine.state import FINISHED_RUN, REOPENABLE_RUN
from app.http.deps import INT32_MAX, GateDep, PlatformDep
from app.http.errors import ApiError
from app.runtime import Platform

# The events stream looks for new events this often on its own: a doorbell ring is a hint that can be lost.
EVENTS_POLL_S = 5
# A browser cannot set headers on a WebSocket: the console sends its key as the subprotocol
# `bearer.<key in unpadded base64url>` beside PROTOCOL, which the server picks, so the key is in no URL.
PROTOCOL = "workflow-platform"
BEARER_PROTOCOL = "bearer."

router = APIRouter(prefix="/v1")


@router.websocket("/runs/{run_id}/events")
async def run_events(
    websocket: WebSocket,
    run_id: uuid.UUID,
    platform: PlatformDep,
    gate: GateDep,
    after: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    token: Annotated[str | None, Query(max_length=200)] = None,
):
    """Every event of the run in order: first those recorded, then live ones. Closes (1000) after
    `run.succeeded`; after `run.failed` or `run.cancelled` it stays open `APP_EVENTS_LINGER_S`, so that a retry,
    which re-opens the run, streams on."""
    # Accept first so a refusal can carry its reason: close codes 4401, 4403, 4404 and 4429 mirror HTTP's.
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)
    authorization = (
        websocket.headers.get("authorization") or _bearer_in(offered) or (f"Bearer {token}" if token else None)
    )
    try:
        await gate.admit(authorization, "read")
    except ApiError as error:
        await websocket.close(code=4000 + error.status, reason=error.message)
        return
    if not await platform.queries.run_exists(run_id):
        await websocket.close(code=4404, reason=f"no run {run_id}")
        return
    await _stream_events(websocket, platform, run_id, after)


def _bearer_in(subprotocols: list[str]) -> str | None:
    for subprotocol in subprotocols:
        if subprotocol.startswith(BEARER_PROTOCOL):
            encoded = subprotocol.removeprefix(BEARER_PROTOCOL)
            try:
                return "Bearer " + base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (ValueError, binascii.Error):
                return None
    return None


async def _stream_events(websocket: WebSocket, platform: Platform, run_id: uuid.UUID, delivered: int) -> None:
    """Sends the run's events after `delivered` as they are recorded, until the run has finished for good, the
    client goes away, or a failed or cancelled run stays so for the linger time. Quiet periods keep the stream
    open: the server's WebSocket pings keep the connection alive meanwhile."""
    loop = asyncio.get_running_loop()
    rings = platform.doorbell.listen(str(run_id))
    client_gone = asyncio.ensure_future(_until_disconnect(websocket))
    next_ring: asyncio.Future | None = None
    finished_at: float | None = None  # when the run last became failed or cancelled
    try:
        await anext(rings)  # subscribed: anything committed from here on rings
        while True:
            for event in await platform.queries.events_after(run_id, delivered):
                await websocket.send_json(
                    {
                        "seq": event.seq,
                        "type": event.type,
                        "step": event.step,
                        "data": event.data,
                        "created_at": event.created_at.isoformat(),
                    }
                )
                delivered = event.seq
                status = event.type.removeprefix("run.") if event.type.startswith("run.") else None
                if status in FINISHED_RUN and status not in REOPENABLE_RUN:
                    await websocket.close(code=1000)
                    return
                if status is not None:
                    finished_at = loop.time() if status in REOPENABLE_RUN else None
            wait_s = EVENTS_POLL_S
            if finished_at is not None:
                wait_s = min(wait_s, finished_at + platform.settings.events_linger_s - loop.time())
                if wait_s <= 0:
                    await websocket.close(code=1000)
                    return
            # One ring is awaited across polls: cancelling it on a timeout would end the generator.
            next_ring = next_ring or asyncio.ensure_future(anext(rings))
            done, _ = await asyncio.wait({next_ring, client_gone}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if client_gone in done:
                return
            if next_ring in done:
                next_ring = None
    except WebSocketDisconnect:
        return
    finally:
        pending = [task for task in (next_ring, client_gone) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await rings.aclose()


async def _until_disconnect(websocket: WebSocket) -> None:
    """Returns when the client closes (whatever it sends before is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
