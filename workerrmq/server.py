"""How the API is served: Gunicorn with :class:`ApiWorker`, for every way of starting it.

``workerrmq api``, ``workerrmq run`` and the seed's ``gunicorn --bind 0.0.0.0:5000 wsgi:app``
(through ``gunicorn.conf.py``) all use the same options (:func:`gunicorn_options`).

:class:`ApiWorker` is Gunicorn's asyncio worker (``gasgi``) serving the WSGI app: the event
loop reads each request, headers and body, and only a complete request takes one of the
``API_THREADS`` threads. A client that sends slowly holds a socket, never a thread. One that
takes over :data:`HEADER_TIMEOUT` for its headers or :data:`BODY_TIMEOUT` for its body gets
408 and is disconnected; a body over ``MAX_REQUEST_BYTES`` gets 413, chunked or not, before
the app sees it. Errors Gunicorn answers itself (a request line or headers over its limits,
a malformed request) are JSON in the API's error shape.

Plain publish requests take no thread at all: :class:`~workerrmq.api.native.PublishLane`
answers them on the event loop, which is also the loop the process publishes from
(``Publisher.serve_on``); every other request, and any publish request the lane leaves,
runs in Flask on a thread.

SIGTERM stops a process gracefully: requests under way finish, connections waiting for a
request are closed at once, and a TLS connection the server closes ends once its
close_notify is sent, whether or not the client answers it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import IO, Any

from a2wsgi.wsgi import build_environ
from gunicorn.app.base import BaseApplication
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers import gasgi

from workerrmq.broker.publisher import Publisher
from workerrmq.loop import settle_heap
from workerrmq.settings import Settings

__all__ = ["ApiWorker", "BufferedWSGI", "Gunicorn", "gunicorn_options", "seed_options"]

#: Seconds a client has, from connecting, to send a request's headers.
HEADER_TIMEOUT = 10.0
#: Seconds a client has, after its headers, to send the whole body.
BODY_TIMEOUT = 30.0
#: A body up to this size is buffered in memory, a larger one in a temporary file.
BODY_IN_MEMORY = 1024 * 1024
#: The signals that stop an API process: SIGTERM gracefully, SIGINT and SIGQUIT at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_ERROR_CODES = {
    400: "invalid_request",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
    501: "not_implemented",
}


def error_body(status: int, message: str) -> bytes:
    """The API's error shape, ``{"error": {"code", "message"}}``, for an error the server
    answers before the app runs."""
    code = _ERROR_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


class _BodyTooLarge(Exception):
    pass


#: Serves a request on the event loop, given its scope, its whole body and ``send``; False
#: (nothing sent) leaves it to the WSGI app.
NativeHandler = Callable[[dict[str, Any], bytes, Callable[..., Any]], Awaitable[bool]]


class BufferedWSGI:
    """An ASGI app that serves a WSGI *app*: it reads the whole body on the event loop
    (at most *max_body* bytes within *body_timeout* seconds), then runs *app* on one of
    *threads* threads, and sends its response. A request with a body held in memory is
    first offered to *native*, which may answer it on the loop instead."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        threads: int,
        max_body: int | None,
        body_timeout: float,
        native: NativeHandler | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.native = native
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="api")

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read_body(scope, receive)
        except _BodyTooLarge:
            await _send_error(send, 413, "request body is too large")
            return
        except TimeoutError:
            await _send_error(send, 408, f"request body not received within {self.body_timeout:g} s")
            return
        if body is None:  # the client went away
            return
        if isinstance(body, bytes):
            if self.native is not None and await self.native(scope, body, send):
                return
            body = io.BytesIO(body)
        with body:
            environ = _environ(scope, body)
            loop = asyncio.get_running_loop()
            status, headers, content = await loop.run_in_executor(self._pool, self._call, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _read_body(
        self, scope: dict[str, Any], receive: Callable[..., Any]
    ) -> bytes | IO[bytes] | None:
        """The whole body: bytes up to :data:`BODY_IN_MEMORY`, a temporary file beyond;
        None if the client went away."""
        declared = dict(scope["headers"]).get(b"content-length")
        if self.max_body is not None and declared is not None and int(declared) > self.max_body:
            raise _BodyTooLarge
        chunks: list[bytes] = []
        spool: IO[bytes] | None = None
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if self.max_body is not None and size > self.max_body:
                    raise _BodyTooLarge
                if spool is None and size > BODY_IN_MEMORY:
                    spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned)
                    spool.writelines(chunks)
                if spool is not None:
                    spool.write(chunk)
                else:
                    chunks.append(chunk)
                if not message.get("more_body"):
                    if spool is None:
                        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    spool.seek(0)
                    body, spool = spool, None
                    return body
        finally:
            if spool is not None:  # not returned: the client went, or sent too much
                spool.close()

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Run the WSGI app (on a pool thread); its whole response."""
        chunks: list[bytes] = []
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [
                int(status.split(" ", 1)[0]),
                [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            ]
            return chunks.append

        result = self.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return started[0], started[1], b"".join(chunks)


def _environ(scope: dict[str, Any], body: IO[bytes]) -> dict[str, Any]:
    """The WSGI environ of a request whose body is read: a chunked body gets its length."""
    environ: dict[str, Any] = dict(build_environ(scope, body))  # type: ignore[arg-type]
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["CONTENT_LENGTH"] = str(body.seek(0, os.SEEK_END))
    body.seek(0)
    return environ


async def _send_error(send: Callable[..., Any], status: int, message: str) -> None:
    body = error_body(status, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Nothing to start or stop: the app is ready once built."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


class _Protocol(ASGIProtocol):
    """Gunicorn's HTTP protocol with a deadline for the first request's headers (later
    requests on the connection have the keep-alive timeout), and JSON errors."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.worker.connections.add(self)
        self._header_timer = self.worker.loop.call_later(HEADER_TIMEOUT, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connections.discard(self)
        self._cancel_header_timer()
        super().connection_lost(exc)

    def close_if_idle(self) -> None:
        """Close the connection if it waits for a request, none running: the worker is
        stopping, and would otherwise wait for the keep-alive or header timeout. A client
        must expect an idle connection to close (and resend a request it had only begun)."""
        if self._awaiting_request and not self._finishing_calls and not self._closed:
            self._close_transport()
            if self._request_ready is not None:
                self._request_ready.set()  # the connection's task sees it closed and ends

    def _close_transport(self) -> None:
        closing = self.transport is not None and not self._closed
        super()._close_transport()
        if closing and self._is_ssl:
            self._end_tls_when_sent()

    def _end_tls_when_sent(self) -> None:
        """End a TLS connection the server closes once its close_notify is sent, without
        waiting for the client's.

        Closing a TLS transport sends the rest of the response and close_notify, then
        waits up to 30 s (the loop's ``ssl_shutdown_timeout``) for the client's
        close_notify. A client that keeps its connection open in a pool (``requests``,
        browsers) sends none until it uses or drops that connection: meanwhile the
        connection stayed counted as open, and a stopping worker waited for it until
        Gunicorn killed it. TLS does not ask the closing side to wait (RFC 8446, 6.1).
        Shutting the socket's reading side gives the TLS layer the end of stream it
        waits for; it then closes the socket as usual, after what is left to send.
        """
        transport = self.transport
        if transport is None or self._conn_lost_handled:
            return
        if transport.get_write_buffer_size():  # TLS still holds some of the response
            self.worker.loop.call_later(0.05, self._end_tls_when_sent)
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return
        try:
            raw = socket.socket(fileno=fd)  # the transport's socket, detached below, not closed
        except OSError:  # closed meanwhile
            return
        try:
            raw.shutdown(socket.SHUT_RD)
        except OSError:  # the client is gone already
            pass
        finally:
            raw.detach()

    def _on_headers_complete(self) -> Any:
        self._cancel_header_timer()
        return super()._on_headers_complete()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._closed or self.req_count > 1 or self._current_request is not None:
            return
        self._send_error_response(408, f"request headers not received within {HEADER_TIMEOUT:g} s")
        self._close_transport()
        if self._request_ready is not None:
            self._request_ready.set()  # the connection's task sees it closed and ends

    def _send_error_response(self, status: int, message: str, extra_headers: Any = ()) -> None:
        body = error_body(status, message[:200])
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        )
        self._safe_write(head.encode("latin-1") + body)


