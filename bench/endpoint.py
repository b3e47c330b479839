"""The fast local HTTP endpoint every relay delivers to: aiohttp's low-level server on uvloop.

Paths name a bucket: ``/ok/<bucket>`` answers 200, ``/fail/<bucket>`` answers 503,
``/lat/<bucket>`` answers 200 and records publish-to-endpoint latency from the
body, which starts with the publish time (``time.time()``) followed by a space;
``/batch/<bucket>`` answers 200 and counts the items of a batch request (a JSON
array, or NDJSON lines) as messages; ``/reply/<bucket>`` answers 200 with a small
JSON body, for a consumer that publishes answers; ``/auth/<bucket>`` answers 200
only to a request carrying an access token this endpoint issued (``Authorization:
Bearer ...``), else 401 (not counted). ``POST /token/<bucket>`` is an OAuth2 token
endpoint (the client-credentials grant, the client's credentials in HTTP Basic or
in the form: :data:`CLIENT_ID`, :data:`CLIENT_SECRET`), which issues a new token
each time and counts it for the bucket.
Per bucket it counts requests and keeps the arrival time of the first and the
last. ``GET /_stats/<bucket>`` (``?lat=1`` adds the latencies) and
``POST /_reset`` are for bench.run; ``GET /_ping`` says it is up.

    python -m bench.endpoint --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import secrets
import signal
import time
from urllib.parse import parse_qsl

import orjson
import uvloop
from aiohttp import web

#: The OAuth2 client the ``auth`` contender's consumer is given (the token route accepts only it).
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret"
#: What a token is good for, in seconds: longer than any run, so a run fetches one token and
#: then measures the cached-token path.
TOKEN_LIFETIME = 3600


class Bucket:
    __slots__ = ("count", "first", "first_count", "last", "latencies", "published")

    def __init__(self) -> None:
        self.count = 0
        self.first_count = 0  # messages of the first request (a batch's items)
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self.published: list[float] = []


def _items(body: bytes, content_type: str) -> int:
    """How many messages a batch request carries."""
    if content_type == "application/x-ndjson":
        return body.count(b"\n")
    return len(orjson.loads(body))


def _client_of(request: web.BaseRequest, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret of a token request: from HTTP Basic, else from the form."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user, password
    return form.get("client_id", ""), form.get("client_secret", "")


class Endpoint:
    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        self.tokens: dict[str, int] = {}  # token requests answered, per bucket
        self.issued: set[str] = set()
        self.ok = web.Response(status=200)

    def token(self, request: web.BaseRequest, name: str, body: bytes) -> web.Response:
        """The client-credentials grant: a new bearer token for the bench's client."""
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if _client_of(request, form) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.issued.add(token)
        self.tokens[name] = self.tokens.get(name, 0) + 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # The whole body, however large: request.read() refuses one over 1 MiB with a 413,
        # and a batch of 100 messages of 16 KB is 1.6 MB (each refused batch then went
        # message by message through the retry delay, a figure about the endpoint, not the relay).
        body = await request.content.read()
        now = time.time()
        path = request.path
        if path.startswith("/_"):
            return self.control(request, path)
        _, kind, name = path.split("/", 2)
        if kind == "token":
            return self.token(request, name, body)
        if kind == "auth":
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in self.issued:
                return web.Response(status=401, text="no valid access token")
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = Bucket()
            bucket.first = now
        bucket.count += _items(body, request.content_type) if kind == "batch" else 1
        bucket.first_count = bucket.first_count or bucket.count
        bucket.last = now
        if kind == "lat":
            published = float(body[: body.index(b" ")])
            bucket.published.append(published)
            bucket.latencies.append(now - published)
        elif kind == "fail":
            return web.Response(status=503, text="failing on purpose")
        elif kind == "reply":
            return web.Response(status=200, body=b'{"ok": true}', content_type="application/json")
        return web.Response(status=200)

    def control(self, request: web.BaseRequest, path: str) -> web.Response:
        if path == "/_ping":
            return web.Response(text="pong")
        if path == "/_reset":
            self.buckets.clear()
            self.tokens.clear()
            self.issued.clear()
            return web.Response(text="reset")
        if path.startswith("/_stats/"):
            name = path[len("/_stats/") :]
            bucket = self.buckets.get(name) or Bucket()
            stats: dict[str, object] = {
                "count": bucket.count,
                "first": bucket.first,
                "first_count": bucket.first_count,
                "last": bucket.last,
                "tokens": self.tokens.get(name, 0),
            }
            if request.query.get("lat"):
                stats["latencies"] = bucket.latencies
                stats["published"] = bucket.published
            return web.Response(body=orjson.dumps(stats), content_type="application/json")
        return web.Response(status=404)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    endpoint = Endpoint()
    server = web.Server(endpoint.handle, access_log=None)
    listener = await loop.create_server(server, host, port, backlog=1024)
    try:
        await stop.wait()
    finally:
        listener.close()
        with contextlib.suppress(Exception):
            await server.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
