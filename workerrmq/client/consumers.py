"""``workerrmq consumers ls|create|update|show|rotate-secret|pause|resume|rm``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from workerrmq.client.base import ClientGroup, Context, api_command, name_values
from workerrmq.client.http import segment
from workerrmq.core.consumer import DEFAULTS, FIELDS
from workerrmq.core.signing import ROTATION_GRACE, ROTATION_GRACE_MAX
from workerrmq.core.status import ConsumerState

__all__ = ["consumers"]


@click.group(cls=ClientGroup)
def consumers() -> None:
    """Consumers: each relays the messages of a queue to an HTTP endpoint.

    A consumer is named by its id or its name.

    \b
    Examples:
      workerrmq consumers create orders --target-url https://shop.example/hooks/orders
      workerrmq consumers ls
      workerrmq consumers pause orders-relay
    """


def _help(field: str) -> str:
    """The ``--help`` line of consumer field *field*: its meaning, range and default."""
    default = DEFAULTS.get(field)
    return FIELDS[field].help(default) if default is not None else f"{FIELDS[field].help()} (default: none)"


def _path(ref: str, action: str = "") -> str:
    return f"/api/v1/consumers/{segment(ref)}{action}"


def _stats(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("stats") or {}


@api_command(consumers, "ls")
def consumers_ls(ops: Context) -> None:
    """List consumers with their state and live statistics.

    \b
    Example:
      workerrmq consumers ls --json | jq -r '.items[] | select(.state == "paused") | .name'

    Credentials in target URLs and headers show as ***, as the API shows them.
    """
    items = ops.list_all("/api/v1/consumers")
    if ops.as_json:
        ops.print_json({"items": items, "total": len(items)})
        return
    ops.table(
        ["consumer", "queue", "target", "state", "delivered", "failed", "dead", "in flight", "circuit"],
        (
            [
                c.get("name"),
                c.get("queue"),
                c.get("target_url"),
                c.get("state"),
                _stats(c).get("delivered"),
                _stats(c).get("failed"),
                _stats(c).get("dead_lettered"),
                _stats(c).get("in_flight"),
                _stats(c).get("circuit"),
            ]
            for c in items
        ),
        empty="no consumers",
    )


def _show(ops: Context, c: dict[str, Any], verb: str | None = None) -> None:
    if ops.as_json:
        ops.print_json(c)
        return
    if verb:
        ops.say(f"{verb} consumer {c.get('name')!r} ({c.get('state')})")
        return
    stats = _stats(c)
    pairs: list[tuple[str, Any]] = [
        (name, c.get(name))
        for name in (
            "id",
            "name",
            "queue",
            "target_url",
            "method",
            "state",
            "concurrency",
            "timeout",
            "max_attempts",
            "initial_delay",
            "max_delay",
            "rate_limit",
            "ordered",
            "dead_letter_queue",
            "signing",
            "source",
            "filter",
            "format",
            "ce_source",
            "auth",
            "reply",
            "batch",
            "degraded_after",
            "version",
            "created_at",
            "updated_at",
        )
    ]
    pairs.append(("retry_on", ", ".join(c.get("retry_on") or [])))
    pairs.append(("headers", ", ".join(f"{k}: {v}" for k, v in (c.get("headers") or {}).items()) or None))
    pairs += [(f"stats.{name}", value) for name, value in stats.items() if not isinstance(value, list)]
    pairs.append(("stats.status", ", ".join(stats.get("status") or []) or None))
    ops.fields(pairs, title=f"consumer {c.get('name')}")


@api_command(consumers, "show")
@click.argument("consumer")
def consumers_show(ops: Context, consumer: str) -> None:
    """Show one CONSUMER (id or name): its settings and live statistics.

    \b
    Example:
      workerrmq consumers show orders-relay
    """
    _show(ops, ops.client.get(_path(consumer)))


def consumer_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The consumer field options, shared by ``create`` and ``update``: an option added
    here is offered by both."""
    for option in reversed(_FIELD_OPTIONS):
        f = option(f)
    return f


class _Null:
    """A JSON ``null`` given to an option: sent as null (click's None means "not given")."""


NULL = _Null()


