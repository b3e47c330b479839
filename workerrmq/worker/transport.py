"""The worker's HTTP clients for deliveries: pyreqwest (Rust reqwest) on the hot path.

An aiohttp request costs the worker about 180 µs of CPU, a reqwest one about 80 µs, and
a relayed message is little more than its request. One :class:`Transport` per engine,
made on the engine's event loop (pyreqwest starts its Tokio thread with the first client,
never before the supervisor's fork, and only if *reqwest* is on), holds the keep-alive
pools until :meth:`Transport.aclose`.

Every client sends what the aiohttp session sent, no more: no cookie jar, no proxy from
the environment, no redirect followed, no ``Accept-Encoding`` (answers are read as they
come, never decompressed), the request's own headers, a total timeout per request.
Two things differ and cannot be switched off in pyreqwest 0.15: reqwest adds
``Accept: */*`` to every request (the same as sending none, RFC 9110 12.5.1), and header
names go out in title case (``X-Workerrmq-Message-Id``). HTTP names are case-insensitive,
but an endpoint that looks them up case-sensitively would no longer find ours: that is
why workers still deliver through aiohttp unless ``HTTP_CLIENT=reqwest`` (or
``Engine(reqwest=True)``) asks for this client.

With the private-address guard on, a named host is resolved here with
:func:`~workerrmq.guard.public_addresses`, which refuses the host if any address is not
public, and the host's client is pinned to the first address (reqwest's ``resolve``):
it never asks DNS itself, so a name that rebinds cannot send a connection elsewhere. The
check is cached for :data:`DNS_TTL` seconds, as aiohttp's resolver cache was; then the
host is resolved again, and a new pinned client replaces the old one if its address is
no longer among the host's (requests in flight finish on the old one, which goes once
they are done). IP-literal targets need no DNS: :class:`~workerrmq.worker.delivery.Target`
checks them once.

mTLS presents the consumer's certificate with ``identity_pem``, from memory. A consumer
whose ``auth`` also names a CA (``ca_pem``) is delivered through :attr:`Transport.session`
(aiohttp) instead: that CA must be the only one trusted, and pyreqwest 0.15 can add a
root but not leave out the system's. OAuth2 token requests also use that session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable

import aiohttp
from pyreqwest.client import Client, ClientBuilder

from workerrmq.guard import public_addresses

__all__ = ["DNS_TTL", "Transport"]

#: Seconds a guarded host's checked address is used before the host is resolved again.
DNS_TTL = 60.0
#: Seconds an idle keep-alive connection is kept (aiohttp's default).
_IDLE_TIMEOUT = dt.timedelta(seconds=15)
#: How long :meth:`Transport.aclose` leaves pyreqwest's Tokio thread to finish what it
#: does after a request: if the interpreter finalizes meanwhile, that thread aborts it.
_SETTLE = 0.05

Resolve = Callable[[str, int], Awaitable[list[str]]]


@dataclasses.dataclass
class _Pinned:
    client: Client
    address: str
    checked_until: float


class Transport:
    """The clients one engine delivers with. *session* is the engine's aiohttp session
    (OAuth2 token requests, and the deliveries pyreqwest cannot make); with *guard*, named
    hosts are resolved and checked by *resolve* and connected to only at the address it
    returned. *trust* adds CA certificates (PEM) to the system's, for tests. Without
    *reqwest*, every delivery goes through *session*, as it did before this module."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        guard: bool = False,
        dns_ttl: float = DNS_TTL,
        resolve: Resolve = public_addresses,
        trust: tuple[bytes, ...] = (),
        reqwest: bool = True,
    ) -> None:
        self.session = session
        self.reqwest = reqwest
        self.guard = guard
        self._dns_ttl = dns_ttl
        self._resolve = resolve
        self._trust = trust
        self._clients: dict[bytes | None, Client] = {}
        self._pinned: dict[tuple[str, bytes | None], _Pinned] = {}
        self._pinning: dict[tuple[str, bytes | None], asyncio.Future[Client]] = {}
        self._closed = False

    def client(self, identity: bytes | None = None) -> Client:
        """The client for hosts that need no check, presenting *identity* (mTLS) if given."""
        client = self._clients.get(identity)
        if client is None:
            client = self._clients[identity] = self._build(identity)
        return client

    async def pinned(self, host: str, port: int, identity: bytes | None = None) -> Client:
        """The client for the named *host*, connected only to a checked public address.
        Raises :class:`~workerrmq.guard.TargetBlocked`, or :class:`OSError` when *host*
        does not resolve."""
        key = (host, identity)
        pinned = self._pinned.get(key)
        if pinned is not None and time.monotonic() < pinned.checked_until:
            return pinned.client
        pinning = self._pinning.get(key)
        if pinning is None:  # one lookup at a time per host; the others wait for it
            pinning = asyncio.ensure_future(self._pin(key, port))
            self._pinning[key] = pinning
            pinning.add_done_callback(lambda _: self._pinning.pop(key, None))
        return await asyncio.shield(pinning)

    async def _pin(self, key: tuple[str, bytes | None], port: int) -> Client:
        host, identity = key
        try:
            addresses = await self._resolve(host, port)
        except BaseException:
            self._pinned.pop(key, None)  # a host refused (or gone) now keeps no client
            raise
        previous = self._pinned.get(key)
        checked_until = time.monotonic() + self._dns_ttl
        if previous is not None and previous.address in addresses:
            previous.checked_until = checked_until  # still one of the host's: keep its pool
            return previous.client
        # A client replaced here is closed once the requests in flight on it let go of it.
        client = self._build(identity, pin=(host, addresses[0]))
        self._pinned[key] = _Pinned(client, addresses[0], checked_until)
        return client

    def _build(self, identity: bytes | None, pin: tuple[str, str] | None = None) -> Client:
        if self._closed:
            raise RuntimeError("the transport is closed")
        builder = (
            ClientBuilder()
            .follow_redirects(False)
            .no_proxy()
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .pool_idle_timeout(_IDLE_TIMEOUT)
        )
        if identity is not None:
            builder = builder.identity_pem(identity)
        for root in self._trust:
            builder = builder.add_root_certificate_pem(root)
        if pin is not None:
            builder = builder.resolve(pin[0], pin[1], 0)  # port 0: the URL's
        return builder.build()

    async def aclose(self) -> None:
        """Close every client (their connections); requests still in flight fail."""
        self._closed = True
        clients = [*self._clients.values(), *(pinned.client for pinned in self._pinned.values())]
        self._clients.clear()
        self._pinned.clear()
        for client in clients:
            await client.close()
        if clients:
            await asyncio.sleep(_SETTLE)
