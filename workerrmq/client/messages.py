"""``workerrmq messages attempts``: what happened to a message, from the attempt log."""

from __future__ import annotations

from typing import Any

import click

from workerrmq.client.base import ClientGroup, Context, api_command, time_value
from workerrmq.client.http import segment

__all__ = ["messages", "attempts_table"]

_RESPONSE_WIDTH = 60


@click.group(cls=ClientGroup)
def messages() -> None:
    """Follow one message through its delivery attempts.

    \b
    Example:
      workerrmq messages attempts 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
    """


@api_command(messages, "attempts")
@click.argument("message_id", metavar="[MESSAGE_ID]", required=False)
@click.option(
    "--consumer",
    metavar="CONSUMER",
    help="only the attempts of this consumer (id or name) (default: every consumer's)",
)
@click.option(
    "--status",
    metavar="STATUS",
    help="only attempts with this HTTP status (503), error kind (timeout) or outcome "
    "(failed, delivered) (default: all)",
)
@click.option(
    "--since",
    callback=time_value,
    metavar="TIME",
    help="only attempts at or after TIME, ISO 8601 or an age such as 30m, 2h, 1d (default: no lower bound)",
)
@click.option(
    "--until", callback=time_value, metavar="TIME", help="only attempts before TIME (default: no upper bound)"
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="the newest N attempts at most",
)
def messages_attempts(
    ops: Context,
    message_id: str | None,
    consumer: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> None:
    """What happened to MESSAGE_ID: every delivery attempt of it, by every consumer,
    newest first, with the endpoint's status or the error and the start of its answer.
    With --consumer (and no MESSAGE_ID), a consumer's latest attempts.

    MESSAGE_ID is the id publish printed (or dlq ls shows).

    \b
    Examples:
      workerrmq messages attempts 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
      workerrmq messages attempts --consumer orders-relay --status failed --since 1h
    """
    if message_id is None and consumer is None:
        raise click.UsageError("give MESSAGE_ID, or --consumer for a consumer's attempts")
    if consumer is not None:
        path = f"/api/v1/consumers/{segment(consumer)}/attempts"
        params = {"message_id": message_id}
    else:
        path = f"/api/v1/messages/{segment(message_id or '')}/attempts"
        params = {}
    answer = ops.client.get(
        path, **params, status=status, since=since, until=until, page=1, page_size=min(limit, 500)
    )
    items, total = answer["items"], answer["total"]
    page = 1
    while len(items) < min(limit, total) and answer["items"]:
        page += 1
        answer = ops.client.get(
            path, **params, status=status, since=since, until=until, page=page, page_size=500
        )
        items += answer["items"]
    items = items[:limit]
    if ops.as_json:
        ops.print_json({"items": items, "total": total})
        return
    what = f"message {message_id!r}" if message_id else f"consumer {consumer!r}"
    attempts_table(ops, items, empty=f"no attempts recorded for {what}")
    if total > len(items):
        ops.note(f"the newest {len(items)} of {total} shown (--limit)")


def attempts_table(ops: Context, items: list[dict[str, Any]], *, empty: str) -> None:
    """Attempts as a table, newest first as the API gives them."""
    ops.table(
        ["at", "consumer", "attempt", "outcome", "status", "error", "ms", "worker", "response"],
        (
            [
                (a.get("at") or "")[:23].replace("T", " ") or None,
                a.get("consumer") or a.get("consumer_id"),
                a.get("attempt"),
                a.get("outcome"),
                a.get("status"),
                a.get("error"),
                a.get("duration_ms"),
                a.get("worker"),
                _short(a.get("response")),
            ]
            for a in items
        ),
        empty=empty,
    )
    if items:
        last = items[0]
        ops.note(f"{len(items)} attempts; last: {last.get('outcome')} at {last.get('at')}")


def _short(text: str | None) -> str | None:
    if not text:
        return None
    text = text.replace("\r", "").replace("\n", "⏎")
    return text if len(text) <= _RESPONSE_WIDTH else text[: _RESPONSE_WIDTH - 1] + "…"