class JsonValue(click.ParamType):
    """An option's JSON text, as the value it holds; ``null`` as :data:`NULL`."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            loaded = json.loads(value)
        except ValueError as exc:
            self.fail(f"not valid JSON: {exc}", param, ctx)
        return NULL if loaded is None else loaded


_FIELD_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--name", help=f"{FIELDS['name'].description} (default: QUEUE)"),
    click.option(
        "--target-url",
        metavar="URL",
        help=f"{FIELDS['target_url'].description} (default: the API's DEFAULT_TARGET_URL)",
    ),
    click.option("--method", type=click.Choice(FIELDS["method"].choices or ()), help=_help("method")),
    click.option(
        "--header",
        "-H",
        "headers",
        multiple=True,
        metavar="NAME=VALUE",
        help="an HTTP header for every delivery; repeatable (default: none)",
    ),
    click.option("--delivery-timeout", "request_timeout", type=float, metavar="S", help=_help("timeout")),
    click.option("--concurrency", type=int, metavar="N", help=_help("concurrency")),
    click.option("--max-attempts", type=int, metavar="N", help=_help("max_attempts")),
    click.option("--initial-delay", type=float, metavar="S", help=_help("initial_delay")),
    click.option("--max-delay", type=float, metavar="S", help=_help("max_delay")),
    click.option("--rate-limit", type=float, metavar="PER_S", help=_help("rate_limit")),
    click.option(
        "--ordered/--unordered", default=None, help=f"{FIELDS['ordered'].description} (default: unordered)"
    ),
    click.option("--dead-letter-queue", metavar="QUEUE", help=FIELDS["dead_letter_queue"].description),
    click.option(
        "--signing-secret",
        envvar="WORKERRMQ_SIGNING_SECRET",
        metavar="SECRET",
        help="Standard Webhooks secret [env WORKERRMQ_SIGNING_SECRET; default: none, unsigned]",
    ),
    click.option(
        "--source",
        type=JsonValue(),
        metavar="JSON",
        help=f"{FIELDS['source'].description}, e.g. "
        '\'{"exchange": "shop", "binding_keys": ["order.*"]}\' (default: none; with it, QUEUE is left out)',
    ),
    click.option("--filter", "filter_", metavar="CEL", help=f"{_help('filter')}; '' removes it"),
    click.option(
        "--format", "format_", type=click.Choice(FIELDS["format"].choices or ()), help=_help("format")
    ),
    click.option("--ce-source", metavar="URI", help=f"{_help('ce_source')}; '' removes it"),
    click.option(
        "--auth",
        type=JsonValue(),
        envvar="WORKERRMQ_AUTH",
        metavar="JSON",
        help=f'{FIELDS["auth"].description}, e.g. \'{{"type": "bearer", "token": "..."}}\'; '
        "null removes it [env WORKERRMQ_AUTH, which keeps the secret out of the process list; default: none]",
    ),
    click.option(
        "--reply/--no-reply", default=None, help=f"{FIELDS['reply'].description} (default: no reply)"
    ),
    click.option(
        "--batch",
        type=JsonValue(),
        metavar="JSON",
        help=f'{FIELDS["batch"].description}, e.g. \'{{"max_messages": 100, "max_wait_ms": 50}}\'; '
        "null removes it (default: none, one message per request)",
    ),
    click.option("--degraded-after", type=float, metavar="S", help=_help("degraded_after")),
]


@api_command(consumers, "create")
@click.argument("queue", required=False)
@consumer_options
@click.option("--create-queue", is_flag=True, default=None, help="declare QUEUE if missing")
@click.option("--paused", is_flag=True, help="create it paused")
def consumers_create(
    ops: Context,
    queue: str | None,
    headers: tuple[str, ...],
    request_timeout: float | None,
    paused: bool,
    **options: Any,
) -> None:
    """Create a consumer that delivers every message of QUEUE to an HTTP endpoint; with
    --source (and --name) instead of QUEUE, every matching message of an exchange, through
    a queue of its own, wrmq.NAME.

    \b
    Examples:
      workerrmq consumers create orders --name orders-relay \\
        --target-url https://shop.example/hooks/orders --concurrency 16 --rate-limit 100
      workerrmq consumers create --name billing --target-url https://billing.example/in \\
        --source '{"exchange": "shop", "binding_keys": ["order.*"]}'
    """
    if (queue is None) == (options.get("source") is None):
        raise click.UsageError("give QUEUE or --source (one of them)")
    body = {**({"queue": queue} if queue is not None else {}), **_fields(options, headers, request_timeout)}
    if paused:
        body["state"] = ConsumerState.PAUSED.value
    _show(ops, ops.client.post("/api/v1/consumers", body), "created")


def _fields(
    options: dict[str, Any], headers: tuple[str, ...], request_timeout: float | None
) -> dict[str, Any]:
    """The request body's consumer fields from the options given (those left out are not sent)."""
    body = {k.rstrip("_"): v for k, v in options.items() if v is not None}
    for key, value in list(body.items()):
        if value is NULL or (key in ("filter", "ce_source") and value == ""):
            body[key] = None
    if request_timeout is not None:
        body["timeout"] = request_timeout
    if headers:
        body["headers"] = name_values(headers, "--header")
    return body


