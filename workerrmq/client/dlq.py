"""``workerrmq dlq ls|replay``: a consumer's dead letters."""

from __future__ import annotations

import base64

import click

from workerrmq.client.base import ClientGroup, Context, api_command
from workerrmq.client.http import EXIT, ApiError, segment
from workerrmq.client.progress import chunks

__all__ = ["dlq"]

_PAYLOAD_WIDTH = 60


@click.group(cls=ClientGroup)
def dlq() -> None:
    """Look at a consumer's dead letters and replay them.

    \b
    Examples:
      workerrmq dlq ls orders-relay
      workerrmq dlq replay orders-relay --count 100
    """


def _path(consumer: str, action: str = "") -> str:
    return f"/api/v1/consumers/{segment(consumer)}/dead-letters{action}"


@api_command(dlq, "ls")
@click.argument("consumer")
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="dead letters to show at most"
)
@click.option(
    "--offset",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="oldest dead letters to skip before the first shown",
)
def dlq_ls(ops: Context, consumer: str, limit: int, offset: int) -> None:
    """Peek at CONSUMER's dead letters, oldest first; they stay where they are.

    \b
    Example:
      workerrmq dlq ls orders-relay --limit 50
    """
    page = ops.client.get(_path(consumer), limit=limit, offset=offset)
    if ops.as_json:
        ops.print_json(page)
        return
    ops.table(
        ["message id", "attempts", "last status", "last error", "dead-lettered at", "payload"],
        (
            [
                m.get("message_id"),
                m.get("attempts"),
                m.get("last_status"),
                m.get("last_error"),
                m.get("dead_lettered_at"),
                _payload(m),
            ]
            for m in page["items"]
        ),
        empty=f"no dead letters for {consumer!r}",
    )
    shown = len(page["items"])
    if page["items"] or page["total"]:
        ops.note(f"{shown} shown of {page['total']} dead letters")


def _payload(message: dict) -> str | None:
    payload = message.get("payload")
    if payload is None:
        return None
    if message.get("payload_encoding") == "base64":
        raw = base64.b64decode(payload)
        try:
            payload = raw.decode()
        except UnicodeDecodeError:
            return f"<{len(raw)} bytes>"
    payload = payload.replace("\n", "⏎")
    if len(payload) > _PAYLOAD_WIDTH:
        payload = payload[: _PAYLOAD_WIDTH - 1] + "…"
    return payload


@api_command(dlq, "replay")
@click.argument("consumer")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="at most N (default: until the dead-letter queue is empty)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="messages moved per request",
)
def dlq_replay(ops: Context, consumer: str, count: int | None, batch_size: int) -> None:
    """Move CONSUMER's dead letters back to its queue, with a progress bar.

    All of them, or the oldest N with --count. Ctrl-C stops after the batch in
    flight (exit code 130). Messages that fail again at once can come back while
    it runs: pause the consumer first, or give --count, to replay each only once.

    \b
    Example:
      workerrmq dlq replay orders-relay --count 1000
    """
    # The management API's count can lag a few seconds: it sizes the bar, not the work.
    waiting = ops.client.get(_path(consumer), limit=1)["total"]
    estimate = waiting if count is None else min(count, waiting) or count
    replayed = 0
    interrupted = False
    try:
        with chunks(ops, f"replaying {consumer}", estimate) as run:
            while not run.stop_requested and (count is None or replayed < count):
                ask = batch_size if count is None else min(batch_size, count - replayed)
                moved = ops.client.post(_path(consumer, "/replay"), {"count": ask})["replayed"]
                replayed += moved
                if replayed > estimate:
                    estimate = replayed
                    run.grow(estimate)
                run.advance(moved)
                if moved < ask:  # the dead-letter queue is empty
                    break
            interrupted = run.stop_requested
    except KeyboardInterrupt:
        interrupted = True
        ops.note("stopped at once: the batch in flight may or may not have been replayed")
    except ApiError as exc:
        exc.message += f" (after {replayed} messages were replayed)"
        raise
    if ops.as_json:
        ops.print_json({"consumer": consumer, "replayed": replayed, "interrupted": interrupted})
    summary = f"replayed {replayed} dead letters of {consumer!r}"
    if interrupted:
        ops.note(f"interrupted: {summary}")
        raise click.exceptions.Exit(EXIT["interrupted"])
    if count is not None and replayed < count:
        summary += f" ({count} asked; no more were there)"
    ops.say(summary)
