"""Liveness answered from a thread of its own, so a saturated event loop cannot make it late.

A request to the API's port waits its turn in the event loop: under thousands of concurrent requests, `/healthz`
there took seconds, past the probe's timeout, and Kubernetes would restart a pod that is only busy. This thread
owns a socket of its own (`APP_METRICS_PORT`) and answers from a timestamp the event loop refreshes every second:
200 while the loop makes progress, 503 once it has not for `stalled_after_s` (a deadlocked or blocked loop, which a
restart does fix). It needs the GIL only briefly, which Python hands over every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

BEAT_S = 1.0


class _ProbeServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: while a saturated process is slow to accept, further probes' SYNs
    # are dropped and their clients back off for seconds (1, 3, 7 s...), which a kubelet counts as failures.
    request_queue_size = 128


class Liveness:
    def __init__(self, host: str, port: int, stalled_after_s: float = 30):
        self.stalled_after_s = stalled_after_s
        self._last_beat = time.monotonic()
        self._server = _ProbeServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="liveness", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    async def beat(self) -> None:
        """Runs in the event loop being watched: each beat proves it still runs its tasks."""
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.stalled_after_s

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        liveness = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                if self.path.split("?")[0] != "/healthz":
                    self._answer(404, b'{"status":"not found"}')
                elif liveness.alive():
                    self._answer(200, b'{"status":"ok"}')
                else:
                    self._answer(503, b'{"status":"stalled"}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:  # probes every few seconds: no access log
                pass

        return Handler
