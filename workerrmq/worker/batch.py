"""Batches: up to ``max_messages`` messages of a queue in one request to the endpoint.

A consumer with ``batch`` collects the first attempts of its messages and sends them
together once ``max_messages`` arrived, their bodies reached :data:`BATCH_BYTES_MAX`, or
``max_wait_ms`` passed since the first, as
a JSON array or as NDJSON (one item per line). Each item carries the message's id,
its headers (WorkerRMQ's and the broker's own left out), routing key, content type
and body: a body that is JSON is embedded as it is, any other is base64 in
``body_base64`` with ``"base64": true``. The request is signed like any other, over
its exact bytes, with a batch id of its own as ``webhook-id``.

A 2xx acks every message of the batch. Any other outcome sends each message alone
through the usual retry path (a delay queue, its attempt counted, dead-lettered once
they are used up); a retry is then delivered alone, never batched again, so one bad
message cannot fail the others twice.

How much is in flight: ``concurrency`` batch requests at most (a batch ready while
all are busy waits for one), and a prefetch of ``concurrency * max_messages`` (at most
:data:`PREFETCH_MAX`), so that a full batch can fill for every request. Each message
waits, unacked, in its own delivery task for its batch's outcome: a worker that dies
leaves them all to the broker, which delivers them again.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiormq.abc import DeliveredMessage

from workerrmq.core import protocol
from workerrmq.core.consumer import ConsumerSpec, batch_settings
from workerrmq.core.policy import Verdict
from workerrmq.worker.delivery import Attempt, DeliveryResult

__all__ = ["BATCH_BYTES_MAX", "CONTENT_TYPES", "PREFETCH_MAX", "Batcher", "encode", "prefetch"]

#: The broker's largest prefetch (basic.qos takes a 16-bit count).
PREFETCH_MAX = 65_535
#: A batch is sent once its bodies reach this many bytes, whatever ``max_messages`` says: 1,000
#: bodies of 1 MiB made one 1.3 GB request (base64), encoded on the event loop and held, once
#: per request in flight, in memory.
BATCH_BYTES_MAX = 4 << 20
#: The request's Content-Type, by ``encoding``.
CONTENT_TYPES: Mapping[str, str] = {"json-array": "application/json", "ndjson": "application/x-ndjson"}

#: Sends one batch request and says what its outcome means (the runner's accounting).
Send = Callable[[Attempt, int], Awaitable[tuple[DeliveryResult, Verdict]]]


def prefetch(spec: ConsumerSpec) -> int:
    """How many unacked messages a runner of *spec* takes: its concurrency, times its
    batch size when it batches."""
    if not spec.batch:
        return spec.concurrency
    return min(PREFETCH_MAX, spec.concurrency * int(batch_settings(spec.batch)["max_messages"]))


def _header_value(value: Any) -> Any:
    """An AMQP header value JSON does not take, as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _item(attempt: Attempt, *, one_line: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": attempt.message_id,
        "headers": {k: v for k, v in attempt.headers.items() if not protocol.is_internal(k)},
        "routing_key": attempt.routing_key,
        "content_type": attempt.content_type,
    }
    body = attempt.body
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        item["body_base64"] = base64.b64encode(body).decode()
        item["base64"] = True
        return item
    # The body's own bytes, unless a line break in them would split an NDJSON line.
    item["body"] = value if one_line and (b"\n" in body or b"\r" in body) else orjson.Fragment(body)
    return item


def encode(attempts: list[Attempt], encoding: str) -> tuple[bytes, str]:
    """The body of a batch request of *attempts* and its Content-Type."""
    if encoding == "ndjson":
        lines = (orjson.dumps(_item(a, one_line=True), default=_header_value) for a in attempts)
        return b"\n".join(lines) + b"\n", CONTENT_TYPES[encoding]
    items = [_item(a, one_line=False) for a in attempts]
    return orjson.dumps(items, default=_header_value), CONTENT_TYPES["json-array"]


class Batcher:
    """Collects one runner's first attempts into batches and sends each through *send*.

    :meth:`deliver` is called in each message's delivery task and returns once the
    message's batch was sent, with what came of it.
    """

    def __init__(self, spec: ConsumerSpec, *, send: Send) -> None:
        assert spec.batch is not None
        settings = batch_settings(spec.batch)
        self.max_messages = int(settings["max_messages"])
        self.max_wait = float(settings["max_wait_ms"]) / 1000
        self.encoding = str(settings["encoding"])
        self.in_flight = spec.concurrency  # batch requests at most; the runner may change it
        self._send = send
        self._pending: list[Attempt] = []
        self._pending_bytes = 0
        self._outcome: asyncio.Future[tuple[DeliveryResult, Verdict]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = 0
        self._freed: asyncio.Condition | None = None  # made on the loop, at the first send
        self._sending: set[asyncio.Task[None]] = set()

    @staticmethod
    def takes(message: DeliveredMessage) -> bool:
        """True for a message's first attempt; a retry is delivered alone."""
        return protocol.attempts_made(message.header.properties.headers) == 0

    async def deliver(self, message: DeliveredMessage) -> tuple[Attempt, DeliveryResult, Verdict]:
        """Add *message* to the batch being collected and wait for that batch's outcome."""
        attempt = Attempt.of(message)  # once: its id is the item's and, on failure, its retry's
        loop = asyncio.get_running_loop()
        if self._outcome is None:
            self._outcome = loop.create_future()
            self._timer = loop.call_later(self.max_wait, self.flush)
        outcome = self._outcome
        self._pending.append(attempt)
        self._pending_bytes += len(attempt.body)
        if len(self._pending) >= self.max_messages or self._pending_bytes >= BATCH_BYTES_MAX:
            self.flush()
        # Shielded: a stop that gives up on this delivery must not cancel its batch mates'.
        result, verdict = await asyncio.shield(outcome)
        return attempt, result, verdict

    def flush(self) -> None:
        """Send the batch being collected now (at its size or wait limit, or at a stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, outcome = self._pending, self._outcome
        self._pending, self._outcome, self._pending_bytes = [], None, 0
        if not batch or outcome is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_batch(batch, outcome))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_batch(
        self, batch: list[Attempt], outcome: asyncio.Future[tuple[DeliveryResult, Verdict]]
    ) -> None:
        try:
            await self._take_slot()
            try:
                body, content_type = encode(batch, self.encoding)
                request = Attempt(
                    message_id=f"batch_{uuid.uuid4().hex}",
                    number=1,
                    body=body,
                    content_type=content_type,
                    headers={},
                    correlation_id=None,
                    routing_key="",
                    redelivered=any(a.redelivered for a in batch),
                )
                outcome.set_result(await self._send(request, len(batch)))
            finally:
                await self._free_slot()
        except BaseException as exc:  # noqa: BLE001 - every member must hear of it
            if not outcome.done():
                outcome.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _take_slot(self) -> None:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            await self._freed.wait_for(lambda: self._busy < self.in_flight)
            self._busy += 1

    async def _free_slot(self) -> None:
        assert self._freed is not None
        async with self._freed:
            self._busy -= 1
            self._freed.notify()
