"""A total-queue check, after Jepsen's queue checker.

Publish N unique ids with publisher confirms while faults are injected, heal,
drain, then compare what the endpoint received with what the broker confirmed:
every confirmed id delivered at least once, nothing delivered that was never
published, duplicates counted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pika
import pika.exceptions

from tests.endpoint import Endpoint

#: How many messages a fault run publishes; ``./run.sh soak`` raises it.
CHAOS_N = int(os.environ.get("WORKERRMQ_CHAOS_N", "2000"))
RESULTS = Path(os.environ.get("WORKERRMQ_CHAOS_RESULTS", "var/reliability.jsonl"))


@dataclasses.dataclass
class Tally:
    name: str
    published: set[str] = dataclasses.field(default_factory=set)
    confirmed: set[str] = dataclasses.field(default_factory=set)
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    recovery_seconds: list[float] = dataclasses.field(default_factory=list)

    def check(self, endpoint: Endpoint) -> dict[str, object]:
        delivered = collections.Counter(endpoint.delivered_ids())
        lost = self.confirmed - delivered.keys()
        unexpected = delivered.keys() - self.published
        figures = {
            "run": self.name,
            "published": len(self.published),
            "confirmed": len(self.confirmed),
            "delivered_unique": len(delivered),
            "deliveries": sum(delivered.values()),
            "duplicates": sum(n - 1 for n in delivered.values() if n > 1),
            "lost": len(lost),
            "unexpected": len(unexpected),
            "faults": dict(self.faults),
            "recovery_seconds": [round(s, 2) for s in self.recovery_seconds],
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(figures) + "\n")
        print("\nTOTAL-QUEUE", json.dumps(figures))
        return figures

    def missing(self, endpoint: Endpoint) -> int:
        return len(self.confirmed - set(endpoint.delivered_ids()))


class ConfirmedPublisher(threading.Thread):
    """Publishes ids ``<prefix>-0 .. <prefix>-N-1`` to a queue with confirms, at about
    *rate* per second, reconnecting and re-sending whatever was not confirmed."""

    def __init__(
        self, url: str, queue: str, tally: Tally, n: int, *, rate: float, prefix: str = "id"
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.queue, self.tally, self.n, self.rate = url, queue, tally, n, rate
        self.prefix = prefix
        self.error: BaseException | None = None

    def run(self) -> None:
        pending = [f"{self.prefix}-{i}" for i in range(self.n)]
        started = time.monotonic()
        deadline = started + max(300.0, self.n / 100)  # generous: a soak publishes 100,000
        sent = 0
        while pending and time.monotonic() < deadline:
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.url))
                channel = connection.channel()
                channel.confirm_delivery()
                while pending:
                    ahead = sent - (time.monotonic() - started) * self.rate
                    if ahead > 0:
                        time.sleep(min(ahead / self.rate, 0.05))  # pacing, not waiting on a condition
                        continue
                    message_id = pending[0]
                    self.tally.published.add(message_id)
                    channel.basic_publish(
                        "",
                        self.queue,
                        message_id.encode(),
                        pika.BasicProperties(delivery_mode=2, message_id=message_id),
                        mandatory=True,
                    )
                    self.tally.confirmed.add(message_id)
                    pending.pop(0)
                    sent += 1
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)  # broker away: try again shortly
            except BaseException as exc:  # noqa: BLE001 - surfaced to the test
                self.error = exc
                return
