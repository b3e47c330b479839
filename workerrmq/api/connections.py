"""``/api/v1/connections``: the broker's client connections in WorkerRMQ's virtual host."""

from __future__ import annotations

from typing import Any

from flask import Response

from workerrmq.api import schemas
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.services import services

blp = Blueprint("connections", __name__, url_prefix="/api/v1/connections", description="Connections")


@blp.route("", methods=["GET"])
@blp.response(200, schemas.Connection(many=True))
def list_connections() -> list[dict[str, Any]]:
    """Client connections to the broker, with peer, user, channels and state."""
    return services().connections.list()


@blp.route("/<path:name>", methods=["DELETE"])
@blp.arguments(schemas.ConnectionCloseArgs, location="query")
@blp.response(204)
def close_connection(args: dict[str, Any], name: str) -> Response:
    """Close a client connection, telling the client ``reason``."""
    services().connections.close(name, args["reason"])
    return Response(status=204)
