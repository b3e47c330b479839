"""``/api/v1/consumers/{id}/attempts`` and ``/api/v1/messages/{message_id}/attempts``: the
attempt log, every delivery attempt the workers made, newest first."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workerrmq.api.blueprint import Blueprint
from workerrmq.api.schemas import Error, Strict
from workerrmq.api.services import services
from workerrmq.errors import NotFound
from workerrmq.store.attempts import OUTCOMES

blp = Blueprint("attempts", __name__, url_prefix="/api/v1", description="The attempt log")

_STATUS = r"^([1-5][0-9][0-9]|delivered|failed|[A-Za-z_]{1,20}|HTTP [1-5][0-9][0-9])$"


class AttemptArgs(Strict):
    status = fields.String(
        validate=validate.Regexp(
            _STATUS, error="use an HTTP status (503), an error kind (timeout), failed or delivered"
        ),
        metadata={
            "description": "an HTTP status (503), an error kind (timeout, connection), failed or delivered"
        },
    )
    since = fields.AwareDateTime(
        format="iso", default_timezone=dt.UTC, metadata={"description": "made at or after (ISO 8601)"}
    )
    until = fields.AwareDateTime(
        format="iso", default_timezone=dt.UTC, metadata={"description": "made before"}
    )
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("must be later than since", "until")


class ConsumerAttemptArgs(AttemptArgs):
    message_id = fields.String(
        validate=validate.Length(min=1, max=255), metadata={"description": "only this message's"}
    )


class AttemptView(Schema):
    message_id = fields.String(required=True)
    consumer_id = fields.String(required=True)
    consumer = fields.String(required=True, metadata={"description": "the consumer's name at the time"})
    attempt = fields.Integer(required=True, metadata={"description": "1 for the first attempt"})
    at = fields.String(required=True, metadata={"description": "when it was made (ISO 8601, UTC)"})
    duration_ms = fields.Float(required=True)
    status = fields.Integer(
        allow_none=True, metadata={"description": "HTTP status; null when no answer came"}
    )
    error = fields.String(
        allow_none=True,
        metadata={"description": "connection, timeout, blocked, client, HTTP 503 ...; null if delivered"},
    )
    outcome = fields.String(required=True, metadata={"description": " | ".join(OUTCOMES)})
    response = fields.String(
        allow_none=True, metadata={"description": "the first 1 KB of the error's answer"}
    )
    worker = fields.String(required=True)


class AttemptPage(Schema):
    items = fields.List(fields.Nested(AttemptView), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)


@blp.route("/consumers/<ref>/attempts", methods=["GET"])
@blp.arguments(ConsumerAttemptArgs, location="query")
@blp.response(200, AttemptPage)
@blp.alt_response(404, schema=Error, description="no such consumer")
def consumer_attempts(args: dict[str, Any], ref: str) -> dict[str, Any]:
    """The delivery attempts of one consumer (by id or name), newest first."""
    return services().attempts.of_consumer(ref, **args)


@blp.route("/messages/<path:message_id>/attempts", methods=["GET"])
@blp.arguments(AttemptArgs, location="query")
@blp.response(200, AttemptPage)
def message_attempts(args: dict[str, Any], message_id: str) -> dict[str, Any]:
    """Every attempt to deliver one message, by any consumer, newest first."""
    if "\x00" in message_id or len(message_id) > 255:
        raise NotFound(f"message {message_id[:80]!r} has no attempts")
    return services().attempts.of_message(message_id, **args)
