"""A ``source`` consumer's own queue: declared, bound to its exchange, rebound when the
source changes, and deleted only when asked.

Fan-out in RabbitMQ is one queue per subscriber, each bound to the exchange: every
consumer of one exchange then gets its own copy of every message its bindings match.
The queue is ``wrmq.<consumer name>`` (:func:`workerrmq.core.consumer.source_queue_for`),
a durable quorum queue; it belongs to the consumer, so its bindings are exactly those of
the source (a binding added to it by hand is removed at the next change).

Deleting the queue with its consumer (``?delete_queue=true``) first waits, a bounded
time, until no one consumes from it: the workers, told of the delete, cancel their
consumers at once and let the deliveries in flight finish on their own. A delivery
whose queue is deleted under it still ends as it would have: its ack is a no-op (the
broker forgets the deleted queue's unacked messages), a failure on the last attempt
goes to the dead-letter queue (which is kept), and a retry goes to its delay queue.
Without the wait, the broker's own cancel of a deleted queue's consumer could reach
the worker first, which then stops the runner at once, cutting its requests in flight
short with no outcome recorded. What the delete discards is the queue's messages: those
ready in it, and its retries waiting in a delay queue, which come back to a queue that
no longer exists and are dropped by the broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workerrmq.broker.management import ManagementClient
from workerrmq.core.consumer import source_queue_for
from workerrmq.errors import InvalidInput, NotFound
from workerrmq.services.names import check_name
from workerrmq.services.queues import QueueService

__all__ = ["DRAIN_WAIT", "SourceQueues", "bindings_of"]

log = logging.getLogger(__name__)

#: Seconds a delete of a source consumer's queue waits for its consumers to leave.
DRAIN_WAIT = 10.0
#: Each queue's (ready messages, consumers) as the broker holds them now; absent when gone.
QueueCounts = Callable[[Sequence[str]], dict[str, tuple[int, int]]]

#: A binding as the broker lists it: exchange, routing key and arguments (as sorted JSON).
Binding = tuple[str, str, str]


def bindings_of(source: Mapping[str, Any]) -> dict[Binding, dict[str, Any]]:
    """The bindings *source* asks for, each with the arguments it is made with."""
    exchange = source["exchange"]
    if "headers" in source:
        arguments = {"x-match": source.get("match", "all"), **source["headers"]}
        return {(exchange, "", _key(arguments)): arguments}
    return {(exchange, key, _key({})): {} for key in source["binding_keys"]}


#: Exchanges no source may name: WorkerRMQ's (``workerrmq.delay.*``, ``workerrmq.control``) and
#: RabbitMQ's internal ones (``amq.rabbitmq.trace``, ``amq.rabbitmq.log``, ``amq.rabbitmq.event``).
_INTERNAL_EXCHANGES = ("workerrmq.", "amq.rabbitmq.")


def _key(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True)


class SourceQueues:
    """Declares and binds the queues of ``source`` consumers, over the management API."""

    def __init__(
        self,
        management: ManagementClient,
        queues: QueueService,
        counts: QueueCounts,
        *,
        drain_wait: float = DRAIN_WAIT,
    ) -> None:
        self.management = management
        self.queues = queues
        self.counts = counts
        self.drain_wait = drain_wait

    @staticmethod
    def queue_for(name: str) -> str:
        """The queue of the source consumer *name*, or a 400 naming ``name`` when that is
        no legal queue name (the consumer's name must be one, after ``wrmq.``)."""
        queue = source_queue_for(name)
        try:
            return check_name(queue, field="name")
        except InvalidInput as exc:
            raise InvalidInput(
                f"{exc.message}; a consumer with a source is named like a queue, as its queue "
                f"is {queue[:80]!r}",
                field="name",
            ) from None

    def check(self, source: Mapping[str, Any]) -> None:
        """The exchange exists (else 404 naming it) and takes this kind of binding (else 400).
        WorkerRMQ's own exchanges (its delay tiers carry every consumer's retries) and
        RabbitMQ's internal ones (the firehose) are no source (400)."""
        if source["exchange"].startswith(_INTERNAL_EXCHANGES):
            raise InvalidInput(
                f"source: {source['exchange']!r} is an internal exchange (of WorkerRMQ's retries "
                "and control, or of RabbitMQ itself); a source names an exchange of your messages",
                field="source",
            )
        if source["exchange"] == "amq.default":
            # RabbitMQ refuses any binding to it (403), which read as refused credentials.
            raise InvalidInput(
                "source: the default exchange (amq.default) takes no bindings: it routes to the "
                "queue its routing key names; give another exchange",
                field="source",
            )
        exchange = self.management.get_exchange(source["exchange"])
        headers_exchange = exchange.get("type") == "headers"
        if headers_exchange and "headers" not in source:
            raise InvalidInput(
                f"source: {source['exchange']!r} is a headers exchange; give match and headers "
                "instead of binding_keys",
                field="source",
            )
        if not headers_exchange and "headers" in source:
            raise InvalidInput(
                f"source: {source['exchange']!r} is a {exchange.get('type')} exchange, which "
                "routes by key; give binding_keys instead of headers",
                field="source",
            )

    def declare(self, queue: str, source: Mapping[str, Any]) -> None:
        """Declare *queue* (durable, quorum) and bind it as *source* says, removing the
        bindings it no longer asks for."""
        self.check(source)
        self.queues.create(queue, durable=True, type="quorum", source_queue=True)
        wanted = bindings_of(source)
        for found in self.management.queue_bindings(queue):
            if not found.get("source"):
                continue  # the default exchange's implicit binding
            binding = (found["source"], found["routing_key"], _key(found.get("arguments") or {}))
            if wanted.pop(binding, None) is None:
                self.management.unbind_queue(queue, found["source"], found["properties_key"])
        for (exchange, routing_key, _), arguments in wanted.items():
            self.management.bind_queue(queue, exchange, routing_key, arguments)

    def delete(self, queue: str) -> None:
        """Delete *queue* with its messages once no one consumes from it (at most
        :attr:`drain_wait` s: then anyway, with a warning); one already gone is no error."""
        deadline = time.monotonic() + self.drain_wait
        while (consumers := self.counts([queue]).get(queue, (0, 0))[1]) > 0:
            if time.monotonic() >= deadline:
                log.warning(
                    "deleting queue %r with %d consumer(s) still on it after %.0f s: their "
                    "deliveries in flight may end without an outcome",
                    queue,
                    consumers,
                    self.drain_wait,
                )
                break
            time.sleep(0.05)
        with contextlib.suppress(NotFound):
            self.management.delete_queue(queue, if_empty=False, if_unused=False)
