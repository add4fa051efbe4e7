"""Fault injection between a process and a service (PostgreSQL, RabbitMQ): a small asyncio TCP proxy on loopback.

Shared by every fault test of the app (issue 8): extend it here rather than writing another proxy. Point the
process under test at `proxy.url(service_url)` instead of the service, then change the proxy's behaviour while
it runs:

- `delay_s`: seconds added before each chunk is forwarded, in both directions (network latency);
- `refuse()` / `accept()`: stop listening, so new connections are refused (ECONNREFUSED), and listen again;
- `blackhole = True`: connections stay open but nothing is forwarded either way (a partition: packets dropped);
- `drop_connections()`: closes every open connection at once (a reset, as when a node or a pod dies).

`clock_skew(offset_s)` starts processes with their clock shifted (libfaketime).

The proxy runs in the test's own event loop, so the test must be async and keep awaiting while traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
from urllib.parse import urlsplit, urlunsplit


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target_host, self.target_port = target_host, target_port
        self.port = 0
        self.delay_s = 0.0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    @classmethod
    def to(cls, url: str) -> FaultProxy:
        """A proxy to the host and port of a service URL (postgresql://..., amqp://...)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or {"postgresql": 5432, "amqp": 5672}[parts.scheme])

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> FaultProxy:
        await self.accept()
        return self

    async def accept(self) -> None:
        """Listens (again, on the same port): new connections are proxied."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stops listening: new connections are refused; open ones are left as they are."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def stop(self) -> None:
        await self.refuse()
        self.drop_connections()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *_exc) -> None:
        await self.stop()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        try:
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        finally:
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.blackhole:
                    continue
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()  # one side closed: close the other, as a real connection would end


class RefusingPostgres:
    """A server that answers every PostgreSQL connection as a database refusing it does: with an ErrorResponse
    carrying `sqlstate` (e.g. 57P03 "the database system is starting up", 53300 "too many connections")."""

    SSL_REQUEST = 80877103

    def __init__(self, sqlstate: str, message: str):
        self.sqlstate, self.message = sqlstate, message
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def __aenter__(self) -> RefusingPostgres:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                code = int.from_bytes((await reader.readexactly(length - 4))[:4], "big")
                if code != self.SSL_REQUEST:
                    break
                writer.write(b"N")  # no TLS: the client goes on with a plain startup message
            fields = b"SFATAL\0VFATAL\0C" + self.sqlstate.encode() + b"\0M" + self.message.encode() + b"\0\0"
            writer.write(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
            await writer.drain()
        writer.close()


def libfaketime() -> str | None:
    """The path of libfaketime (Debian's `faketime` package), or None where it is not installed."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


@contextlib.contextmanager
def clock_skew(offset_s: float):
    """Processes started inside see their clock shifted by `offset_s` (libfaketime: wall and monotonic clocks):
    a node whose clock runs ahead (positive) or behind (negative) of the others'."""
    library = libfaketime()
    assert library, "libfaketime is missing: apt-get install faketime (tests/ensure-services.sh does)"
    saved = {name: os.environ.get(name) for name in ("LD_PRELOAD", "FAKETIME")}
    os.environ.update(LD_PRELOAD=library, FAKETIME=f"{offset_s:+.3f}")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
