"""``workerrmq queues ls|create|rm|purge``."""

from __future__ import annotations

from typing import Any

import click

from workerrmq.client.base import ClientGroup, Context, api_command
from workerrmq.client.http import segment

__all__ = ["queues"]


@click.group(cls=ClientGroup)
def queues() -> None:
    """List, create, delete and purge queues.

    \b
    Examples:
      workerrmq queues ls --name orders
      workerrmq queues create orders --type quorum --max-length 100000
      workerrmq queues purge orders
    """


@api_command(queues, "ls")
@click.option("--name", help="only queues whose name contains this (default: all)")
def queues_ls(ops: Context, name: str | None) -> None:
    """List queues with their depth, consumers and rates.

    \b
    Example:
      workerrmq queues ls --name orders --json | jq '.items[].messages'
    """
    items = ops.list_all("/api/v1/queues", name=name)
    if ops.as_json:
        ops.print_json({"items": items, "total": len(items)})
        return
    ops.table(
        ["queue", "type", "messages", "ready", "unacked", "consumers", "in/s", "out/s"],
        (
            [
                q["name"],
                q.get("type"),
                q.get("messages"),
                q.get("messages_ready"),
                q.get("messages_unacknowledged"),
                q.get("consumers"),
                q.get("publish_rate"),
                q.get("deliver_rate"),
            ]
            for q in items
        ),
        empty="no queues",
    )
    if any(q.get("stats_age_seconds") is None for q in items):
        ops.note("figures as the management API last sampled them, up to its statistics interval (5 s) old")
    elif items:
        ops.note("ready and consumers read live; unacked and rates sampled every 5 s")


@api_command(queues, "create")
@click.argument("name")
@click.option(
    "--type",
    "queue_type",
    type=click.Choice(["classic", "quorum"]),
    default="classic",
    show_default=True,
    help="quorum: replicated over a cluster's nodes",
)
@click.option(
    "--durable/--transient",
    default=True,
    show_default=True,
    help="whether the queue survives a broker restart",
)
@click.option(
    "--message-ttl",
    type=click.IntRange(min=0),
    metavar="MS",
    help="milliseconds a message may wait in it (default: no limit)",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=0),
    metavar="N",
    help="messages it holds at most (default: no limit)",
)
@click.option(
    "--max-length-bytes",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="message bytes it holds at most (default: no limit)",
)
@click.option(
    "--overflow",
    type=click.Choice(["drop-head", "reject-publish", "reject-publish-dlx"]),
    help="what a publish to a full queue does (RabbitMQ's default: drop-head, the oldest goes)",
)
@click.option(
    "--dead-letter-exchange",
    metavar="EXCHANGE",
    help="where RabbitMQ sends what the queue drops or expires (not WorkerRMQ's dead-letter queue) "
    "(default: none, dropped)",
)
@click.option(
    "--dead-letter-routing-key", metavar="KEY", help="routing key of those messages (default: their own)"
)
@click.option(
    "--max-priority",
    type=click.IntRange(1, 255),
    metavar="N",
    help="highest message priority it orders by (default: none, unordered)",
)
def queues_create(ops: Context, name: str, queue_type: str, durable: bool, **arguments: Any) -> None:
    """Declare queue NAME. An identical existing queue is fine; one with other
    settings is a conflict (exit code 5).

    \b
    Example:
      workerrmq queues create orders --max-length 100000 --overflow reject-publish
    """
    body = {
        "name": name,
        "type": queue_type,
        "durable": durable,
        "arguments": {k: v for k, v in arguments.items() if v is not None},
    }
    queue = ops.client.post("/api/v1/queues", body)
    if ops.as_json:
        ops.print_json(queue)
    else:
        ops.say(
            f"queue {name!r} is ready ({queue.get('type')}, "
            f"{'durable' if queue.get('durable') else 'transient'})"
        )


@api_command(queues, "rm")
@click.argument("name")
@click.option("--if-empty", is_flag=True, help="only if it holds no messages (else exit code 5)")
@click.option("--if-unused", is_flag=True, help="only if nothing consumes it (else exit code 5)")
def queues_rm(ops: Context, name: str, if_empty: bool, if_unused: bool) -> None:
    """Delete queue NAME and the messages in it.

    \b
    Example:
      workerrmq queues rm orders --if-empty
    """
    ops.client.delete(f"/api/v1/queues/{segment(name)}", if_empty=if_empty, if_unused=if_unused)
    if ops.as_json:
        ops.print_json({"queue": name, "deleted": True})
    else:
        ops.say(f"deleted queue {name!r}")


@api_command(queues, "purge")
@click.argument("name")
def queues_purge(ops: Context, name: str) -> None:
    """Drop every ready message of queue NAME (unacknowledged ones stay).

    \b
    Example:
      workerrmq queues purge orders.dlq
    """
    ops.client.post(f"/api/v1/queues/{segment(name)}/purge")
    if ops.as_json:
        ops.print_json({"queue": name, "purged": True})
    else:
        ops.say(f"purged queue {name!r}")
