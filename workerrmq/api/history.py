"""``/api/v1/stats/history``: the last 15 minutes of each consumer's and each queue's
figures, so a freshly opened dashboard draws its charts at once."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from workerrmq.api.blueprint import Blueprint
from workerrmq.api.schemas import Strict
from workerrmq.api.services import services
from workerrmq.services.history import HistoryService
from workerrmq.store.history import HISTORY_COUNTERS, QUEUE_FIGURES, RETENTION, HistoryStore

blp = Blueprint("history", __name__, url_prefix="/api/v1", description="Statistics history")

_MAX_MINUTES = int(RETENTION.total_seconds() // 60)


class HistoryArgs(Strict):
    minutes = fields.Integer(
        load_default=_MAX_MINUTES,
        validate=validate.Range(min=1, max=_MAX_MINUTES),
        metadata={"description": f"how far back, 1 to {_MAX_MINUTES} (what is kept)"},
    )


_POINT = fields.List(
    fields.Float(), metadata={"description": "t (seconds since the epoch), then the columns"}
)


class ConsumerSeries(Schema):
    name = fields.String(required=True)
    points = fields.List(
        _POINT,
        required=True,
        metadata={"description": "[t, " + ", ".join(HISTORY_COUNTERS) + "]: totals, oldest first"},
    )


class QueueSeries(Schema):
    points = fields.List(
        _POINT,
        required=True,
        metadata={"description": "[t, " + ", ".join(QUEUE_FIGURES) + "]: oldest first"},
    )


class HistoryColumns(Schema):
    consumers = fields.List(fields.String(), required=True)
    queues = fields.List(fields.String(), required=True)


class History(Schema):
    minutes = fields.Integer(required=True)
    step = fields.Float(required=True, metadata={"description": "seconds between samples"})
    columns = fields.Nested(HistoryColumns, required=True, metadata={"description": "what a point holds"})
    consumers = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ConsumerSeries),
        required=True,
        metadata={"description": "by consumer id"},
    )
    queues = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(QueueSeries),
        required=True,
        metadata={"description": "by queue name"},
    )


@blp.route("/stats/history", methods=["GET"])
@blp.arguments(HistoryArgs, location="query")
@blp.response(200, History)
def history(args: dict[str, Any]) -> dict[str, Any]:
    """Each consumer's totals (delivered, failed, retried, dead_lettered, filtered) and each
    queue's ready count and rates, sampled by the workers every few seconds: the last
    *minutes*, oldest first. A rate is the difference of two totals over their time apart."""
    return HistoryService(HistoryStore(services().db)).history(args["minutes"])
