"""``/api/v1/queues``: queues, their bindings and consumers."""

from __future__ import annotations

from typing import Any

from flask import Response

from workerrmq.api import schemas
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.services import services

blp = Blueprint("queues", __name__, url_prefix="/api/v1/queues", description="Queues")


@blp.route("", methods=["GET"])
@blp.arguments(schemas.QueueListArgs, location="query")
@blp.response(200, schemas.QueuePage)
def list_queues(args: dict[str, Any]) -> dict[str, Any]:
    """List queues, filtered by a name substring, a page at a time."""
    return services().queues.list(**args)


@blp.route("", methods=["POST"])
@blp.arguments(schemas.QueueCreate)
@blp.response(201, schemas.Queue)
@blp.alt_response(200, schema=schemas.Queue, description="an identical queue existed")
@blp.alt_response(409, schema=schemas.Error, description="the queue exists with other settings")
def create_queue(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Declare a queue; idempotent when an identical queue exists."""
    queue, created = services().queues.create(**body)
    return queue, 201 if created else 200


@blp.route("/<name>", methods=["GET"])
@blp.response(200, schemas.Queue)
def get_queue(name: str) -> dict[str, Any]:
    """One queue with its message counts, consumers and rates."""
    return services().queues.get(name)


@blp.route("/<name>", methods=["DELETE"])
@blp.arguments(schemas.QueueDeleteArgs, location="query")
@blp.response(204)
@blp.alt_response(409, schema=schemas.Error, description="not empty or not unused")
def delete_queue(args: dict[str, Any], name: str) -> Response:
    """Delete a queue, optionally only when it is empty or unused."""
    services().queues.delete(name, **args)
    return Response(status=204)


@blp.route("/<name>/purge", methods=["POST"])
@blp.response(204)
def purge_queue(name: str) -> Response:
    """Drop every ready message of a queue."""
    services().queues.purge(name)
    return Response(status=204)


@blp.route("/<name>/bindings", methods=["GET"])
@blp.response(200, schemas.BindingView(many=True))
def list_bindings(name: str) -> list[dict[str, Any]]:
    """The queue's bindings to exchanges (the default exchange's implicit one left out)."""
    return services().queues.bindings(name)


@blp.route("/<name>/bindings", methods=["POST"])
@blp.arguments(schemas.Binding)
@blp.response(201, schemas.Binding)
def create_binding(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Bind the queue to an exchange with a routing key."""
    return services().queues.bind(name, body["exchange"], body["routing_key"])


@blp.route("/<name>/bindings", methods=["DELETE"])
@blp.arguments(schemas.Binding, location="query")
@blp.response(204)
def delete_binding(args: dict[str, Any], name: str) -> Response:
    """Remove the binding given by ``exchange`` and ``routing_key`` query arguments."""
    services().queues.unbind(name, args["exchange"], args["routing_key"])
    return Response(status=204)


@blp.route("/<name>/consumers", methods=["GET"])
@blp.response(200, schemas.BrokerConsumer(many=True))
def list_consumers(name: str) -> list[dict[str, Any]]:
    """The broker's consumers on this queue, whichever client they belong to."""
    return services().queues.consumers(name)
