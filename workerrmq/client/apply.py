"""``workerrmq apply -f FILE`` and ``workerrmq export``: configuration as code.

The file (schema: ``workerrmq apply --schema``) declares exchanges, queues with their
bindings, consumers and API keys. ``apply`` reads what the API holds, prints the changes
(:mod:`workerrmq.client.plan`) and makes them; ``export`` writes the current state as such a file.

Managed objects: consumers and API keys are all WorkerRMQ's. Queues and exchanges are
WorkerRMQ's to prune only when an apply declared them (recorded in WorkerRMQ's database,
``/api/v1/managed``); others, and WorkerRMQ's delay, control and dead-letter queues, never are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from workerrmq.client.base import Context, api_command, fail
from workerrmq.client.declared import (
    Declared,
    FileProblem,
    consumer_defaults,
    env_name,
    load,
    looks_secret,
    schema,
)
from workerrmq.client.http import EXIT, ApiError, segment
from workerrmq.client.plan import HIDDEN, Change, Plan, State, plan
from workerrmq.core.consumer import AUTH_SECRETS, dead_letter_queue_for

__all__ = ["apply", "export"]


def _print_schema(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(json.dumps(schema(), indent=2))
        ctx.exit()


@api_command(None, "apply")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="the file; - reads stdin (default: none, required unless --schema)",
)
@click.option("--dry-run", is_flag=True, help="print the changes, make none")
@click.option(
    "--prune",
    is_flag=True,
    help="also delete what the file no longer declares "
    "(consumers, API keys, and queues and exchanges an apply declared)",
)
@click.option(
    "--update-secrets",
    is_flag=True,
    help="send every secret of the file again "
    "(the API never shows them, so a changed secret is not seen otherwise)",
)
@click.option(
    "--schema",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_schema,
    help="print the file's JSON Schema and exit",
)
def apply(ops: Context, path: str | None, dry_run: bool, prune: bool, update_secrets: bool) -> None:
    """Make the API hold what FILE declares: exchanges, queues with bindings, consumers, API keys.

    Secrets are ${ENV_NAME} references, resolved from the environment. A new API key's token
    is printed once. Exit code 5 when something cannot be changed (nothing is then changed).

    \b
    Examples:
      workerrmq apply -f workerrmq.yaml --dry-run
      workerrmq apply -f workerrmq.yaml --prune
      workerrmq apply --schema > workerrmq.schema.json
    """
    if path is None:
        raise click.UsageError("give the file with -f FILE (or --schema)")
    try:
        with click.open_file(path, encoding="utf-8") as stream:
            want = load(stream.read())
    except FileProblem as exc:
        raise fail(f"{path}: {exc}", EXIT["input"]) from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    have = read_state(ops, want)
    todo = plan(want, have, prune=prune, update_secrets=update_secrets)
    _report(ops, todo, dry_run)
    if todo.conflicts:
        raise fail("nothing was changed: " + "; ".join(todo.conflicts), EXIT["conflict"])
    if dry_run or not todo.changes:
        return
    problems, tokens = _execute(ops, todo)
    for stale in _stale(have):
        ops.client.delete(f"/api/v1/managed/{stale[0]}s/{segment(stale[1])}")
    if ops.as_json:
        ops.print_json(
            {
                "changes": [_as_dict(c) for c in todo.changes],
                "dry_run": False,
                "new_keys": tokens,
                "problems": problems,
            }
        )
    else:
        ops.say(f"applied {len(todo.changes) - len(problems)} change(s)")
        for name, token in tokens.items():
            ops.note(f"api key {name!r}: its token is shown only this once:")
            click.echo(f"{name}: {token}")
    if problems:
        raise fail("; ".join(problems), EXIT["conflict"])


def _report(ops: Context, todo: Plan, dry_run: bool) -> None:
    for line in todo.notes:
        ops.note(line)
    if ops.as_json and (dry_run or not todo.changes or todo.conflicts):
        ops.print_json(
            {"changes": [_as_dict(c) for c in todo.changes], "dry_run": dry_run, "conflicts": todo.conflicts}
        )
        return
    if not ops.as_json:
        for change in todo.changes:
            ops.say(str(change))
    if not todo.changes and not todo.conflicts:
        ops.say("no changes")
    elif dry_run:
        ops.say(f"dry run: {len(todo.changes)} change(s), none made")


def _as_dict(change: Change) -> dict[str, Any]:
    return {"action": change.action, "kind": change.kind, "name": change.name, "detail": change.detail}


def read_state(ops: Context, want: Declared | None = None) -> State:
    """What the API holds of the objects *want* declares, of every managed object, of every
    consumer and key."""
    managed = {(m["kind"], m["name"]) for m in ops.client.get("/api/v1/managed")}
    names = {n for kind, n in managed if kind == "queue"} | set(want.queues if want else ())
    queues = {}
    for name in sorted(names):
        try:
            queue = ops.client.get(f"/api/v1/queues/{segment(name)}")
            queue["bindings"] = ops.client.get(f"/api/v1/queues/{segment(name)}/bindings")
        except ApiError as exc:
            if exc.status != 404:
                raise
            continue
        queues[name] = queue
    return State(
        exchanges={e["name"]: e for e in ops.client.get("/api/v1/exchanges")},
        queues=queues,
        managed=managed,
        consumers={c["name"]: c for c in every_consumer(ops)},
        keys=ops.client.get("/api/v1/keys"),
        own_key_prefix=ops.client.key_prefix,
    )


def every_consumer(ops: Context) -> list[dict[str, Any]]:
    """All consumers, read page by page when the API answers in pages."""
    answer = ops.client.get("/api/v1/consumers", page_size=500)
    if isinstance(answer, list):
        return answer
    items, page = list(answer["items"]), 1
    while answer["items"] and len(items) < answer["total"]:
        page += 1
        answer = ops.client.get("/api/v1/consumers", page=page, page_size=500)
        items += answer["items"]
    return items


def _stale(have: State) -> list[tuple[str, str]]:
    """Records of managed objects deleted some other way: forgotten, so a later object of the
    same name, made by someone else, is not taken for WorkerRMQ's."""
    return [
        (kind, name)
        for kind, name in sorted(have.managed)
        if name not in (have.queues if kind == "queue" else have.exchanges)
    ]


