"""``workerrmq messages attempts``: what happened to a message, from the attempt log."""

from __future__ import annotations

from typing import Any

import click

from workerrmq.client.base import ClientGroup, Context, api_command
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
@click.argument("message_id", metavar="MESSAGE_ID")
def messages_attempts(ops: Context, message_id: str) -> None:
    """What happened to MESSAGE_ID: every delivery attempt of it, by every consumer,
    newest first, with the endpoint's status or the error and the start of its answer.

    MESSAGE_ID is the id publish printed (or dlq ls shows).

    \b
    Example:
      workerrmq messages attempts 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
    """
    items = ops.list_all(f"/api/v1/messages/{segment(message_id)}/attempts", page_size=None)
    if ops.as_json:
        ops.print_json({"items": items, "total": len(items)})
        return
    attempts_table(ops, items, empty=f"no attempts recorded for message {message_id!r}")


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
