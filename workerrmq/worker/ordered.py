"""What an ordered consumer keeps about the message at the head of its queue.

An ordered consumer takes one message at a time and retries it in place, so the
messages behind it wait. Three things make that hold up beyond one process:

- **Attempts are counted before they are made.** Before each attempt, the count
  (and, after a failure, the time the next attempt is due) is written to the
  consumer's *attempt ledger*: a durable queue of its own
  (``workerrmq.attempts.<consumer id>``) that keeps only its newest record
  (``x-max-length`` 1). A worker that dies mid-retries leaves the record behind;
  whoever takes the message next reads it and goes on from there, waiting out
  what is left of the wait. So ``max_attempts`` ends a message however often its
  worker is killed, on any queue type and any RabbitMQ version (a quorum queue's
  ``x-delivery-count`` would not do: RabbitMQ 4.3 no longer counts a return by a
  closed channel).
- **No delivery is held for long.** A wait is held in place for at most
  :data:`HOLD_LIMIT`; a longer one releases the message (a requeue puts it back
  at the head of the queue, and with prefetch 1 it comes straight back) and the
  ledger's due time tells the next delivery how much is left. RabbitMQ's
  ``consumer_timeout`` (30 min by default) closes the channel of a consumer that
  holds a delivery longer; the management API does not show its value, so the
  bound is fixed well below the default.
- **One consumer at a time.** An ordered consumer takes its queue with an
  exclusive ``basic.consume``; a second one (another worker taking over) is
  refused until the first has closed its channel, which returns the message it
  held to the head of the queue. A queue declared with
  ``x-single-active-consumer`` refuses exclusive consumers; there the broker's
  single active consumer does the same job, and the consumer subscribes plainly.
  Quorum queues ignore the exclusive flag: on a quorum queue, order across a
  change of worker needs ``x-single-active-consumer``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import aiormq
import orjson
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from workerrmq.broker.republish import RepublishFailed

__all__ = ["HOLD_LIMIT", "AttemptLedger", "Progress", "ledger_name", "message_key", "single_active_queues"]

#: Seconds a delivery is held in place at most; a longer wait releases it and takes it again.
HOLD_LIMIT = 600.0
#: An attempt ledger nobody read for a week is deleted by the broker (``x-expires``).
LEDGER_EXPIRES_MS = 7 * 24 * 3600 * 1000

#: Queues found to refuse an exclusive consumer while nobody consumed them: declared
#: with ``x-single-active-consumer``. Remembered for the life of the process.
single_active_queues: set[str] = set()


def ledger_name(consumer_id: str) -> str:
    return f"workerrmq.attempts.{consumer_id}"


def message_key(message: DeliveredMessage) -> str:
    """What identifies a message across redeliveries: its id, else a digest of its body."""
    message_id = message.header.properties.message_id
    if message_id:
        return f"id:{message_id}"
    return "sha256:" + hashlib.sha256(message.body).hexdigest()


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far one message got: attempts counted (made or under way), when the next is due
    (epoch seconds, 0 for now), and how the last one failed."""

    key: str
    attempts: int = 0
    due: float = 0.0
    status: int | None = None
    error: str = ""

    def wait(self, now: float | None = None) -> float:
        """Seconds until the next attempt may start."""
        return max(0.0, self.due - (time.time() if now is None else now))

    def to_bytes(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Progress | None:
        try:
            fields = orjson.loads(data)
            return cls(
                key=str(fields["key"]),
                attempts=int(fields["attempts"]),
                due=float(fields["due"]),
                status=fields.get("status"),
                error=str(fields.get("error", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # not ours, or from another version: start from the message's headers

    @classmethod
    def resume(cls, recorded: Progress | None, key: str, header_attempts: int) -> Progress:
        """Where a delivery of message *key* starts: the record if it is this message's,
        else the attempts its headers carry (made through delay queues before)."""
        if recorded is not None and recorded.key == key:
            return recorded
        return cls(key=key, attempts=header_attempts)


class AttemptLedger:
    """One ordered consumer's attempt ledger, on a channel with publisher confirms."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, consumer_id: str) -> None:
        self._channel = channel
        self.name = ledger_name(consumer_id)
        self.last: Progress | None = None  # what this runner wrote or read last

    async def declare(self) -> None:
        await self._channel.queue_declare(
            self.name,
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "drop-head", "x-expires": LEDGER_EXPIRES_MS},
        )

    async def read(self) -> Progress | None:
        """The newest record, left in place."""
        message = await self._channel.basic_get(self.name, no_ack=False, timeout=10)
        if not isinstance(message.delivery, Basic.GetOk):
            return None
        tag = message.delivery.delivery_tag
        assert tag is not None  # a GetOk always has one
        await self._channel.basic_nack(tag, requeue=True)
        self.last = Progress.from_bytes(message.body)
        return self.last

    async def write(self, progress: Progress) -> None:
        """Record *progress* once the broker has it on disk; :class:`RepublishFailed` if not."""
        properties = Basic.Properties(delivery_mode=2, content_type="application/json")
        for declared in (False, True):
            try:
                result = await self._channel.basic_publish(
                    progress.to_bytes(),
                    routing_key=self.name,
                    properties=properties,
                    mandatory=True,
                    timeout=10,
                )
            except aiormq.exceptions.DeliveryError:
                result = None  # unroutable: the ledger expired; declare it again
            except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
                raise RepublishFailed(f"attempt ledger: {type(exc).__name__}: {exc}") from None
            if isinstance(result, Basic.Ack):
                self.last = progress
                return
            if not declared:
                await self.declare()
        raise RepublishFailed(f"attempt ledger {self.name!r} did not take the record")
