"""``/api/v1/consumers``: consumers, their state and their dead letters."""

from __future__ import annotations

from typing import Any

from flask import Response

from workerrmq.api import consumer_schemas as schemas
from workerrmq.api import no_worker
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.schemas import Error
from workerrmq.api.services import services
from workerrmq.core.status import ConsumerState
from workerrmq.errors import InvalidInput

blp = Blueprint("consumers", __name__, url_prefix="/api/v1/consumers", description="Consumers")


@blp.route("", methods=["GET"])
@blp.arguments(schemas.ConsumerListArgs, location="query")
@blp.response(200, schemas.ConsumerPage)
def list_consumers(args: dict[str, Any]) -> dict[str, Any]:
    """Consumers a page at a time, oldest first, with live statistics summed over all workers."""
    return services().consumers.page(**args)


@blp.route("", methods=["POST"])
@blp.arguments(schemas.ConsumerCreate)
@blp.response(201, no_worker.ConsumerCreated)
@blp.alt_response(404, schema=Error, description="the queue does not exist")
@blp.alt_response(409, schema=Error, description="a consumer of that name exists")
def create_consumer(body: dict[str, Any]) -> dict[str, Any]:
    """Create a consumer: every message of `queue` goes to `target_url`.

    Running workers start it within a second; while none is alive, `warning` says so.
    """
    return no_worker.with_warning(services().consumers.create(body))


@blp.route("/<ref>", methods=["GET"])
@blp.response(200, schemas.Consumer)
def get_consumer(ref: str) -> dict[str, Any]:
    """One consumer (by id or name) with live statistics."""
    return services().consumers.get(ref)


@blp.route("/<ref>", methods=["PATCH"])
@blp.arguments(schemas.ConsumerUpdate)
@blp.response(200, schemas.Consumer)
def update_consumer(body: dict[str, Any], ref: str) -> dict[str, Any]:
    """Change a consumer; running workers apply it within a second."""
    return services().consumers.update(ref, body)


@blp.route("/<ref>", methods=["DELETE"])
@blp.arguments(schemas.ConsumerDeleteArgs, location="query")
@blp.response(204)
@blp.alt_response(400, schema=Error, description="delete_queue for a consumer without a source")
def delete_consumer(args: dict[str, Any], ref: str) -> Response:
    """Delete a consumer; its workers stop it after finishing in-flight deliveries.

    Its queue stays, unless `delete_queue=true` and it is the queue WorkerRMQ declared
    for a consumer with a `source` (`wrmq.<name>`); its dead-letter queue stays.
    """
    services().consumers.delete(ref, delete_queue=args["delete_queue"])
    return Response(status=204)


@blp.route("/<ref>/signing-secret/rotate", methods=["POST"])
@blp.arguments(schemas.SecretRotation)
@blp.response(200, schemas.ConsumerWithSecret)
@blp.alt_response(404, schema=Error, description="no such consumer")
def rotate_signing_secret(body: dict[str, Any], ref: str) -> dict[str, Any]:
    """Sign with a new secret (random, or `secret`), shown in this answer only.

    For `grace_seconds` (default a day) requests also carry the signature of the secret
    it replaces, in the same `webhook-signature` header, so receivers can switch over.
    """
    return services().consumers.rotate_signing_secret(ref, **body)


@blp.route("/<ref>/pause", methods=["POST"])
@blp.response(200, schemas.Consumer)
def pause_consumer(ref: str) -> dict[str, Any]:
    """Stop taking messages; in-flight deliveries finish."""
    return services().consumers.set_state(ref, ConsumerState.PAUSED)


@blp.route("/<ref>/resume", methods=["POST"])
@blp.response(200, schemas.Consumer)
def resume_consumer(ref: str) -> dict[str, Any]:
    """Take messages again."""
    return services().consumers.set_state(ref, ConsumerState.RUNNING)


@blp.route("/<ref>/dead-letters", methods=["GET"])
@blp.arguments(schemas.DeadLetterArgs, location="query")
@blp.response(200, schemas.DeadLetterPage)
def dead_letters(args: dict[str, Any], ref: str) -> dict[str, Any]:
    """Peek at the consumer's dead-lettered messages (they stay in the queue)."""
    return services().consumers.dead_letters(ref, **args)


@blp.route("/<ref>/dead-letters/replay", methods=["POST"])
@blp.arguments(schemas.ReplayRequest)
@blp.response(200, schemas.ReplayResult)
def replay_dead_letters(body: dict[str, Any], ref: str) -> dict[str, int]:
    """Move dead-lettered messages back to the consumer's queue: all, `count` of them, or
    those the selectors pick (each given must hold). The others stay, in their order."""
    return services().consumers.replay(ref, body.get("count"), schemas.selector_of(body))


@blp.route("/<ref>/dead-letters", methods=["DELETE"])
@blp.arguments(schemas.DiscardArgs, location="query")
@blp.arguments(schemas.DiscardRequest, location="json", required=False)
@blp.response(200, schemas.DiscardResult)
@blp.alt_response(400, schema=Error, description="no selector, and not all=true")
def discard_dead_letters(query: dict[str, Any], body: dict[str, Any], ref: str) -> dict[str, int]:
    """Delete the dead letters the selectors pick (in the query or a JSON body); with none,
    every dead letter, only with `all=true`. The others stay, in their order."""
    everything = query.pop("all", False)
    if body:
        if any(query.values()) or everything:
            raise InvalidInput("give the selectors in the query or in the body, not both", field="all")
        everything = body.pop("all", False)
        query = body
    selector = schemas.selector_of(query)
    if selector.everything and not everything:
        raise InvalidInput("no selector: send all=true to discard every dead letter", field="all")
    return services().consumers.discard(ref, selector)
