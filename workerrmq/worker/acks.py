"""Settling one channel's deliveries in as few frames as possible.

Deliveries on a channel finish out of order, because they are delivered
concurrently. The :class:`Settler` collects what was decided for :data:`HOLD`
(2 ms) and then sends the run of finished deliveries at the head of the
outstanding ones as one ``basic.ack`` with ``multiple``: about a dozen
deliveries per frame at a few thousand messages a second, instead of one
frame each. Deliveries that finished behind one still in flight wait one more
:data:`HOLD` for it; after that they are settled one frame each, so a slow
delivery never holds back the acks behind it (nor the prefetch window they
free) for longer than that.

A ``multiple`` ack settles every delivery the broker has outstanding up to its
tag, so the settler must know of every delivery on its channel. Delivery tags
count up by one per channel and arrive in order; a tag that was skipped went
to a consumer tag that was already cancelled, and the AMQP client dropped it
unseen. Such a delivery is requeued (``basic.nack``) rather than acked.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import aiormq.abc

__all__ = ["Settler"]

log = logging.getLogger(__name__)

#: Seconds decisions are collected before they are sent, and that a delivery finished
#: behind one still in flight waits to be covered by a multiple ack. Most deliveries
#: finish within it of each other; a slow one does not.
HOLD = 0.002


class Settler:
    """Acks and requeues the deliveries of one AMQP channel, a few milliseconds at a time."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._channel = channel
        self._outstanding: collections.deque[int] = collections.deque()  # tags, in order
        self._decided: dict[int, bool] = {}  # tag -> ack (True) or requeue (False)
        self._last_seen = 0
        self._sending: asyncio.Task[None] | None = None
        self.frames_sent = 0

    def track(self, tag: int) -> None:
        """Note delivery *tag*; call it first thing for every delivery, in arrival order."""
        if tag > self._last_seen + 1:
            for skipped in range(self._last_seen + 1, tag):
                self._outstanding.append(skipped)
                self._decide(skipped, False)
        self._outstanding.append(tag)
        self._last_seen = max(self._last_seen, tag)

    def ack(self, tag: int) -> None:
        """The delivery is done with (delivered, or republished elsewhere with a confirm)."""
        self._decide(tag, True)

    def requeue(self, tag: int) -> None:
        """Give the delivery back to the queue, untouched."""
        self._decide(tag, False)

    async def flush(self) -> None:
        """Wait until everything decided so far has been handed to the connection."""
        while self._sending is not None:
            await asyncio.shield(self._sending)

    # -- sending ------------------------------------------------------------------------

    def _decide(self, tag: int, ack: bool) -> None:
        self._decided[tag] = ack
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    def _frames(self, *, behind: bool) -> list[tuple[int, bool, bool]]:
        """Take the decisions made so far as frames: (tag, ack, multiple); with *behind*,
        also those behind a delivery still in flight."""
        frames: list[tuple[int, bool, bool]] = []
        outstanding, decided = self._outstanding, self._decided
        head_run = 0
        while outstanding and outstanding[0] in decided:
            tag = outstanding.popleft()
            if decided.pop(tag):
                head_run = tag
                continue
            if head_run:
                frames.append((head_run, True, True))
                head_run = 0
            frames.append((tag, False, False))
        if head_run:
            frames.append((head_run, True, True))
        if behind:
            for tag, ack in decided.items():
                outstanding.remove(tag)
                frames.append((tag, ack, False))
            decided.clear()
        return frames

    async def _send(self) -> None:
        try:
            # Wait a moment first: the decisions of several loop turns make fewer frames.
            await asyncio.sleep(HOLD)
            await self._write(self._frames(behind=False))
            while self._decided:
                # Finished deliveries wait behind one still in flight: give it a moment.
                await asyncio.sleep(HOLD)
                await self._write(self._frames(behind=True))
        except Exception as exc:  # noqa: BLE001 - the channel died: the broker redelivers
            self._decided.clear()
            log.info("acks lost with the channel (%s); the broker will redeliver", type(exc).__name__)
        finally:
            self._sending = None

    async def _write(self, frames: list[tuple[int, bool, bool]]) -> None:
        for tag, ack, multiple in frames:
            if ack:
                await self._channel.basic_ack(tag, multiple=multiple, wait=False)
            else:
                await self._channel.basic_nack(tag, requeue=True, wait=False)
            self.frames_sent += 1
