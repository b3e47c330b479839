"""Queue administration over the management API, shaped for WorkerRMQ's clients.

The management API samples a queue's figures every few seconds (5 by default), so a
queue just filled or drained shows the old depth for that long. Where the broker can
be asked over AMQP, the ready count and the consumer count are read live instead
(a passive declare answers both), and ``stats_age_seconds`` says which: 0 when they
were read live, null when they are the management API's sample. Unacknowledged
counts and rates are always the sample. A listing of more than :data:`LIVE_MAX` queues
is the sample throughout: one passive declare per queue is cheap for a page an operator
reads, not for the page of 500 a dashboard polls every few seconds.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from typing import Any

from workerrmq.broker.management import ManagementClient
from workerrmq.errors import BrokerUnavailable, NotFound
from workerrmq.services.names import check_name, check_unreserved

__all__ = ["QueueService", "QUEUE_ARGUMENTS", "LiveCounts"]

log = logging.getLogger(__name__)

#: The most queues one listing reads live; a longer one shows the management API's sample.
LIVE_MAX = 100
#: Ready messages and consumers of each named queue, read live (a queue that cannot be asked left out).
LiveCounts = Callable[[Sequence[str]], dict[str, tuple[int, int]]]

# Our argument names -> RabbitMQ's x-arguments.
QUEUE_ARGUMENTS = {
    "message_ttl": "x-message-ttl",
    "max_length": "x-max-length",
    "max_length_bytes": "x-max-length-bytes",
    "overflow": "x-overflow",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
    "max_priority": "x-max-priority",
}
_ARGUMENT_NAMES = {v: k for k, v in QUEUE_ARGUMENTS.items()}


def _rate(stats: dict[str, Any], key: str) -> float:
    return float(stats.get(f"{key}_details", {}).get("rate", 0.0))


def queue_view(raw: dict[str, Any], live: tuple[int, int] | None = None) -> dict[str, Any]:
    """A management API queue record in WorkerRMQ's shape, with the *live* ready and
    consumer counts over the sampled ones when given."""
    arguments = raw.get("arguments") or {}
    stats = raw.get("message_stats") or {}
    view = {
        "name": raw["name"],
        "type": arguments.get("x-queue-type", raw.get("type", "classic")),
        "durable": bool(raw.get("durable")),
        "state": raw.get("state", "running"),
        "messages": int(raw.get("messages") or 0),
        "messages_ready": int(raw.get("messages_ready") or 0),
        "messages_unacknowledged": int(raw.get("messages_unacknowledged") or 0),
        "consumers": int(raw.get("consumers") or 0),
        "publish_rate": _rate(stats, "publish"),
        "deliver_rate": _rate(stats, "deliver_get"),
        "arguments": {_ARGUMENT_NAMES[k]: v for k, v in arguments.items() if k in _ARGUMENT_NAMES},
        "stats_age_seconds": None,
    }
    if live is not None:
        ready, consumers = live
        view["messages_ready"] = ready
        view["messages"] = ready + view["messages_unacknowledged"]
        view["consumers"] = consumers
        view["stats_age_seconds"] = 0.0
    return view


class QueueService:
    def __init__(
        self, management: ManagementClient, live_counts: LiveCounts | None = None, *, live_max: int = LIVE_MAX
    ) -> None:
        """*live_counts* reads ready and consumer counts live (without it: the samples), for
        listings of at most *live_max* queues."""
        self.management = management
        self.live_counts = live_counts
        self.live_max = live_max

    def _live(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Live counts of *names*; none when the broker cannot be asked (the samples stand)."""
        if self.live_counts is None or not names:
            return {}
        try:
            return self.live_counts(names)
        except BrokerUnavailable as exc:
            log.warning("queue figures from the management API's sample: %s", exc.message)
            return {}

    def list(self, *, name: str | None = None, page: int = 1, page_size: int = 100) -> dict[str, Any]:
        """One page of queues whose name contains *name*."""
        raw = self.management.list_queues(name=name, page=page, page_size=page_size)
        found = raw.get("items", [])
        live = self._live([q["name"] for q in found]) if len(found) <= self.live_max else {}
        return {
            "items": [queue_view(q, live.get(q["name"])) for q in found],
            "page": page,
            "page_size": page_size,
            "total": int(raw.get("filtered_count", raw.get("total_count", 0))),
        }

    def list_all(self) -> builtins.list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self.list(page=page, page_size=500)
            items += batch["items"]
            if len(items) >= batch["total"] or not batch["items"]:
                return items
            page += 1

    def get(self, name: str) -> dict[str, Any]:
        raw = self.management.get_queue(check_name(name))
        return queue_view(raw, self._live([name]).get(name))

    def exists(self, name: str) -> bool:
        try:
            self.management.get_queue(name)
        except NotFound:
            return False
        return True

    def create(
        self,
        name: str,
        *,
        durable: bool = True,
        type: str = "classic",
        arguments: dict[str, Any] | None = None,
        source_queue: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Declare a queue. Returns it and whether it was new; Conflict if it differs. Only
        a *source_queue* (a source consumer's own) may be named ``wrmq.*``."""
        check_name(name)
        if not source_queue:
            check_unreserved(name)
        x_args: dict[str, Any] = {"x-queue-type": type}
        for key, value in (arguments or {}).items():
            if value is not None:
                x_args[QUEUE_ARGUMENTS[key]] = value
        created = self.management.declare_queue(name, durable=durable, arguments=x_args)
        return self.get(name), created

    def delete(self, name: str, *, if_empty: bool = False, if_unused: bool = False) -> None:
        self.management.delete_queue(check_name(name), if_empty=if_empty, if_unused=if_unused)

    def purge(self, name: str) -> None:
        self.management.purge_queue(check_name(name))

    def bindings(self, name: str) -> builtins.list[dict[str, Any]]:
        return [
            {
                "exchange": b["source"],
                "routing_key": b["routing_key"],
                "properties_key": b.get("properties_key", ""),
            }
            for b in self.management.queue_bindings(check_name(name))
            if b.get("source")  # the implicit default-exchange binding cannot be managed
        ]

    def bind(self, name: str, exchange: str, routing_key: str) -> dict[str, Any]:
        check_name(name)
        check_name(exchange, field="exchange", kind="exchange")
        self.management.bind_queue(name, exchange, routing_key)
        return {"exchange": exchange, "routing_key": routing_key}

    def unbind(self, name: str, exchange: str, routing_key: str) -> None:
        for binding in self.bindings(name):
            if binding["exchange"] == exchange and binding["routing_key"] == routing_key:
                self.management.unbind_queue(name, exchange, binding["properties_key"])
                return
        raise NotFound(f"queue {name!r} has no binding to {exchange!r} with key {routing_key!r}")

    def consumers(self, name: str) -> builtins.list[dict[str, Any]]:
        return [
            {
                "consumer_tag": c.get("consumer_tag"),
                "connection": (c.get("channel_details") or {}).get("connection_name"),
                "channel": (c.get("channel_details") or {}).get("name"),
                "peer_host": (c.get("channel_details") or {}).get("peer_host"),
                "ack_required": bool(c.get("ack_required")),
                "prefetch_count": int(c.get("prefetch_count") or 0),
                "active": bool(c.get("active", True)),
            }
            for c in self.management.queue_consumers(check_name(name))
        ]
