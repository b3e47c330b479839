"""``workerrmq publish``: one message, or a file of them in batches."""

from __future__ import annotations

import base64
import itertools
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from workerrmq.client.base import Context, api_command, name_values
from workerrmq.client.http import EXIT, ApiError, segment
from workerrmq.client.progress import chunks

__all__ = ["publish"]

_KEPT_FAILURES = 100


@api_command(None, "publish", short_help="Publish messages to a queue.")
@click.argument("queue")
@click.argument("message", required=False)
@click.option(
    "--file",
    "-f",
    "source",
    type=click.File("rb"),
    metavar="FILE",
    help="publish each line of FILE as one message ('-' reads lines from stdin) (default: MESSAGE)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="messages per request with --file",
)
@click.option("--content-type", help="content type of the messages (default: text/plain)")
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="an AMQP header for every message; repeatable (default: none)",
)
def publish(
    ops: Context,
    queue: str,
    message: str | None,
    source: IO[bytes] | None,
    batch_size: int,
    content_type: str | None,
    headers: tuple[str, ...],
) -> None:
    """Publish MESSAGE to QUEUE; '-' publishes all of stdin as one message.

    With --file, each non-empty line is one message, sent in batches with a
    progress bar. Ctrl-C stops after the batch in flight and reports how many
    were published (exit code 130).

    \b
    Examples:
      workerrmq publish orders 'Hello, World!'
      jq -c . order.json | workerrmq publish orders - --content-type application/json
      workerrmq publish orders --file orders.ndjson --batch-size 500
    """
    props = _properties(content_type, headers)
    if (message is None) == (source is None):
        raise click.UsageError("give either MESSAGE (or '-' for stdin) or --file")
    path = f"/api/v1/queues/{segment(queue)}/messages"
    if source is not None:
        _publish_lines(ops, queue, path, source, batch_size, props)
        return
    assert message is not None  # checked above: MESSAGE or --file
    raw = sys.stdin.buffer.read() if message == "-" else message.encode()
    answer = ops.client.post(path, {**_body(raw), **props})
    if ops.as_json:
        ops.print_json(answer)
    else:
        ops.say(f"published 1 message to {queue!r} (message id {answer['message_id']})")


def _publish_lines(
    ops: Context, queue: str, path: str, source: IO[bytes], batch_size: int, props: dict[str, Any]
) -> None:
    total = _count_messages(source)
    done = {"published": 0, "failed": 0, "skipped": 0}
    failures: list[dict[str, Any]] = []
    interrupted = False
    lines = _messages(source, done)
    try:
        with chunks(ops, f"publishing to {queue}", total) as run:
            while not run.stop_requested:
                batch = [{**_body(raw), **props} for raw in itertools.islice(lines, batch_size)]
                if not batch:
                    break
                answer = ops.client.post(path, {"messages": batch})
                done["published"] += answer["published"]
                done["failed"] += answer["failed"]
                room = _KEPT_FAILURES - len(failures)
                failures += [r for r in answer["results"] if r["status"] != "published"][:room]
                run.advance(len(batch))
            interrupted = run.stop_requested
    except KeyboardInterrupt:
        interrupted = True
        ops.note("stopped at once: the batch in flight may or may not have been published")
    except ApiError as exc:
        exc.message += f" (after {done['published']} messages were published)"
        raise
    _report(ops, queue, total, done, failures, interrupted)


def _report(
    ops: Context,
    queue: str,
    total: int | None,
    done: dict[str, int],
    failures: list[dict[str, Any]],
    interrupted: bool,
) -> None:
    if ops.as_json:
        ops.print_json({"queue": queue, **done, "interrupted": interrupted, "failures": failures})
    of = f" of {total}" if total is not None else ""
    summary = f"published {done['published']}{of} messages to {queue!r}"
    if done["skipped"]:
        summary += f"; skipped {done['skipped']} empty lines"
    if interrupted:
        ops.note(f"interrupted: {summary}")
        raise click.exceptions.Exit(EXIT["interrupted"])
    if done["failed"]:
        statuses = sorted({f["status"] for f in failures})
        ops.note(f"{summary}; {done['failed']} were not published ({', '.join(statuses)})")
        raise click.exceptions.Exit(EXIT["other"])
    ops.say(summary)


def _count_messages(source: IO[bytes]) -> int | None:
    """How many non-empty lines *source* holds, when it can be read twice."""
    try:
        if not source.seekable():
            return None
        start = source.tell()
        count = sum(1 for line in source if line.strip(b"\r\n"))
        source.seek(start)
    except OSError:
        return None
    return count


def _messages(source: IO[bytes], done: dict[str, int]) -> Iterator[bytes]:
    for line in source:
        raw = line.rstrip(b"\n").rstrip(b"\r")
        if raw:
            yield raw
        else:
            done["skipped"] += 1


def _body(raw: bytes) -> dict[str, str]:
    """Text as ``body``; bytes that are not UTF-8 as ``body_base64``."""
    try:
        return {"body": raw.decode()}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(raw).decode()}


def _properties(content_type: str | None, headers: tuple[str, ...]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if content_type:
        props["content_type"] = content_type
    if headers:
        props["headers"] = name_values(headers, "--header")
    return props
