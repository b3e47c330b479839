"""Publishing: ``POST /api/v1/queues/{name}/messages`` and ``/api/v1/exchanges/{name}/messages``."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from flask import Response

from workerrmq.api import schemas
from workerrmq.api.auth import requires
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.fastlane import fast_lane, plain_publish_request
from workerrmq.api.services import services

blp = Blueprint("messages", __name__, url_prefix="/api/v1", description="Publishing")


def answer(results: list[dict[str, Any]], batch: bool) -> tuple[int, bytes]:
    """A publish's status and JSON body: 201 with the one message's outcome, or 200 with
    a batch's counts and outcomes (what the response schemas document)."""
    if not batch:
        return 201, orjson.dumps(results[0])
    failed = sum(r["status"] != "published" for r in results)
    return 200, orjson.dumps({"published": len(results) - failed, "failed": failed, "results": results})


def _answer(results: list[dict[str, Any]], batch: bool) -> Response:
    # A Response passes flask-smorest's response schema by; it is what the schema documents.
    status, body = answer(results, batch)
    return Response(body, status, mimetype="application/json")


@blp.route("/queues/<name>/messages", methods=["POST"])
@requires("publish")
@fast_lane(functools.partial(plain_publish_request, routed=False))
@blp.arguments(schemas.PublishRequest)
@blp.response(201, schemas.PublishResult, description="published (one message)")
@blp.alt_response(200, schema=schemas.BatchResult, description="a batch, per-message outcome")
@blp.alt_response(404, schema=schemas.Error, description="no such queue")
def publish_to_queue(body: dict[str, Any], name: str) -> Any:
    """Publish to a queue: one message, or a batch as `{"messages": [...]}`.

    The answer comes after the broker's publisher confirm. A message no queue
    takes is 404; a batch reports each message's outcome.
    """
    batch = "messages" in body
    results = services().messages.publish_to_queue(name, body["messages"] if batch else [body])
    return _answer(results, batch)


@blp.route("/exchanges/<name>/messages", methods=["POST"])
@requires("publish")
@fast_lane(functools.partial(plain_publish_request, routed=True))
@blp.arguments(schemas.ExchangePublishRequest)
@blp.response(201, schemas.PublishResult, description="published (one message)")
@blp.alt_response(200, schema=schemas.BatchResult, description="a batch, per-message outcome")
@blp.alt_response(404, schema=schemas.Error, description="no such exchange, or nothing bound")
def publish_to_exchange(body: dict[str, Any], name: str) -> Any:
    """Publish through an exchange (`amq.default` is the default exchange).

    Each message may carry its own `routing_key`. Confirms and outcomes as for queues.
    """
    batch = "messages" in body
    messages = body["messages"] if batch else [body]
    results = services().messages.publish_to_exchange(name, messages, body.get("routing_key", ""))
    return _answer(results, batch)
