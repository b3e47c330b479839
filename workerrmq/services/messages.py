"""Publishing: turn request messages into AMQP messages and report each outcome."""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import orjson

from workerrmq import metrics
from workerrmq.broker.publisher import Outcome, OutgoingMessage, Publisher
from workerrmq.errors import InvalidInput, NotFound
from workerrmq.services.names import check_name

__all__ = ["MessageService", "Prepared", "encode_body"]


def encode_body(message: dict[str, Any], *, field: str = "body") -> tuple[bytes, str]:
    """The bytes to publish and their default content type.

    ``body_base64`` carries raw bytes; a string ``body`` is sent as UTF-8 text;
    any other JSON value is sent as JSON.
    """
    if message.get("body_base64") is not None:
        try:
            return base64.b64decode(message["body_base64"], validate=True), "application/octet-stream"
        except (binascii.Error, ValueError):
            raise InvalidInput("body_base64 is not valid base64", field="body_base64") from None
    body = message.get("body")
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    try:
        return orjson.dumps(body), "application/json"
    except orjson.JSONEncodeError as exc:  # integers beyond 64 bits, nesting deeper than 255
        raise InvalidInput(f"{field} cannot be encoded as JSON: {exc}", field=field) from None


def new_message_ids(n: int) -> list[str]:
    """*n* random message ids (32 hex digits, as ``uuid4().hex``), from one read of the
    system's random source."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def to_outgoing(message: dict[str, Any], routing_key: str, new_id: str) -> OutgoingMessage:
    """*message* as the API received it; it gets *new_id* unless it brought its own."""
    body, content_type = encode_body(message)
    return OutgoingMessage(
        routing_key=routing_key,
        body=body,
        content_type=message.get("content_type") or content_type,
        headers=message.get("headers") or None,
        message_id=message.get("message_id") or new_id,
        correlation_id=message.get("correlation_id"),
        priority=message.get("priority"),
        expiration=message.get("expiration"),
        persistent=message.get("persistent", True),
    )


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A publish checked and encoded, ready to send: nothing has reached the broker yet."""

    exchange: str
    outgoing: list[OutgoingMessage]
    #: What NotFound says when no queue takes any of the messages.
    unroutable: str


class MessageService:
    def __init__(self, publisher: Publisher, *, max_batch: int) -> None:
        self.publisher = publisher
        self.max_batch = max_batch

    def publish_to_queue(self, queue: str, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish to *queue* through the default exchange; NotFound if no queue took any."""
        return self.publish(self.to_queue(queue, messages))

    def publish_to_exchange(
        self, exchange: str, messages: Sequence[dict[str, Any]], default_routing_key: str = ""
    ) -> list[dict[str, Any]]:
        """Publish through *exchange*; NotFound if no queue took any message."""
        return self.publish(self.to_exchange(exchange, messages, default_routing_key))

    def to_queue(self, queue: str, messages: Sequence[dict[str, Any]]) -> Prepared:
        """*messages* for *queue*, through the default exchange (InvalidInput for a bad
        name, a batch too large or a body that cannot be encoded)."""
        check_name(queue)
        ids = self._new_ids(len(messages))
        outgoing = [to_outgoing(m, queue, i) for m, i in zip(messages, ids, strict=True)]
        return Prepared("", outgoing, f"queue {queue!r} not found: the message was not routed to any queue")

    def to_exchange(
        self, exchange: str, messages: Sequence[dict[str, Any]], default_routing_key: str = ""
    ) -> Prepared:
        """*messages* for *exchange*, each to its own routing key or *default_routing_key*."""
        check_name(exchange, field="exchange", kind="exchange")
        name = "" if exchange == "amq.default" else exchange
        ids = self._new_ids(len(messages))
        outgoing = [
            to_outgoing(m, m.get("routing_key") or default_routing_key, i)
            for m, i in zip(messages, ids, strict=True)
        ]
        return Prepared(name, outgoing, f"no queue is bound to {exchange!r} for the given routing key")

    def publish(self, prepared: Prepared) -> list[dict[str, Any]]:
        """Send *prepared* and wait for its confirms (from any thread but the publisher's loop)."""
        return self._results(prepared, self.publisher.publish(prepared.exchange, prepared.outgoing))

    async def publish_async(self, prepared: Prepared) -> list[dict[str, Any]]:
        """:meth:`publish`, awaited on the publisher's loop (see ``Publisher.serve_on``)."""
        outcomes = await self.publisher.publish_async(prepared.exchange, prepared.outgoing)
        return self._results(prepared, outcomes)

    def _new_ids(self, n: int) -> list[str]:
        if n > self.max_batch:
            raise InvalidInput(f"a batch holds at most {self.max_batch} messages, got {n}", field="messages")
        return new_message_ids(n)

    @staticmethod
    def _results(prepared: Prepared, outcomes: list[Outcome]) -> list[dict[str, Any]]:
        """Each message's outcome, counted; NotFound if no queue took any."""
        for outcome, count in collections.Counter(outcomes).items():
            metrics.PUBLISHED.labels(outcome).inc(count)
        if all(outcome == "unroutable" for outcome in outcomes):
            raise NotFound(prepared.unroutable)
        return [
            {"message_id": m.message_id, "status": outcome}
            for m, outcome in zip(prepared.outgoing, outcomes, strict=True)
        ]
