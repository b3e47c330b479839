"""Bearer-key authentication and scope checks for every route.

Each view needs a scope: the one given by :func:`requires`, else ``read`` for
GET and HEAD and ``admin`` for everything else. Views marked :func:`public`
need no key. The check runs before every request, so a new route cannot skip it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

from flask import Flask, current_app, g, request

from workerrmq.errors import Forbidden, TooManyRequests, Unauthorized
from workerrmq.store.keys import scope_allows

__all__ = ["public", "requires", "required_scope", "init_auth"]

F = TypeVar("F", bound=Callable[..., object])
_PUBLIC_BLUEPRINTS = ("api-docs",)


def public(view: F) -> F:
    """Mark *view* as open to requests without a key."""
    view.workerrmq_scope = None  # type: ignore[attr-defined]
    return view


def requires(scope: str) -> Callable[[F], F]:
    """Mark *view* as needing a key of at least *scope*."""

    def mark(view: F) -> F:
        view.workerrmq_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def required_scope(app: Flask, endpoint: str, method: str) -> str | None:
    """The scope *endpoint* needs for *method*, or None if it is public."""
    if endpoint.split(".", 1)[0] in _PUBLIC_BLUEPRINTS or endpoint.rsplit(".", 1)[-1] == "static":
        return None
    view = app.view_functions[endpoint]
    if hasattr(view, "workerrmq_scope"):
        scope: str | None = view.workerrmq_scope  # None marks a public view
        return scope
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "admin"


class FailureLimiter:
    """Counts failed authentications per client; past the limit in a window they get 429.

    Only failures are counted and limited: a request with a valid key is never
    refused, whatever its client (or anyone sharing its address) got wrong before.
    Kept in process memory: each API process counts on its own, so with N processes
    a client gets at most N times the limit.
    """

    def __init__(self, limit: int = 20, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def fail(self, client: str) -> None:
        """Count a failed attempt of *client*; raise TooManyRequests past the limit.

        A refused attempt is not counted, so a client keeps at most ``limit``
        timestamps and may try again once the oldest leaves the window.
        """
        with self._lock:
            now = time.monotonic()
            recent = self._recent(client, now)
            if len(recent) >= self.limit:
                retry_after = int(recent[0] + self.window - now) + 1
                raise TooManyRequests(
                    "too many failed authentications from this client", retry_after=retry_after
                )
            recent.append(now)

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        recent = self._failures.setdefault(client, collections.deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(self._failures) > 10_000:  # forget idle clients; bounds memory
            for other in [c for c, d in self._failures.items() if not d and c != client]:
                del self._failures[other]
        return recent


def _authenticate() -> None:
    g.key = None
    if request.endpoint is None:  # 404 or 405: let routing answer
        return
    scope = required_scope(current_app, request.endpoint, request.method)
    if scope is None:
        return
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token:
        _failed("missing API key: send 'Authorization: Bearer <key>'")
    key = current_app.extensions["workerrmq"].keys.authenticate(token)
    if key is None:
        _failed("unknown or revoked API key")
    g.key = key
    if not scope_allows(key.scope, scope):
        raise Forbidden(f"this needs a key with scope '{scope}'; this key has '{key.scope}'")


def _failed(reason: str) -> NoReturn:
    """Count a failed authentication of this request's client, then refuse it: 401, or
    429 once the client failed too often. The client is the TCP peer, or the address a
    trusted proxy forwarded (see :mod:`workerrmq.api.proxies`)."""
    limiter: FailureLimiter = current_app.extensions["workerrmq.auth_failures"]
    limiter.fail(request.remote_addr or "unknown")
    raise Unauthorized(reason)


def init_auth(app: Flask, *, failure_limit: int = 20, failure_window: float = 60.0) -> None:
    app.extensions["workerrmq.auth_failures"] = FailureLimiter(failure_limit, failure_window)
    app.before_request(_authenticate)
