"""The client's address behind reverse proxies: ``X-Forwarded-*`` only from trusted ones.

Failed sign-ins are limited per client address. Behind a reverse proxy the TCP
peer is the proxy, so every client would share one count; trusting
``X-Forwarded-For`` from anyone would let a client pick a fresh address for
each attempt. :class:`TrustedProxies` believes the headers only when the peer
is in ``TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TrustedProxies"]


class TrustedProxies:
    """WSGI middleware: werkzeug's :class:`ProxyFix`, applied only when the TCP peer is
    one of *trusted*.

    ProxyFix trusts a fixed number of hops from whoever connects. Here the count is
    worked out per request: the peer's own entry (the last of ``X-Forwarded-For``),
    plus one for each entry before it that is itself a trusted proxy. The first
    address from the right that no trusted proxy vouches for becomes
    ``REMOTE_ADDR``; entries left of it, which the client could have written, are
    ignored. From any other peer the request is passed on untouched, so its
    ``X-Forwarded-*`` headers change nothing.
    """

    def __init__(
        self, app: WSGIApplication, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        self._fixes: dict[int, ProxyFix] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if not self.trusted or not self.is_trusted(environ.get("REMOTE_ADDR", "")):
            return self.app(environ, start_response)
        return self._fix(self._hops(environ.get("HTTP_X_FORWARDED_FOR", "")))(environ, start_response)

    def is_trusted(self, address: str) -> bool:
        """Whether *address* (an IP address as text) is a trusted proxy."""
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted)

    def _hops(self, forwarded_for: str) -> int:
        entries = [e.strip() for e in forwarded_for.split(",")]
        hops = 1
        while hops < len(entries) and self.is_trusted(entries[-hops]):
            hops += 1
        return hops

    def _fix(self, hops: int) -> ProxyFix:
        fix = self._fixes.get(hops)
        if fix is None:
            fix = ProxyFix(self.app, x_for=hops, x_proto=1, x_host=1, x_port=1)
            if hops <= 16:  # a long chain is rare; do not keep one per length
                self._fixes[hops] = fix
        return fix
