"""A tiny asyncio HTTP/1.1 server for the fake model servers: keep-alive, JSON bodies, chunked streaming,
and the low-level control tests need to misbehave on purpose (abort a connection mid-stream, stop listening).
Only what Ollama/OpenAI clients send is supported (Content-Length request bodies)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    query: str = ""

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    writer: asyncio.StreamWriter
    started: bool = False
    chunked: bool = False
    extra_headers: dict = field(default_factory=dict)

    async def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        self.started = True
        await self.writer.drain()

    async def send_json(self, data, status: int = 200) -> None:
        await self.send(status, json.dumps(data).encode())

    async def start_stream(self, content_type: str, status: int = 200) -> None:
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        self.writer.write(head.encode())
        self.started = self.chunked = True
        await self.writer.drain()

    async def write(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the connection at once (a server that died mid-stream)."""
        self.writer.transport.abort()


Handler = Callable[[Request, Response], Awaitable[None]]


class MiniHTTPServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0):
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop_listening(self, *, drop_connections: bool = True) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if drop_connections:
            for writer in list(self._writers):
                writer.transport.abort()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                    return
                if not line:
                    return
                try:
                    method, target, _version = line.decode("latin-1").split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                path, _, query = target.partition("?")
                response = Response(writer)
                try:
                    await self.handler(Request(method.upper(), path, headers, body, query), response)
                except (ConnectionError, asyncio.IncompleteReadError):
                    return
                if writer.transport.is_closing():
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:  # noqa: BLE001 - a broken test connection must not kill the server
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()
