"""The worker's delivery client (pyreqwest, :mod:`workerrmq.worker.transport`) against real
local HTTP servers: what goes on the wire, how each failure is classified, the caps on what
is read of an answer, the private-address guard's pinning, and mTLS.

Real parts: the test endpoint (tests/endpoint.py, aiohttp's server), a raw socket server
for what aiohttp's server would not do (answer nothing, trickle, garble, count connections),
and certificates made by ``trustme``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pika
import pytest
import trustme
from aiohttp import web

from tests.endpoint import Endpoint
from tests.support import wait_for
from tests.test_endpoint_auth import _mtls
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.guard import TargetBlocked
from workerrmq.worker.delivery import REPLY_MAX, USER_AGENT, Attempt, DeliveryResult, Target
from workerrmq.worker.transport import Transport

# -- helpers -----------------------------------------------------------------------------------


def attempt(body: bytes = b'{"n": 1}') -> Attempt:
    return Attempt(
        message_id="m-1",
        number=1,
        body=body,
        content_type="application/json",
        headers={"tenant": "acme"},
        correlation_id="c-1",
        routing_key="rk",
        redelivered=False,
        timestamp=dt.datetime(2026, 1, 1),
    )


def spec(url: str, **fields: Any) -> ConsumerSpec:
    fields.setdefault("timeout", 5.0)
    return ConsumerSpec(id="c1", name="c1", queue="q", target_url=url, **fields)


def deliver(
    url: str,
    *,
    guard: bool = False,
    times: int = 1,
    transport: Callable[[aiohttp.ClientSession], Transport] | None = None,
    **fields: Any,
) -> list[DeliveryResult]:
    """Send one attempt *times* over a fresh transport, one after the other."""

    async def go() -> list[DeliveryResult]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            via = transport(session) if transport else Transport(session, guard=guard)
            target = Target(spec(url, **fields), "q", guard=guard)
            try:
                return [await target.send(via, attempt()) for _ in range(times)]
            finally:
                await via.aclose()

    return asyncio.run(go())


class RawServer:
    """A TCP server on a thread that reads each HTTP request's head and body and lets
    *answer* write to the socket (or not). Counts connections; keeps each one open for
    the next request while *answer* returns True."""

    def __init__(self, answer: Callable[[socket.socket, bytes], bool]) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            data = b""
            while not self._stop.is_set():
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = content_length(head)
                    while len(data) < length:
                        data += conn.recv(65536)
                    data = data[length:]
                    self.heads.append(head)
                    if not self.answer(conn, head):
                        return
                except OSError:
                    return


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def ok(conn: socket.socket, _head: bytes) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=abc\r\n\r\nok")
    return True


def header_lines(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")[1:]
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


# -- what goes on the wire ---------------------------------------------------------------------


def test_the_request_carries_the_targets_headers_and_nothing_of_a_cookie_or_encoding():
    with RawServer(ok) as server:
        results = deliver(server.url, times=2, headers={"X-Team": "payments"}, signing_secret="s3cret")
    assert [r.status for r in results] == [200, 200]
    assert server.heads[0].startswith(b"POST /hook HTTP/1.1\r\n")
    got = {name.lower(): value for name, value in header_lines(server.heads[1]).items()}
    assert got["user-agent"] == USER_AGENT
    assert got["x-team"] == "payments"
    assert got["x-workerrmq-message-id"] == "m-1"
    assert got["x-workerrmq-header-tenant"] == "acme"
    assert got["content-type"] == "application/json"
    assert got["content-length"] == "8"
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= got.keys()
    # The cookie the endpoint set is not sent back; answers are never asked compressed.
    assert not {"cookie", "accept-encoding", "referer", "proxy-authorization"} & got.keys()
    # reqwest's own default, which pyreqwest cannot leave out (the module docstring says so).
    assert got.get("accept", "*/*") == "*/*"


def test_put_and_keep_alive_one_connection_for_many_deliveries():
    with RawServer(ok) as server:
        results = deliver(server.url, times=20, method="PUT")
        assert [r.status for r in results] == [200] * 20
        assert server.connections == 1
    assert all(head.startswith(b"PUT /hook ") for head in server.heads)


def test_a_proxy_in_the_environment_is_not_used(monkeypatch):
    with RawServer(ok) as proxy, RawServer(ok) as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        assert deliver(server.url)[0].status == 200
        assert proxy.connections == 0


def test_redirects_are_not_followed():
    with Endpoint() as internal, Endpoint() as endpoint:
        endpoint.respond = lambda _r: (302, {"Location": internal.url})
        (result,) = deliver(endpoint.url)
        assert (result.status, result.error) == (302, "HTTP 302")
        assert internal.count() == 0


# -- failures ----------------------------------------------------------------------------------


def silent(_conn: socket.socket, _head: bytes) -> bool:
    threading.Event().wait(3)  # longer than the consumer's timeout: the client gives up first
    return False


def trickling(conn: socket.socket, _head: bytes) -> bool:
    conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(30):
        conn.sendall(b"x")
        threading.Event().wait(0.1)
    return False


def closing(_conn: socket.socket, _head: bytes) -> bool:
    return False


def garbled(conn: socket.socket, _head: bytes) -> bool:
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    return False


@pytest.mark.parametrize(
    ("answer", "error"),
    [(silent, "timeout"), (trickling, "timeout"), (closing, "connection"), (garbled, "client")],
)
def test_failures_are_classified_as_before(answer, error):
    with RawServer(answer) as server:
        (result,) = deliver(server.url, timeout=1.0)
    assert (result.status, result.error) == (None, error), result
    if error == "timeout":
        assert result.detail == "no answer within 1.0s"


def test_a_refused_connection_is_a_connection_failure_without_the_url():
    with RawServer(ok) as server:
        port = server.port
    (result,) = deliver(f"http://user:pw-1234@127.0.0.1:{port}/hook?token=tok-5678")
    assert result.error == "connection"
    assert "refused" in result.detail.lower()
    assert "pw-1234" not in result.detail and "tok-5678" not in result.detail


def test_an_error_answer_is_read_only_as_far_as_the_cut_and_retry_after_is_kept():
    big = b"E" * (50 * 1024 * 1024)
    with Endpoint() as endpoint:
        endpoint.respond = lambda _r: (503, {"Retry-After": "7"}, big)
        (result,) = deliver(endpoint.url)
    assert (result.status, result.error, result.retry_after) == (503, "HTTP 503", 7.0)
    assert result.detail == "E" * 1024


def test_an_echoed_credential_is_cut_out_of_the_error_text():
    with Endpoint() as endpoint:
        endpoint.respond = lambda r: (401, {}, repr(r.headers).encode())
        (result,) = deliver(endpoint.url, auth={"type": "bearer", "token": "tok-3b1f9c2e7d"})
    assert result.status == 401
    assert "tok-3b1f9c2e7d" not in result.detail and "***" in result.detail


# -- replies -----------------------------------------------------------------------------------


def chunked(size: int) -> Callable[[socket.socket, bytes], bool]:
    def answer(conn: socket.socket, _head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        left = size
        while left:
            part = min(left, 65536)
            conn.sendall(b"%x\r\n%s\r\n" % (part, b"r" * part))
            left -= part
        conn.sendall(b"0\r\n\r\n")
        return True

    return answer


def test_a_reply_is_read_whole_up_to_its_limit():
    with Endpoint() as endpoint:
        endpoint.respond = lambda _r: (200, {"Content-Type": "application/json"}, b'{"ok": true}')
        (result,) = deliver(endpoint.url, reply=True)
        assert (result.answer, result.answer_type) == (b'{"ok": true}', "application/json")
        endpoint.respond = lambda _r: (200, {}, b"x" * (REPLY_MAX + 1))  # said by Content-Length
        (result,) = deliver(endpoint.url, reply=True)
        assert (result.status, result.error) == (None, "reply_too_large")
        assert f"{REPLY_MAX + 1} bytes" in result.detail
    with RawServer(chunked(REPLY_MAX)) as server:
        (result,) = deliver(server.url, reply=True)
        assert result.answer == b"r" * REPLY_MAX
    with RawServer(chunked(REPLY_MAX + 1)) as server:  # no length told: found reading
        (result,) = deliver(server.url, reply=True)
        assert (result.error, result.detail) == (
            "reply_too_large",
            f"HTTP 200 with an answer of more; a reply takes at most {REPLY_MAX} bytes",
        )


# -- the private-address guard -----------------------------------------------------------------


def resolver(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver that answers from *answers* (which the test may change), checking nothing,
    and counts its lookups: it stands in for DNS, which has no names for these tests."""

    async def resolve(host: str, _port: int) -> list[str]:
        resolve.lookups += 1  # type: ignore[attr-defined]
        found = answers[host]
        if found == ["refused"]:
            raise TargetBlocked(f"target {host!r} resolves to 10.0.0.1, a non-public address")
        return found

    resolve.lookups = 0  # type: ignore[attr-defined]
    return resolve


