"""Exchange administration over the management API, shaped for WorkerRMQ's clients."""

from __future__ import annotations

from typing import Any

from workerrmq.broker.management import ManagementClient
from workerrmq.errors import InvalidInput
from workerrmq.services.names import check_name

__all__ = ["EXCHANGE_TYPES", "RESERVED_PREFIXES", "ExchangeService", "exchange_view"]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
#: ``amq.`` is RabbitMQ's; ``workerrmq.`` holds WorkerRMQ's own control exchange.
RESERVED_PREFIXES = ("amq.", "workerrmq.")


def exchange_view(raw: dict[str, Any]) -> dict[str, Any]:
    """A management API exchange record in WorkerRMQ's shape."""
    return {
        "name": raw["name"],
        "type": raw.get("type", "direct"),
        "durable": bool(raw.get("durable")),
        "auto_delete": bool(raw.get("auto_delete")),
        "internal": bool(raw.get("internal")),
    }


def _own(name: str) -> str:
    """*name* if the API may declare or delete an exchange of that name."""
    check_name(name, kind="exchange")
    if name.startswith(RESERVED_PREFIXES):
        raise InvalidInput(
            f"name must not start with {' or '.join(map(repr, RESERVED_PREFIXES))} "
            "(reserved by RabbitMQ and WorkerRMQ)",
            field="name",
        )
    return name


class ExchangeService:
    def __init__(self, management: ManagementClient) -> None:
        self.management = management

    def list(self) -> list[dict[str, Any]]:
        """The vhost's exchanges, without the default one and RabbitMQ's ``amq.*``."""
        return sorted(
            (
                exchange_view(e)
                for e in self.management.list_exchanges()
                if e.get("name") and not e["name"].startswith("amq.")
            ),
            key=lambda e: e["name"],
        )

    def get(self, name: str) -> dict[str, Any]:
        return exchange_view(self.management.get_exchange(check_name(name, kind="exchange")))

    def create(self, name: str, *, type: str = "direct", durable: bool = True) -> tuple[dict[str, Any], bool]:
        """Declare an exchange. Returns it and whether it was new; Conflict if it differs."""
        created = self.management.declare_exchange(_own(name), type=type, durable=durable)
        return self.get(name), created

    def delete(self, name: str, *, if_unused: bool = False) -> None:
        self.management.delete_exchange(_own(name), if_unused=if_unused)
