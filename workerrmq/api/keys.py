"""``/api/v1/keys``: API keys (admin only)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from workerrmq.api import schemas
from workerrmq.api.auth import requires
from workerrmq.api.blueprint import Blueprint
from workerrmq.api.services import services
from workerrmq.errors import NotFound

blp = Blueprint("keys", __name__, url_prefix="/api/v1/keys", description="API keys")
log = logging.getLogger("workerrmq.api")


@blp.route("", methods=["GET"])
@requires("admin")
@blp.response(200, schemas.Key(many=True))
def list_keys() -> list[Any]:
    """Every key, revoked ones included; never a token."""
    return [dataclasses.asdict(k) for k in services().keys.list()]


@blp.route("", methods=["POST"])
@blp.arguments(schemas.KeyCreate)
@blp.response(201, schemas.NewKey)
def create_key(body: dict[str, Any]) -> dict[str, Any]:
    """Create a key. The answer holds its token, which is not shown again."""
    info, token = services().keys.create(body["name"], body["scope"])
    log.info("key created: name=%s scope=%s", info.name, info.scope)
    return {**dataclasses.asdict(info), "key": token}


@blp.route("/<int:key_id>", methods=["DELETE"])
@blp.response(200, schemas.Key)
def revoke_key(key_id: int) -> dict[str, Any]:
    """Revoke a key; it stops working at once here, within 2 s in other API processes."""
    if key_id >= 2**63:  # beyond the database's integers: no such key (not a 500)
        raise NotFound(f"no key with id {key_id}")
    info = services().keys.revoke(key_id)
    log.info("key revoked: name=%s", info.name)
    return dataclasses.asdict(info)
