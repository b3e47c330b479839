"""Plain publish requests served on the API's event loop, without a thread or Flask.

Publishing is the API's hot path. Through Flask, each request is handed from the event
loop to a thread, runs Flask's request and response machinery, and hops back to the
event loop to publish and wait for the broker's confirms. :class:`PublishLane` serves
the common case where it arrives, on the loop, and publishes from that same loop: a
``POST`` to a publish route (``/api/v1/queues/{name}/messages`` or
``/api/v1/exchanges/{name}/messages``, under ``URL_PREFIX`` if set), with a JSON body the
publish fast lane takes (:func:`~workerrmq.api.fastlane.plain_publish_request`) and a key
that has been seen within the key cache's lifetime with the scope to publish.

Anything else goes on to Flask untouched, before anything has been published: a missing,
unknown, revoked or not yet remembered key (so failed attempts are counted and limited in
one place), a body the fast lane leaves to the schema, a bad name or batch size, an
unexpected path or header. What the lane serves is answered as Flask would: the same
status, body and headers, errors in the API's shape through the API's own error handlers,
the same access-log line and request metrics (:mod:`workerrmq.api.access`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from workerrmq.api import access, no_worker
from workerrmq.api.auth import required_scope
from workerrmq.api.errors import handle_domain_error, handle_unexpected
from workerrmq.api.fastlane import plain_publish_request
from workerrmq.api.messages import answer
from workerrmq.errors import WorkerRMQError
from workerrmq.services.container import Services
from workerrmq.store.keys import scope_allows

__all__ = ["PublishLane"]

#: The publish routes' paths (the rule's ``<name>`` takes anything but a slash).
_PATH = re.compile(r"/api/v1/(queues|exchanges)/([^/]+)/messages")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Route:
    """One publish route: its URL rule (for metrics), the scope it needs, whether its
    messages carry routing keys."""

    def __init__(self, app: Flask, endpoint: str, routed: bool) -> None:
        self.rule = next(r.rule for r in app.url_map.iter_rules() if r.endpoint == endpoint)
        self.scope = required_scope(app, endpoint, "POST")
        self.routed = routed


class PublishLane:
    """Serves the plain publish requests of *app* on the event loop (see the module's
    docstring); call :meth:`serve` with each request whose body is read."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.services: Services = app.extensions["workerrmq"]
        self.prefix = self.services.settings.url_prefix.rstrip("/")
        self.routes = {
            "queues": _Route(app, "messages.publish_to_queue", routed=False),
            "exchanges": _Route(app, "messages.publish_to_exchange", routed=True),
        }

    async def serve(self, scope: dict[str, Any], body: bytes, send: Callable[..., Any]) -> bool:
        """Answer the request if it is one this lane takes; False (nothing sent, nothing
        published) to leave it to Flask."""
        started = time.perf_counter()
        if scope["method"] != "POST" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + "/")):
            path = path[len(self.prefix) :] or "/"
        match = _PATH.fullmatch(path)
        if match is None:
            return False
        route = self.routes[match[1]]
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    return False
                content_type = value
            elif name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value
        if content_type is None or content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            return False
        key = self._key(authorization, route.scope)
        if key is None:
            return False
        request = plain_publish_request(body, routed=route.routed)
        if request is None:
            return False
        messages = self.services.messages
        batch = "messages" in request
        try:
            if route.routed:
                prepared = messages.to_exchange(
                    match[2], request["messages"] if batch else [request], request.get("routing_key", "")
                )
            else:
                prepared = messages.to_queue(match[2], request["messages"] if batch else [request])
        except WorkerRMQError:
            return False  # Flask answers it, the same way
        no_worker.PERIODIC_LOG.watch(self.services.workers)
        try:
            status, content = answer(await messages.publish_async(prepared), batch)
            headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(content))]
        except Exception as exc:  # noqa: BLE001 - answered as Flask's error handlers answer it
            status, headers, content = self._error(exc)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        access.record("POST", path, route.rule, status, time.perf_counter() - started, key.name)
        return True

    def _key(self, authorization: bytes | None, needed: str | None) -> Any:
        """The request's key if it is remembered and may publish, else None (Flask decides)."""
        if authorization is None or needed is None:
            return None
        kind, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            return None
        key = self.services.keys.remembered(token)
        if key is None or not scope_allows(key.scope, needed):
            return None
        return key

    def _error(self, exc: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The API's error handlers' answer to *exc*, raised while publishing."""
        with self.app.app_context():
            domain = isinstance(exc, WorkerRMQError)
            response = handle_domain_error(exc) if domain else handle_unexpected(exc)  # type: ignore[arg-type]
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
            return response.status_code, headers, response.get_data()