@api_command(consumers, "update")
@click.argument("consumer")
@consumer_options
def consumers_update(
    ops: Context,
    consumer: str,
    headers: tuple[str, ...],
    request_timeout: float | None,
    **options: Any,
) -> None:
    """Change the fields of CONSUMER (id or name) that the options name; the others keep
    their value (the defaults shown are those of a new consumer). The workers pick the
    change up within seconds. --header replaces all of its headers.

    \b
    Example:
      workerrmq consumers update orders-relay --concurrency 32 --max-attempts 10
    """
    body = _fields(options, headers, request_timeout)
    if not body:
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    _show(ops, ops.client.patch(_path(consumer), body), "updated")


@api_command(consumers, "rotate-secret")
@click.argument("consumer")
@click.option(
    "--grace",
    type=click.IntRange(0, ROTATION_GRACE_MAX),
    default=ROTATION_GRACE,
    show_default=True,
    metavar="SECONDS",
    help="how long requests also carry the replaced secret's signature",
)
@click.option("--secret", metavar="SECRET", help="the new secret, whsec_<base64> (default: 32 random bytes)")
def consumers_rotate_secret(ops: Context, consumer: str, grace: int, secret: str | None) -> None:
    """Sign CONSUMER's requests with a new secret, printed (on stdout) this once.

    During the grace period each request carries the new and the replaced secret's
    signature, so receivers can switch to the new secret before the old one stops.

    \b
    Example:
      workerrmq consumers rotate-secret orders-relay --grace 3600 > new-secret.txt
    """
    body: dict[str, Any] = {"grace_seconds": grace}
    if secret is not None:
        body["secret"] = secret
    answer = ops.client.post(_path(consumer, "/signing-secret/rotate"), body)
    if ops.as_json:
        ops.print_json(answer)
        return
    until = answer.get("signing_previous_until")
    ops.note(
        f"rotated the signing secret of consumer {answer.get('name')!r}; "
        + (f"the replaced one also signs until {until}" if until else "the replaced one no longer signs")
    )
    click.echo(answer["signing_secret"])


@api_command(consumers, "pause")
@click.argument("consumer")
def consumers_pause(ops: Context, consumer: str) -> None:
    """Stop delivering CONSUMER's messages; deliveries in flight finish.

    \b
    Example:
      workerrmq consumers pause orders-relay
    """
    _show(ops, ops.client.post(_path(consumer, "/pause")), "paused")


@api_command(consumers, "resume")
@click.argument("consumer")
def consumers_resume(ops: Context, consumer: str) -> None:
    """Deliver CONSUMER's messages again.

    \b
    Example:
      workerrmq consumers resume orders-relay
    """
    _show(ops, ops.client.post(_path(consumer, "/resume")), "resumed")


@api_command(consumers, "rm")
@click.argument("consumer")
@click.option(
    "--delete-queue",
    is_flag=True,
    help="also delete the queue wrmq.NAME that WorkerRMQ declared for a --source consumer",
)
def consumers_rm(ops: Context, consumer: str, delete_queue: bool) -> None:
    """Delete CONSUMER; its queue and dead-letter queue stay (a --source consumer's own
    queue too, unless --delete-queue).

    \b
    Example:
      workerrmq consumers rm orders-relay
    """
    ops.client.delete(_path(consumer), **({"delete_queue": True} if delete_queue else {}))
    if ops.as_json:
        ops.print_json({"consumer": consumer, "deleted": True})
    else:
        ops.say(f"deleted consumer {consumer!r}")
