"""``workerrmq dlq ls|show|replay|discard``: a consumer's dead letters."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import click

from workerrmq.client.base import ClientGroup, Context, api_command, time_value
from workerrmq.client.http import EXIT, ApiError, segment
from workerrmq.client.messages import attempts_table
from workerrmq.client.progress import chunks

__all__ = ["dlq"]

_PAYLOAD_WIDTH = 60
_PAGE = 500  # the API's largest dead-letter page


@click.group(cls=ClientGroup)
def dlq() -> None:
    """Look at a consumer's dead letters, replay them or discard them.

    Replay and discard take all of them, or those the selectors pick: --id, --since,
    --until, --status and --error-contains (together: a dead letter must match each).

    \b
    Examples:
      workerrmq dlq ls orders-relay
      workerrmq dlq show orders-relay 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
      workerrmq dlq replay orders-relay --status 503 --since 2h
      workerrmq dlq discard orders-relay --error-contains "invalid order" --yes
    """


def _path(consumer: str, action: str = "") -> str:
    return f"/api/v1/consumers/{segment(consumer)}/dead-letters{action}"


_SELECTORS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option(
        "--id",
        "message_ids",
        multiple=True,
        metavar="MESSAGE_ID",
        help="only the dead letter with this message id; repeatable (default: any id)",
    ),
    click.option(
        "--since",
        callback=time_value,
        metavar="TIME",
        help="only those dead-lettered at or after TIME: ISO 8601 (UTC if no zone) or an age "
        "such as 30m, 2h, 1d (default: no lower bound)",
    ),
    click.option(
        "--until",
        callback=time_value,
        metavar="TIME",
        help="only those dead-lettered before TIME, written as for --since (default: no upper bound)",
    ),
    click.option(
        "--status",
        metavar="STATUS",
        help="only those whose last attempt got this HTTP status (503) or error kind "
        "(timeout, connection) (default: any)",
    ),
    click.option(
        "--error-contains",
        metavar="TEXT",
        help="only those whose last error contains TEXT (default: any)",
    ),
]


def selector_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that pick dead letters, shared by replay and discard."""
    for option in reversed(_SELECTORS):
        f = option(f)
    return f


def _selection(
    message_ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    status: str | None,
    error_contains: str | None,
) -> dict[str, Any]:
    """The selectors given, as the API's body fields (none given: empty)."""
    chosen: dict[str, Any] = {
        "since": since,
        "until": until,
        "status": status,
        "error_contains": error_contains,
    }
    if message_ids:
        chosen["message_ids"] = list(message_ids)
    return {k: v for k, v in chosen.items() if v is not None}


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
        ops.print_json({"items": page["items"], "total": page["total"]})
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


def _payload(message: dict[str, Any], width: int | None = _PAYLOAD_WIDTH) -> str | None:
    """The body as text (binary: as hex), cut to *width* characters unless None."""
    payload = message.get("payload")
    if payload is None:
        return None
    if message.get("payload_encoding") == "base64":
        raw = base64.b64decode(payload)
        try:
            payload = raw.decode()
        except UnicodeDecodeError:
            return f"<{len(raw)} bytes>" if width else f"hex: {raw.hex(' ')}"
    if width is None:
        return payload
    payload = payload.replace("\n", "⏎")
    if len(payload) > width:
        payload = payload[: width - 1] + "…"
    return payload


@api_command(dlq, "show")
@click.argument("consumer")
@click.argument("message_id", metavar="[MESSAGE_ID]", required=False)
def dlq_show(ops: Context, consumer: str, message_id: str | None) -> None:
    """Show one of CONSUMER's dead letters in full, without taking it: its headers, its
    whole body (text, or hex when binary) and its delivery attempts from the attempt log.

    MESSAGE_ID picks it (see dlq ls); without it, the oldest one.

    \b
    Example:
      workerrmq dlq show orders-relay 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
    """
    letter = _find(ops, consumer, message_id)
    attempts: list[dict[str, Any]] | None = None
    if letter.get("message_id"):
        try:
            attempts = [
                a
                for a in ops.list_all(
                    f"/api/v1/messages/{segment(letter['message_id'])}/attempts", page_size=None
                )
                if consumer in (a.get("consumer"), a.get("consumer_id"))
            ]
        except ApiError as exc:
            if exc.status != 404:
                raise
    if ops.as_json:
        ops.print_json({"dead_letter": letter, "attempts": attempts})
        return
    pairs: list[tuple[str, Any]] = [
        (name, letter.get(name))
        for name in (
            "message_id",
            "dead_lettered_at",
            "attempts",
            "last_status",
            "last_error",
            "content_type",
        )
    ]
    pairs += [(f"header {k}", v) for k, v in (letter.get("headers") or {}).items()]
    pairs.append(("body", _payload(letter, width=None)))
    ops.fields(pairs, title=f"dead letter of {consumer}")
    if attempts is None:
        ops.note("no attempt log on this API")
    else:
        attempts_table(ops, attempts, empty="no attempts recorded for it")