def test_a_guarded_name_is_connected_to_only_at_the_checked_address():
    """ "rebind.example" has no address in DNS: the request reaching the server proves that
    the client went to the address the guard's resolver gave, not to its own lookup."""
    answers = {"rebind.example": ["127.0.0.1"]}
    resolve = resolver(answers)
    with Endpoint() as endpoint:
        url = f"http://rebind.example:{endpoint.port}/hook"
        results = deliver(
            url, guard=True, times=3, transport=lambda s: Transport(s, guard=True, resolve=resolve)
        )
        assert [r.status for r in results] == [200] * 3
        assert resolve.lookups == 1  # cached for the TTL  # type: ignore[attr-defined]
        assert endpoint.received[0].headers["Host"] == f"rebind.example:{endpoint.port}"


def test_a_guarded_name_that_rebinds_is_refused_at_its_next_check():
    answers = {"rebind.example": ["127.0.0.1"]}
    resolve = resolver(answers)

    async def go(port: int) -> list[DeliveryResult]:
        async with aiohttp.ClientSession() as session:
            transport = Transport(session, guard=True, resolve=resolve, dns_ttl=0)
            target = Target(spec(f"http://rebind.example:{port}/hook"), "q", guard=True)
            first = await target.send(transport, attempt())
            answers["rebind.example"] = ["refused"]
            second = await target.send(transport, attempt())
            await transport.aclose()
            return [first, second]

    with Endpoint() as endpoint:
        first, second = asyncio.run(go(endpoint.port))
        assert first.status == 200
        assert (second.status, second.error) == (None, "blocked")
        assert "non-public" in second.detail
        assert endpoint.count() == 1


