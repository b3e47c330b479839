"""The statistics history's sampler, run by every worker (:mod:`workerrmq.store.history`).

Moments are aligned to the wall clock (every :attr:`HistorySampler.step` seconds). Each
worker offers to take each one a little after it, at an offset of its own (from its id),
and first looks whether another worker took it: so one worker usually asks the
management API, and if two take the same moment, the database keeps one. Any worker can
stop or start: the next alive one takes the next moment. The API never samples: with
several API processes each would keep a different history, and none would while nobody
has the page open.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import zlib
from collections.abc import Callable
from typing import Any

from workerrmq.broker.management import ManagementClient
from workerrmq.errors import WorkerRMQError
from workerrmq.store.history import HistoryStore, Sample

__all__ = ["NAMES_PER_ASK", "QUEUES_SAMPLED", "HistorySampler"]

log = logging.getLogger(__name__)

#: Queues kept per moment: the consumers' queues first, then others in name order.
QUEUES_SAMPLED = 500
#: Queue names asked for in one request (a regular expression of them): keeps the
#: request line of the management API well under its limit.
NAMES_PER_ASK = 40
#: What a sample keeps of each queue. Asking for these alone makes the answer about a
#: tenth the size of the full queue objects (measured: 220 against 2,950 bytes for 2
#: queues), which the sampling worker would otherwise decode every step.
_COLUMNS = (
    "name",
    "messages_ready",
    "message_stats.publish_details.rate",
    "message_stats.deliver_get_details.rate",
)


def _rate(stats: dict[str, Any], key: str) -> float:
    return round(float((stats.get(f"{key}_details") or {}).get("rate", 0.0)), 3)


class HistorySampler:
    """Takes the moments of the history this worker gets to first."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        worker_id: str,
        management: ManagementClient | None,
        step: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if step <= 0:
            raise ValueError("step must be positive")
        self.store = store
        self.worker_id = worker_id
        self.management = management
        self.step = step
        self.clock = clock
        # Up to half a step after the moment, the same for this worker each time.
        self.offset = (zlib.crc32(worker_id.encode()) % 1000) / 1000 * step / 2
        self.taken = 0  # moments this worker stored

    async def run(self) -> None:
        """Sample until cancelled; a database or management API down skips moments."""
        while True:
            now = self.clock()
            due = (now // self.step + 1) * self.step + self.offset
            await asyncio.sleep(max(0.0, due - now))
            try:
                await asyncio.to_thread(self.sample)
            except WorkerRMQError as exc:
                log.debug("statistics history: no sample (%s)", exc.message)
            except Exception:  # noqa: BLE001 - the history is not worth stopping the worker for
                log.exception("statistics history: no sample")

    def sample(self) -> bool:
        """Take the current moment unless another worker has; True if this one stored it."""
        now = self.clock()
        at = dt.datetime.fromtimestamp(now // self.step * self.step, dt.UTC)
        latest = self.store.latest()
        if latest is not None and latest >= at:
            return False
        sample = Sample(at, self.step, self.store.totals(), self._queues())
        stored = self.store.add(sample, worker=self.worker_id)
        self.taken += stored
        return stored

    def _queues(self) -> dict[str, list[float]]:
        """Ready count and rates of up to :data:`QUEUES_SAMPLED` queues: the consumers' own
        queues and dead-letter queues first (asked for by name, :data:`NAMES_PER_ASK` at a
        time), then others in name order. None when the management API does not answer."""
        if self.management is None:
            return {}
        wanted = sorted(self.store.consumer_queues())[:QUEUES_SAMPLED]
        figures: dict[str, list[float]] = {}
        try:
            for start in range(0, len(wanted), NAMES_PER_ASK):
                names = wanted[start : start + NAMES_PER_ASK]
                pattern = "^(?:" + "|".join(re.escape(name) for name in names) + ")$"
                figures.update(self._page(pattern, len(names)))
            if len(figures) < QUEUES_SAMPLED:
                for name, row in self._page(None, QUEUES_SAMPLED).items():
                    if len(figures) >= QUEUES_SAMPLED:
                        break
                    figures.setdefault(name, row)
        except WorkerRMQError as exc:
            log.debug("statistics history: no queue figures (%s)", exc.message)
        return figures

    def _page(self, pattern: str | None, size: int) -> dict[str, list[float]]:
        """The first *size* queues whose name matches the regular expression *pattern* (any without)."""
        assert self.management is not None
        page = self.management.list_queues(name=pattern, page=1, page_size=size, columns=_COLUMNS, regex=True)
        found = {}
        for raw in page.get("items", []):
            stats = raw.get("message_stats") or {}
            found[raw["name"]] = [
                int(raw.get("messages_ready") or 0),
                _rate(stats, "publish"),
                _rate(stats, "deliver_get"),
            ]
        return found
