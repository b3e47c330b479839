"""The seed's routes, with the seed's shapes: thin adapters over the same services."""

from __future__ import annotations

from typing import Any

from workerrmq.api import consumer_schemas, no_worker, schemas
from workerrmq.api.auth import requires
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.responses import ResponseError, ResponseMessages
from workerrmq.api.services import services
from workerrmq.errors import NotFound

blp = Blueprint("seed", __name__, description="The original routes, kept for existing clients")


@blp.route("/getQueues", methods=["GET"])
@blp.response(200, schemas.SeedQueue(many=True))
def get_queues() -> list[dict[str, Any]]:
    """Every queue as `{"queueName": ...}` (and the fields of `/api/v1/queues`)."""
    return [{"queueName": q["name"], **q} for q in services().queues.list_all()]


@blp.route("/getQueue", methods=["GET"])
@blp.arguments(schemas.SeedQueueName, location="query")
@blp.response(200, schemas.SeedQueue)
def get_queue(args: dict[str, Any]) -> dict[str, Any]:
    """One queue's information."""
    queue = services().queues.get(args["queueName"])
    return {"queueName": queue["name"], **queue}


@blp.route("/createQueue", methods=["POST"])
@blp.arguments(schemas.SeedQueueName)
@blp.response(200, schemas.SeedMessage)
def create_queue(body: dict[str, Any]) -> dict[str, str]:
    """Declare a durable classic queue (idempotent)."""
    services().queues.create(body["queueName"])
    return {"message": ResponseMessages.QUEUE_CREATED}


@blp.route("/deleteQueue", methods=["POST"])
@blp.arguments(schemas.SeedQueueName)
@blp.response(200, schemas.SeedMessage)
def delete_queue(body: dict[str, Any]) -> dict[str, str]:
    """Delete a queue."""
    services().queues.delete(body["queueName"])
    return {"message": ResponseMessages.QUEUE_DELETED}


@blp.route("/messagePublish", methods=["POST"])
@requires("publish")
@blp.arguments(schemas.SeedPublish)
@blp.response(200, schemas.SeedMessage)
def message_publish(body: dict[str, Any]) -> dict[str, str]:
    """Publish one message to a queue, confirmed by the broker."""
    services().messages.publish_to_queue(body["queueName"], [{"body": body["message"]}])
    return {"message": ResponseMessages.MESSAGE_PUBLISHED}


@blp.route("/getConnections", methods=["GET"])
@blp.response(200, schemas.SeedConnection(many=True))
def get_connections() -> list[dict[str, Any]]:
    """Broker connections as `{"connectionId": ...}` (and the fields of `/api/v1/connections`)."""
    return [{"connectionId": c["name"], **c} for c in services().connections.list()]


@blp.route("/createConsumer", methods=["POST"])
@blp.arguments(consumer_schemas.SeedConsumerCreate)
@blp.response(200, no_worker.SeedConsumerCreated)
def create_consumer(body: dict[str, Any]) -> dict[str, str]:
    """Create a consumer on `queueName` sending to DEFAULT_TARGET_URL (or `target_url`).

    Accepts every field of `POST /api/v1/consumers` besides. While no worker is alive,
    `warning` says so.
    """
    values = {**body, "queue": body.pop("queueName")}
    services().consumers.create(values)
    return no_worker.with_warning({"message": ResponseMessages.CONSUMER_CREATED})


@blp.route("/deleteConsumer", methods=["POST"])
@blp.arguments(consumer_schemas.SeedConsumerRef)
@blp.response(200, schemas.SeedMessage)
def delete_consumer(body: dict[str, Any]) -> dict[str, str]:
    """Delete a consumer by `id`, `name`, or the `queueName` it was created with."""
    consumers = services().consumers
    ref = body.get("id") or body.get("name")
    if ref is None:
        ref = consumers.oldest_of(body["queueName"])
        if ref is None:
            raise NotFound(ResponseError.CONSUMER_NOT_FOUND)
    consumers.delete(ref)
    return {"message": ResponseMessages.CONSUMER_DELETED}


@blp.route("/getConsumers", methods=["GET"])
@blp.response(200, consumer_schemas.SeedConsumer(many=True))
def get_consumers() -> list[dict[str, Any]]:
    """Every consumer as `{"queueName": ..., "consumerId": ...}` plus its details."""
    return [{"queueName": c["queue"], "consumerId": c["id"], **c} for c in services().consumers.list()]
