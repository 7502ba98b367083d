"""The HTTP/1.1 plumbing of the local provider stand-ins (`service.dev.nhn_server`,
`service.dev.solapi_server`): keep-alive on asyncio streams, and faults a framework could not
play (a connection dropped before or after the request was taken, a slow answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
}

# An answer: status, extra headers, body; None drops the connection without a word.
Reply = tuple[int, dict[str, str], bytes] | None


@dataclass
class Fault:
    """What the next matching sends get instead of a normal answer.

    `kind`: `http` (that status; `own_body` with the provider's own error body, else a proxy's
    page), `code` (the provider's own refusal `code`), `drop` (the connection closed
    unanswered), `slow` (answered after `delay`). With `after`, the send is taken first (a drop
    or a slow answer of a message the provider has). `times` -1 lasts until cleared; `match`
    limits it to bodies containing the text.
    """

    kind: str
    times: int = -1
    status: int = 503
    code: Any = -9999
    retry_after: str | None = None
    delay: float = 0.0
    match: str | None = None
    after: bool = False
    own_body: bool = False

    KNOWN = ("times", "status", "code", "retry_after", "delay", "match", "after", "own_body")


def take_fault(faults: list[Fault], content: bytes) -> Fault | None:
    """The first fault that matches `content`, counted down."""
    text = content.decode("utf-8", "replace")
    for fault in faults:
        if fault.match is not None and fault.match not in text:
            continue
        if fault.times == 0:
            continue
        if fault.times > 0:
            fault.times -= 1
        return fault
    return None


def fault_of(command: dict[str, Any]) -> Fault:
    return Fault(command["fault"], **{k: v for k, v in command.items() if k in Fault.KNOWN})


@dataclass
class StubServer:
    """A keep-alive HTTP/1.1 server around the `answer` coroutine its subclass defines."""

    port: int = 0
    # The sender numbers registered (None: every one), and the faults to play.
    registered: set[str] | None = None
    faults: list[Fault] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)
    _host: str = "127.0.0.1"

    def control(self, command: dict[str, Any]) -> None:
        """`/_control`'s commands every stand-in takes: `clear`, `fault`, `registered`."""
        if command.get("clear"):
            self.faults.clear()
        if "fault" in command:
            self.faults.append(fault_of(command))
        if "registered" in command:
            registered = command["registered"]
            self.registered = None if registered is None else set(registered)

    async def answer(
        self, method: str, target: str, headers: dict[str, str], content: bytes
    ) -> Reply:
        raise NotImplementedError

    async def down(self, down: bool) -> None:
        """Refuse connections (the provider unreachable), or listen again on the same port."""
        if down:
            await self.close()
        elif self._server is None:
            await self.listen(self._host, self.port)

    def down_after_answer(self, command: dict[str, Any]) -> None:
        """`{"down": …}` over `/_control`: applied once the control call's answer is written
        (closing the listener first would cut that very answer)."""
        if "down" in command:
            want = bool(command["down"])
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.down(want)))

    async def run_until_interrupted(self, host: str, port: int, what: str) -> None:
        """`python -m …`: listen until Ctrl-C."""
        await self.start(host, port)
        print(f"{what} listening on {self.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.listen(host, port)

    async def stop(self) -> None:
        await self.close()

    async def listen(self, host: str, port: int) -> None:
        self._host = host
        answer: Callable[[str, str, dict[str, str], bytes], Awaitable[Reply]] = self.answer

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._connections.add(writer)
            try:
                while True:
                    request = await read_request(reader)
                    if request is None:
                        return
                    method, target, headers, content = request
                    reply = await answer(method, target, headers, content)
                    if reply is None:
                        return  # drop: close without a word
                    status, extra, body = reply
                    write_response(writer, status, extra, body)
                    await writer.drain()
                    if headers.get("connection", "").lower() == "close":
                        return
            except (ConnectionError, asyncio.IncompleteReadError):
                return
            except asyncio.CancelledError:
                return  # stopped while a slow answer waited: the connection just closes
            finally:
                self._connections.discard(writer)
                writer.close()

        self._server = await asyncio.start_server(serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, target, _ = line.decode("latin-1").split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    content = await reader.readexactly(length) if length else b""
    return method, target, headers, content


def write_response(
    writer: asyncio.StreamWriter, status: int, extra: dict[str, str], body: bytes
) -> None:
    reason = _REASONS.get(status, "Error")
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json;charset=UTF-8",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
