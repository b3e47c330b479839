"""Bearer-key authentication and scope checks for every route.

Each view needs a scope: the one given by :func:`requires`, else ``read`` for
GET and HEAD and ``admin`` for everything else. Views marked :func:`public`
need no key. The check runs before every request, so a new route cannot skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, g, request

from workerrmq.errors import Forbidden, Unauthorized
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
    if endpoint.split(".", 1)[0] in _PUBLIC_BLUEPRINTS or endpoint == "static":
        return None
    view = app.view_functions[endpoint]
    if hasattr(view, "workerrmq_scope"):
        return view.workerrmq_scope  # type: ignore[no-any-return]
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "admin"


def _authenticate() -> None:
    g.key = None
    if request.endpoint is None:  # 404 or 405: let routing answer
        return
    scope = required_scope(current_app, request.endpoint, request.method)
    if scope is None:
        return
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    services = current_app.extensions["workerrmq"]
    key = services.keys.authenticate(token.strip())
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    g.key = key
    if not scope_allows(key.scope, scope):
        raise Forbidden(f"this needs a key with scope '{scope}'; this key has '{key.scope}'")


def init_auth(app: Flask) -> None:
    app.before_request(_authenticate)
