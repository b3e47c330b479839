"""``/api/v1/workers``: the worker processes, alive or lost, and what they run."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from workerrmq.api.blueprint import Blueprint
from workerrmq.api.schemas import Strict
from workerrmq.api.services import services

blp = Blueprint("workers", __name__, url_prefix="/api/v1/workers", description="Workers")


class WorkerConsumer(Schema):
    consumer_id = fields.String()
    status = fields.String()
    in_flight = fields.Integer()


class Worker(Schema):
    id = fields.String(required=True)
    host = fields.String()
    pid = fields.Integer()
    version = fields.String()
    started_at = fields.String()
    last_heartbeat = fields.String()
    state = fields.String(metadata={"enum": ["alive", "lost", "stopped"]})
    consumers = fields.List(fields.Nested(WorkerConsumer))


class WorkerListArgs(Strict):
    include_stopped = fields.Boolean(load_default=False)


@blp.route("", methods=["GET"])
@blp.arguments(WorkerListArgs, location="query")
@blp.response(200, Worker(many=True))
def list_workers(args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every worker that registered: `alive` (heartbeat within 30 s), `lost`, or
    `stopped` (only with `include_stopped`), with the consumers an alive one runs."""
    return services().workers.list(include_stopped=args["include_stopped"])
