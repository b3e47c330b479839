"""The statistics history as the API answers it: per consumer and per queue, a series of
points over the last minutes (:mod:`workerrmq.store.history` keeps them; the workers take them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from workerrmq.store.history import HISTORY_COUNTERS, QUEUE_FIGURES, RETENTION, HistoryStore
from workerrmq.store.models import utcnow

__all__ = ["HistoryService", "DEFAULT_STEP"]

#: The step reported before any sample exists: the workers' default.
DEFAULT_STEP = 10.0


class HistoryService:
    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    def history(self, minutes: int = 15, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The last *minutes* (at most :data:`~workerrmq.store.history.RETENTION`): each point
        is ``[t, *counters]`` (``t`` in seconds since the epoch), oldest first. Consumers
        deleted since are left out; a queue or consumer appears from its first sample on."""
        window = min(dt.timedelta(minutes=minutes), RETENTION)
        samples = self.store.since((now or utcnow()) - window)
        names = self.store.consumer_names()
        consumers: dict[str, dict[str, Any]] = {}
        queues: dict[str, dict[str, Any]] = {}
        for sample in samples:
            t = sample.at.timestamp()
            for cid, totals in sample.consumers.items():
                if cid in names:
                    consumers.setdefault(cid, {"name": names[cid], "points": []})["points"].append(
                        [t, *totals]
                    )
            for name, figures in sample.queues.items():
                queues.setdefault(name, {"points": []})["points"].append([t, *figures])
        return {
            "minutes": minutes,
            "step": samples[-1].step if samples else DEFAULT_STEP,
            "columns": {"consumers": ["t", *HISTORY_COUNTERS], "queues": ["t", *QUEUE_FIGURES]},
            "consumers": consumers,
            "queues": queues,
        }
