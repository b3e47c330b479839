"""Control messages: the API tells running workers that consumer definitions changed.

A fanout exchange reaches every worker's own auto-delete queue within
milliseconds; each worker also reconciles periodically, so a lost control
message only delays a change, never loses it.
"""

from __future__ import annotations

import logging

import orjson

from workerrmq.broker.publisher import Publisher
from workerrmq.errors import WorkerRMQError

__all__ = ["CONTROL_EXCHANGE", "announce_change"]

CONTROL_EXCHANGE = "workerrmq.control"
log = logging.getLogger(__name__)


def announce_change(publisher: Publisher, consumer_id: str, action: str) -> None:
    """Tell the workers; a broker outage only delays the change until their next reconcile."""
    body = orjson.dumps({"consumer_id": consumer_id, "action": action})
    try:
        publisher.broadcast(CONTROL_EXCHANGE, body)
    except WorkerRMQError as exc:
        log.warning("could not announce consumer change (%s); workers reconcile shortly", exc)