def _execute(ops: Context, todo: Plan) -> tuple[list[str], dict[str, str]]:
    """Make the changes in order; returns what could not be done, and new keys' tokens."""
    problems: list[str] = []
    tokens: dict[str, str] = {}
    client = ops.client
    for change in todo.changes:
        kind, name, body = change.kind, segment(change.name), change.body
        try:
            if kind in ("exchange", "queue"):
                plural = f"{kind}s"
                if change.action == "create":
                    client.post(f"/api/v1/{plural}", body)
                if change.action in ("create", "adopt"):
                    client.request("PUT", f"/api/v1/managed/{plural}/{name}")
                if change.action == "delete":
                    unused = {"if_empty": True} if kind == "queue" else {"if_unused": True}
                    client.delete(f"/api/v1/{plural}/{name}", **unused)
                    client.delete(f"/api/v1/managed/{plural}/{name}")
            elif kind == "binding":
                if change.action == "create":
                    client.post(f"/api/v1/queues/{name}/bindings", body)
                else:
                    client.delete(f"/api/v1/queues/{name}/bindings", **body)
            elif kind == "consumer":
                if change.action == "create":
                    client.post("/api/v1/consumers", body)
                elif change.action == "update":
                    client.patch(f"/api/v1/consumers/{name}", body)
                else:
                    client.delete(f"/api/v1/consumers/{name}", **body)
            elif change.action == "create":
                tokens[change.name] = client.post("/api/v1/keys", body)["key"]
            else:
                client.delete(f"/api/v1/keys/{body['id']}")
        except ApiError as exc:
            if exc.status != 409:
                raise fail(
                    f"{change}: {exc.message}; the changes before it were made", exc.exit_code
                ) from None
            problems.append(f"not done: {change}: {exc.message}")
            ops.note(problems[-1])
    return problems, tokens


