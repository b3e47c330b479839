"""``/api/v1/exchanges``: declare, list and delete exchanges.

Publishing through an exchange is ``POST /api/v1/exchanges/{name}/messages``
(:mod:`workerrmq.api.messages`).
"""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import Schema, fields, validate

from workerrmq.api.blueprint import Blueprint
from workerrmq.api.schemas import Error, JsonBody, Name, Strict, StrictBoolean
from workerrmq.api.services import services
from workerrmq.services.exchanges import EXCHANGE_TYPES, ExchangeService

blp = Blueprint("exchanges", __name__, url_prefix="/api/v1/exchanges", description="Exchanges")


class ExchangeCreate(JsonBody):
    allow_nul = False
    name = Name(required=True)
    type = fields.String(load_default="direct", validate=validate.OneOf(EXCHANGE_TYPES))
    durable = StrictBoolean(load_default=True)


class Exchange(Schema):
    name = fields.String(required=True)
    type = fields.String()
    durable = fields.Boolean()
    auto_delete = fields.Boolean()
    internal = fields.Boolean()


class ExchangeDeleteArgs(Strict):
    if_unused = fields.Boolean(
        load_default=False, metadata={"description": "only if no queue or exchange is bound to it (else 409)"}
    )


def _exchanges() -> ExchangeService:
    return ExchangeService(services().management)


@blp.route("", methods=["GET"])
@blp.response(200, Exchange(many=True))
def list_exchanges() -> list[dict[str, Any]]:
    """Exchanges of the virtual host, without the default exchange and ``amq.*``."""
    return _exchanges().list()


@blp.route("", methods=["POST"])
@blp.arguments(ExchangeCreate)
@blp.response(201, Exchange)
@blp.alt_response(200, schema=Exchange, description="an identical exchange existed")
@blp.alt_response(409, schema=Error, description="the exchange exists with other settings")
def create_exchange(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Declare an exchange; idempotent when an identical one exists. Names starting with
    ``amq.`` or ``workerrmq.`` are reserved."""
    exchange, created = _exchanges().create(**body)
    return exchange, 201 if created else 200


@blp.route("/<name>", methods=["GET"])
@blp.response(200, Exchange)
def get_exchange(name: str) -> dict[str, Any]:
    """One exchange."""
    return _exchanges().get(name)


@blp.route("/<name>", methods=["DELETE"])
@blp.arguments(ExchangeDeleteArgs, location="query")
@blp.response(204)
@blp.alt_response(409, schema=Error, description="something is bound to it")
def delete_exchange(args: dict[str, Any], name: str) -> Response:
    """Delete an exchange and its bindings, optionally only when unused."""
    _exchanges().delete(name, **args)
    return Response(status=204)