class ApiWorker(gasgi.ASGIWorker):
    """Gunicorn's asyncio worker, serving a WSGI app through :class:`BufferedWSGI` on
    ``threads`` threads, with a header deadline and JSON errors."""

    asgi: Any  # the app Gunicorn loaded, then wrapped by load_wsgi
    #: The app's publisher, which publishes from this worker's loop (closed at the stop).
    _publisher: Publisher | None = None
    #: The open connections (HTTP/1), so a stopping worker can close the idle ones.
    connections: set[_Protocol]

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """``threads`` sizes the app's thread pool here (the ASGI worker warns about it)."""

    def init_process(self) -> None:
        self.connections = set()
        # The ASGI worker builds its connections from this module-level name: this worker
        # process (forked, one per worker) uses the protocol above instead.
        gasgi.ASGIProtocol = _Protocol
        super().init_process()

    def init_signals(self) -> None:
        """Gunicorn's handlers, run by the event loop; a stop signal that comes before the
        loop runs (while the app loads) is kept, and handled once it runs.

        uvloop, the loop Gunicorn picks where it is installed, reads signals only while its
        loop runs and drops one that came before: a SIGTERM sent while a process was still
        loading the app left it serving until Gunicorn killed it after ``graceful_timeout``.
        """
        super().init_signals()
        self._loop_handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        self._early_signals: list[int] = []
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._keep_early_signal)

    def _keep_early_signal(self, signum: int, _frame: Any) -> None:
        self._early_signals.append(signum)

    def run(self) -> None:
        self.loop.call_soon(self._handle_early_signals)
        super().run()

    def _handle_early_signals(self) -> None:
        """Now that the loop runs: its handlers back, and each signal kept meanwhile raised
        again for them."""
        for sig, handler in self._loop_handlers.items():
            signal.signal(sig, handler)
        for signum in self._early_signals:
            signal.raise_signal(signum)

    async def _shutdown(self) -> None:
        """Gunicorn's graceful stop, after closing the connections that wait for a request:
        requests under way finish, idle keep-alive connections do not hold the stop."""
        for server in self.servers:
            server.close()  # no new connection from here on (Gunicorn closes them again)
        for connection in list(self.connections):
            connection.close_if_idle()
        await super()._shutdown()
        if self._publisher is not None:  # requests are done: its connection closes on this loop
            await self._publisher.aclose()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.asgi
        limit = getattr(app, "config", {}).get("MAX_CONTENT_LENGTH")
        self.asgi = BufferedWSGI(
            app,
            threads=self.cfg.threads,
            max_body=limit,
            body_timeout=BODY_TIMEOUT,
            native=_publish_lane(app, self.loop),
        )
        if "workerrmq" in getattr(app, "extensions", {}):
            self._publisher = app.extensions["workerrmq"].publisher
        settle_heap()  # this process serves the app from now on