@api_command(None, "export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="write to this file (default: stdout)",
)
def export(ops: Context, output: str | None) -> None:
    """Write what the API holds as an apply file (YAML): the queues and exchanges an apply
    declared, every consumer, every active API key. Secrets are left out (the signing secret,
    a password in target_url, credential headers, the secrets of auth): each becomes a
    ${...} reference, and the variables to set are listed on stderr.

    \b
    Example:
      workerrmq export -o workerrmq.yaml && workerrmq apply -f workerrmq.yaml --dry-run
    """
    document, variables = exported(read_state(ops))
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for name, where in variables.items():
        ops.note(f"set {name} for {where}")


def exported(have: State) -> tuple[dict[str, Any], dict[str, str]]:
    """The apply file for *have*, and the variables its references need."""
    variables: dict[str, str] = {}
    queues = []
    for name, q in sorted(have.queues.items()):
        item: dict[str, Any] = {"name": name, "type": q.get("type", "classic")}
        if not q.get("durable", True):
            item["durable"] = False
        if q.get("arguments"):
            item["arguments"] = q["arguments"]
        if q.get("bindings"):
            item["bindings"] = [
                {"exchange": b["exchange"], "routing_key": b["routing_key"]} for b in q["bindings"]
            ]
        queues.append(item)
    exchanges = [
        {"name": e["name"], "type": e["type"], "durable": e["durable"]}
        for name, e in sorted(have.exchanges.items())
        if ("exchange", name) in have.managed
    ]
    consumers = [_exported_consumer(c, variables) for c in have.consumers.values()]
    keys = [{"name": k["name"], "scope": k["scope"]} for k in have.keys if not k.get("revoked_at")]
    document: dict[str, Any] = {"version": 1}
    for section, items in (
        ("exchanges", exchanges),
        ("queues", queues),
        ("consumers", consumers),
        ("api_keys", keys),
    ):
        if items:
            document[section] = items
    return document, variables


def _exported_consumer(c: dict[str, Any], variables: dict[str, str]) -> dict[str, Any]:
    defaults = {**consumer_defaults(), "dead_letter_queue": dead_letter_queue_for(c["queue"])}
    item: dict[str, Any] = {"name": c["name"]}
    if c.get("source") is None:
        item["queue"] = c["queue"]  # else the API makes the queue, wrmq.<name>, from source
    for field in ["target_url", *defaults]:
        if field in ("signing_secret", "create_queue") or field not in c:
            continue
        value = c[field]
        if field in defaults and value == defaults[field]:
            continue
        item[field] = _escaped(value)
    name = c["name"]
    if isinstance(item.get("target_url"), str):
        item["target_url"] = _url_reference(item["target_url"], name, variables)
    for header, value in (item.get("headers") or {}).items():
        if HIDDEN in value or looks_secret(header, value):
            ref = env_name(name, header)
            variables[ref] = f"consumer {name!r} header {header}"
            item["headers"][header] = f"${{{ref}}}"
    auth = item.get("auth")
    if isinstance(auth, dict):
        item["auth"] = {k: v for k, v in auth.items() if v is not None}
        for key in AUTH_SECRETS:
            if key in item["auth"]:  # shown as ***: the API never gives a secret back
                ref = env_name(name, "auth", key)
                variables[ref] = f"consumer {name!r} auth.{key}"
                item["auth"][key] = f"${{{ref}}}"
    if c.get("signing") or c.get("signing_secret"):
        ref = env_name(name, "signing_secret")
        variables[ref] = f"consumer {name!r} signing_secret"
        item["signing_secret"] = f"${{{ref}}}"
    return item


def _escaped(value: Any) -> Any:
    """*value* with each ``$`` doubled, so apply reads it back as it is."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _url_reference(url: str, consumer: str, variables: dict[str, str]) -> str:
    """*url* with its password (hidden or not) as a reference."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    ref = env_name(consumer, "target_password")
    variables[ref] = f"consumer {consumer!r} target_url password"
    return url.replace(f":{parts.password}@", f":${{{ref}}}@", 1)
