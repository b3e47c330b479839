"""The SSRF guard: with ``BLOCK_PRIVATE_TARGETS`` on, endpoints must be public addresses.

Checked when a consumer is saved (:func:`check_target`) and again at every
connect, on the addresses the connection will really use, so a name that
resolves differently later (DNS rebinding) gains nothing: aiohttp's connector
resolves through :class:`GuardedResolver`; the worker's delivery client
(:mod:`workerrmq.worker.transport`) resolves with :func:`public_addresses` and
connects only to an address it returned. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = [
    "TargetBlocked",
    "is_forbidden",
    "check_target",
    "check_literal",
    "public_addresses",
    "GuardedResolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetBlocked(OSError):
    """The endpoint's address is in a range the guard refuses."""


def is_forbidden(address: IPAddress) -> bool:
    """True for loopback, private, link-local, unspecified, multicast and reserved
    addresses, also when written as IPv4-mapped IPv6."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or not address.is_global
    )


def _refuse(host: str, address: str) -> TargetBlocked:
    return TargetBlocked(f"target {host!r} resolves to {address}, a non-public address")


def check_literal(host: str) -> None:
    """Refuse *host* if it is a forbidden IP literal (those bypass resolvers)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if is_forbidden(address):
        raise _refuse(host, str(address))


def check_target(url: str) -> None:
    """Resolve *url*'s host as the system would and refuse any forbidden address.

    Also catches the odd spellings the C resolver accepts (``2130706433``,
    ``0177.0.0.1``).
    """
    host = urlsplit(url).hostname or ""
    check_literal(host)
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise TargetBlocked(f"target host {host!r} does not resolve ({exc.strerror})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if is_forbidden(address):
            raise _refuse(host, str(address))


async def public_addresses(host: str, port: int) -> list[str]:
    """*host*'s addresses for a TCP connection to *port*, in the order the system resolver
    gives them (as aiohttp's threaded resolver asks for them). Raises :class:`TargetBlocked`
    if any is forbidden, and :class:`OSError` (``socket.gaierror``) if *host* does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
    )
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if is_forbidden(ipaddress.ip_address(address)):
            raise _refuse(host, address)
    return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host if any address it resolves to is forbidden."""

    def __init__(self) -> None:
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            if is_forbidden(ipaddress.ip_address(result["host"])):
                raise _refuse(host, result["host"])
        return results

    async def close(self) -> None:
        await self._resolver.close()
