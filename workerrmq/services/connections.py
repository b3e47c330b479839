"""Broker connections, as the management API reports them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from workerrmq.broker.management import ManagementClient

__all__ = ["ConnectionService"]

_CLIENT_PROPERTIES = ("connection_name", "product", "version", "platform")


def connection_view(raw: dict[str, Any]) -> dict[str, Any]:
    props = raw.get("client_properties") or {}
    since = raw.get("connected_at")
    return {
        "name": raw["name"],
        "client_properties": {k: props[k] for k in _CLIENT_PROPERTIES if k in props},
        "peer_host": raw.get("peer_host"),
        "peer_port": raw.get("peer_port"),
        "user": raw.get("user"),
        "vhost": raw.get("vhost"),
        "channels": int(raw.get("channels") or 0),
        "state": raw.get("state", "running"),
        "connected_at": (dt.datetime.fromtimestamp(since / 1000, dt.UTC).isoformat() if since else None),
    }


class ConnectionService:
    def __init__(self, management: ManagementClient) -> None:
        self.management = management

    def list(self) -> list[dict[str, Any]]:
        return [connection_view(c) for c in self.management.list_connections()]

    def close(self, name: str, reason: str) -> None:
        self.management.get_connection(name)
        self.management.close_connection(name, reason)