def _find(ops: Context, consumer: str, message_id: str | None) -> dict[str, Any]:
    """The dead letter with *message_id* (the oldest when None), paging through the queue."""
    offset = 0
    while True:
        page = ops.client.get(_path(consumer), limit=_PAGE, offset=offset)
        for letter in page["items"]:
            if message_id is None or letter.get("message_id") == message_id:
                return letter
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"] or offset > 10_000 - _PAGE:
            what = f"dead letter {message_id!r}" if message_id else "dead letter"
            raise ApiError(f"no {what} for {consumer!r} (looked at {offset})", EXIT["not_found"], 404)


@api_command(dlq, "replay")
@click.argument("consumer")
@selector_options
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="at most N (default: every one that matches, until the dead-letter queue is empty)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="messages moved per request (without selectors)",
)
def dlq_replay(ops: Context, consumer: str, count: int | None, batch_size: int, **selectors: Any) -> None:
    """Move CONSUMER's dead letters back to its queue, their attempts starting again.

    Without selectors: all of them, or the oldest N with --count, in batches with a
    progress bar; Ctrl-C stops after the batch in flight (exit code 130). Messages
    that fail again at once can come back while it runs: pause the consumer first, or
    give --count, to replay each only once. With selectors, only those that match move
    (in one request); the others stay in the dead-letter queue, in their order.

    \b
    Examples:
      workerrmq dlq replay orders-relay --count 1000
      workerrmq dlq replay orders-relay --status 503 --since 2h
      workerrmq dlq replay orders-relay --id 6f1c2a9e-7d3b-4c1e-9a55-0b8e2f4d1c77
    """
    selection = _selection(**selectors)
    if selection:
        body = {**selection, **({"count": count} if count is not None else {})}
        answer = ops.client.post(_path(consumer, "/replay"), body)
        _replayed(ops, consumer, answer, interrupted=False)
        return
    _replay_in_batches(ops, consumer, count, batch_size)


def _replayed(ops: Context, consumer: str, answer: dict[str, Any], *, interrupted: bool) -> None:
    moved = answer.get("moved", answer.get("replayed", 0))
    summary = {
        "consumer": consumer,
        "matched": answer.get("matched", moved),
        "moved": moved,
        "replayed": moved,
        "remaining": answer.get("remaining"),
        "interrupted": interrupted,
    }
    if ops.as_json:
        ops.print_json(summary)
    text = f"replayed {moved} of {summary['matched']} matching dead letters of {consumer!r}"
    if summary["remaining"] is not None:
        text += f"; {summary['remaining']} remain in the dead-letter queue"
    ops.say(text)


def _replay_in_batches(ops: Context, consumer: str, count: int | None, batch_size: int) -> None:
    # The count sizes the bar, not the work.
    waiting = ops.client.get(_path(consumer), limit=1)["total"]
    estimate = waiting if count is None else min(count, waiting) or count
    replayed = 0
    remaining = None
    interrupted = False
    try:
        with chunks(ops, f"replaying {consumer}", estimate) as run:
            while not run.stop_requested and (count is None or replayed < count):
                ask = batch_size if count is None else min(batch_size, count - replayed)
                answer = ops.client.post(_path(consumer, "/replay"), {"count": ask})
                moved = answer.get("moved", answer["replayed"])
                remaining = answer.get("remaining")
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
        ops.print_json(
            {
                "consumer": consumer,
                "matched": replayed,
                "moved": replayed,
                "replayed": replayed,
                "remaining": remaining,
                "interrupted": interrupted,
            }
        )
    summary = f"replayed {replayed} dead letters of {consumer!r}"
    if interrupted:
        ops.note(f"interrupted: {summary}")
        raise click.exceptions.Exit(EXIT["interrupted"])
    if count is not None and replayed < count:
        summary += f" ({count} asked; no more were there)"
    ops.say(summary)


@api_command(dlq, "discard")
@click.argument("consumer")
@selector_options
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="at most N (default: every one that matches)"
)
@click.option("--all", "everything", is_flag=True, help="every dead letter, when no selector is given")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation (default: ask)")
def dlq_discard(
    ops: Context, consumer: str, count: int | None, everything: bool, yes: bool, **selectors: Any
) -> None:
    """Delete CONSUMER's dead letters for good (admin key needed): those the selectors
    pick, or all of them with --all. The others stay, in their order.

    \b
    Examples:
      workerrmq dlq discard orders-relay --error-contains "invalid order" --yes
      workerrmq dlq discard orders-relay --all --yes
    """
    selection = _selection(**selectors)
    if not selection and not everything:
        raise click.UsageError(
            "give a selector (--id, --since, --until, --status, --error-contains) or --all"
        )
    if selection and everything:
        raise click.UsageError("--all discards every dead letter: give it without selectors")
    body: dict[str, Any] = {**selection, **({"count": count} if count is not None else {})}
    if everything:
        body["all"] = True
    if not yes:
        what = "every dead letter" if everything else "the dead letters that match"
        click.confirm(
            f"Discard {what} of {consumer!r}{f' (at most {count})' if count else ''}?", abort=True, err=True
        )
    answer = ops.client.request("DELETE", _path(consumer), json=body)
    if ops.as_json:
        ops.print_json({"consumer": consumer, **answer})
        return
    ops.say(
        f"discarded {answer.get('discarded')} of {answer.get('matched')} matching dead letters of "
        f"{consumer!r}; {answer.get('remaining')} remain"
    )