def _publish_lane(app: Any, loop: asyncio.AbstractEventLoop) -> NativeHandler | None:
    """WorkerRMQ's publish lane for *app*, publishing from *loop*; None for another app."""
    if "workerrmq" not in getattr(app, "extensions", {}):
        return None
    from workerrmq.api.native import PublishLane

    app.extensions["workerrmq"].publisher.serve_on(loop)
    return PublishLane(app).serve


class _GunicornLog(GunicornLogger):
    """Gunicorn's own messages go through WorkerRMQ's handler, so LOG_FORMAT applies to them."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers.clear()
        self.error_log.propagate = True


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Gunicorn's settings for the API, the same for every entry point."""
    tls = {"certfile": settings.tls_cert_file, "keyfile": settings.tls_key_file}
    if not settings.tls_cert_file:
        tls = {}
    return {
        **tls,  # TLS_CERT_FILE and TLS_KEY_FILE: the API speaks https only
        "bind": [settings.bind],
        "workers": settings.api_workers,
        "threads": settings.api_threads,
        "worker_class": "workerrmq.server.ApiWorker",
        "asgi_lifespan": "off",
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": None,
        "logger_class": _GunicornLog,
        "loglevel": settings.log_level.lower(),
        "child_exit": _child_exit,
        # Gunicorn's control socket is one per user: two APIs on a host would clash.
        "control_socket_disable": True,
    }


class Gunicorn(BaseApplication):
    """The API of ``workerrmq api``: Gunicorn without a configuration file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from workerrmq.api import create_app

        return create_app(self.settings)


def share_metrics_between_processes() -> None:
    """Give Gunicorn's processes one fresh metrics directory (before any metric exists)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="workerrmq-metrics-")


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def seed_options(settings: Settings) -> dict[str, Any]:
    """What ``gunicorn.conf.py`` sets: :func:`gunicorn_options`, plus one supervised worker
    started beside the API by Gunicorn's master (once, not per API process) and stopped
    with it, so ``gunicorn wsgi:app`` delivers messages as ``workerrmq run`` does."""
    supervisor: list[subprocess.Popen[bytes]] = []

    def when_ready(_arbiter: Any) -> None:
        from workerrmq.supervisor import start_supervisor

        supervisor.append(start_supervisor(settings, parent=os.getpid()))

    def on_exit(_arbiter: Any) -> None:
        from workerrmq.supervisor import stop_supervisor

        while supervisor:
            stop_supervisor(supervisor.pop())

    return {**gunicorn_options(settings), "when_ready": when_ready, "on_exit": on_exit}
