"""``/api/v1/managed``: the queues and exchanges ``workerrmq apply`` declared.

``apply --prune`` deletes only objects recorded here (see :mod:`workerrmq.store.managed`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response
from marshmallow import Schema, fields

from workerrmq.api.blueprint import Blueprint
from workerrmq.api.services import services
from workerrmq.services.names import check_name
from workerrmq.store.managed import MANAGED_KINDS, ManagedStore

blp = Blueprint(
    "managed",
    __name__,
    url_prefix="/api/v1/managed",
    description="Queues and exchanges declared by 'workerrmq apply'",
)


class Managed(Schema):
    kind = fields.String(required=True, metadata={"enum": list(MANAGED_KINDS)})
    name = fields.String(required=True)
    declared_at = fields.DateTime()


def _store() -> ManagedStore:
    return ManagedStore(services().db)


def _record(kind: str, name: str) -> dict[str, Any]:
    if kind == "queue":
        services().management.get_queue(check_name(name))
    else:
        services().management.get_exchange(check_name(name, kind="exchange"))
    return dataclasses.asdict(_store().record(kind, name))


@blp.route("", methods=["GET"])
@blp.response(200, Managed(many=True))
def list_managed() -> list[dict[str, Any]]:
    """Every queue and exchange recorded as managed (whether or not it still exists)."""
    return [dataclasses.asdict(m) for m in _store().list()]


@blp.route("/queues/<name>", methods=["PUT"])
@blp.response(200, Managed)
def record_queue(name: str) -> dict[str, Any]:
    """Record an existing queue as managed (404 if it does not exist)."""
    return _record("queue", name)


@blp.route("/exchanges/<name>", methods=["PUT"])
@blp.response(200, Managed)
def record_exchange(name: str) -> dict[str, Any]:
    """Record an existing exchange as managed (404 if it does not exist)."""
    return _record("exchange", name)


@blp.route("/queues/<name>", methods=["DELETE"])
@blp.response(204)
def forget_queue(name: str) -> Response:
    """Stop managing the queue; the queue itself stays."""
    _store().forget("queue", name)
    return Response(status=204)


@blp.route("/exchanges/<name>", methods=["DELETE"])
@blp.response(204)
def forget_exchange(name: str) -> Response:
    """Stop managing the exchange; the exchange itself stays."""
    _store().forget("exchange", name)
    return Response(status=204)
