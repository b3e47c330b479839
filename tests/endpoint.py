"""A real HTTP endpoint for tests: an aiohttp server on a background thread.

It records every request it receives. What it answers is up to a handler the
test sets (``endpoint.respond = lambda req: (503, {})``, or ``(200, headers, body)``
to answer with a body of its own); by default 200. A status of 0 drops the
connection without answering.

A request's headers are looked up as HTTP names are, whatever their case: the worker's
reqwest client sends ``X-Workerrmq-Message-Id`` where aiohttp sends the name as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping

from aiohttp import web
from multidict import CIMultiDict

from tests.support import free_port


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: CIMultiDict[str]  # any mapping given is copied into one: names in any case
    body: bytes
    at: float

    status: int = 0  # what the endpoint answered; set once it has

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CIMultiDict):
            headers: Mapping[str, str] = self.headers
            self.headers = CIMultiDict(headers)

    @property
    def message_id(self) -> str:
        return self.headers.get("X-WorkerRMQ-Message-Id", "")


Responder = Callable[[Received], tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]]


class Endpoint:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.respond: Responder = lambda _r: (200, {})
        self.delay: float = 0.0  # how long each answer takes, unless delay_for says otherwise
        self.delay_for: Callable[[Received], float] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(
            request.method, request.path, CIMultiDict(request.headers), await request.read(), time.monotonic()
        )
        with self._lock:
            self.received.append(received)
        delay = self.delay_for(received) if self.delay_for else self.delay
        if delay:
            await asyncio.sleep(delay)
        answer = self.respond(received)
        status, headers = answer[0], answer[1]
        received.status = status
        if status == 0:  # reset: drop the connection without an answer
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if len(answer) > 2:
            return web.Response(status=status, headers=headers, body=answer[2])
        return web.Response(status=status, headers=headers, text="endpoint says" if status >= 300 else "")

    # -- for assertions --------------------------------------------------------------------

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.received]

    def ids(self) -> list[str]:
        with self._lock:
            return [r.message_id for r in self.received]

    def delivered_ids(self) -> list[str]:
        """Ids of the requests answered 2xx: the messages actually delivered."""
        with self._lock:
            return [r.message_id for r in self.received if 200 <= r.status < 300]

    def count(self) -> int:
        with self._lock:
            return len(self.received)