def test_the_real_guard_refuses_a_name_for_a_loopback_address_and_odd_literals():
    with Endpoint() as endpoint:
        (named,) = deliver(endpoint.url.replace("127.0.0.1", "localhost"), guard=True)
        # reqwest reads 2130706433 as 127.0.0.1, and so does the guard.
        (odd,) = deliver(f"http://2130706433:{endpoint.port}/hook", guard=True)
        assert endpoint.count() == 0
    assert (named.error, odd.error) == ("blocked", "blocked")
    assert "non-public" in named.detail and "non-public" in odd.detail


def test_an_unknown_name_is_a_connection_failure():
    (result,) = deliver("http://no-such-host.invalid/hook", guard=True)
    assert result.error == "connection"


# -- mTLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class TlsEndpoint(Endpoint):
    """The test endpoint over HTTPS, demanding a client certificate from *ca*; it keeps the
    names (subjectAltName) of each one it was shown."""

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__()
        self.url = f"https://localhost:{self.port}/hook"
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(self.context)
        ca.configure_trust(self.context)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.subjects: list[Any] = []

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._seen)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context).start()

    async def _seen(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.subjects.append(request.transport.get_extra_info("peercert")["subjectAltName"])
        return await self._handle(request)


def test_mtls_presents_the_consumers_certificate(ca: trustme.CA):
    trusted = (ca.cert_pem.bytes(),)
    with TlsEndpoint(ca) as server:
        cert = ca.issue_cert("client@workerrmq.test")
        results = deliver(
            server.url, times=2, auth=_mtls(cert), transport=lambda s: Transport(s, trust=trusted)
        )
        assert [r.status for r in results] == [200, 200]
        assert server.subjects[0] == (("email", "client@workerrmq.test"),)
        # Without the server's CA among the trusted ones, its certificate is refused.
        (untrusted,) = deliver(server.url, auth=_mtls(cert))
        assert untrusted.error == "connection"
        # Without a client certificate the server refuses the handshake.
        (anonymous,) = deliver(server.url, transport=lambda s: Transport(s, trust=trusted))
        assert anonymous.status is None
        assert server.count() == 2


def test_mtls_with_its_own_ca_goes_through_aiohttp_trusting_that_ca_alone(ca: trustme.CA):
    with TlsEndpoint(ca) as server:
        cert = ca.issue_cert("client@workerrmq.test")
        (result,) = deliver(server.url, auth=_mtls(cert, ca))
        assert result.status == 200
        elsewhere = trustme.CA()
        (refused,) = deliver(server.url, auth=_mtls(cert, elsewhere))
        assert refused.error == "connection"
        assert server.count() == 1


# -- the transport's life ----------------------------------------------------------------------


def test_a_closed_transport_makes_no_client():
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            transport = Transport(session)
            transport.client()
            await transport.aclose()
            with pytest.raises(RuntimeError):
                transport.client()

    asyncio.run(go())


def test_a_session_alone_still_delivers():
    """``Target.send`` with an aiohttp session (what tests and tools hand it) takes aiohttp."""

    async def go(url: str) -> DeliveryResult:
        async with aiohttp.ClientSession() as session:
            return await Target(spec(url), "q").send(session, attempt())

    with Endpoint() as endpoint:
        assert asyncio.run(go(endpoint.url)).status == 200
        assert endpoint.received[0].headers["X-WorkerRMQ-Message-Id"] == "m-1"


# -- in the engine -----------------------------------------------------------------------------


def test_an_engine_on_pyreqwest_delivers_retries_and_acks(
    settings, start_engine, endpoint, make_consumer, amqp
):
    """The whole worker with pyreqwest on: a 503 is retried through the delay queue, the
    2xx acks, and the engine stops (closing its clients) within the test's stop."""
    answers = iter([503, 200])
    endpoint.respond = lambda _r: (next(answers, 200), {})
    worker = start_engine(settings, reqwest=True)
    consumer, queue = make_consumer(endpoint.url, initial_delay=0.05, max_delay=0.25)
    worker.runner(consumer["id"])
    amqp.confirm_delivery()
    amqp.basic_publish("", queue, b"over reqwest", pika.BasicProperties(message_id="m-9"), mandatory=True)

    wait_for(lambda: [r.status for r in endpoint.received] == [503, 200], what="the retry and the delivery")
    got = {name.lower(): value for name, value in endpoint.received[1].headers.items()}
    assert (got["x-workerrmq-message-id"], got["x-workerrmq-attempt"]) == ("m-9", "2")
    assert endpoint.received[1].body == b"over reqwest"
    wait_for(lambda: amqp.queue_declare(queue, passive=True).method.message_count == 0, what="the ack")
    worker.stop()
