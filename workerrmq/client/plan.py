"""What ``workerrmq apply`` would change: the file's objects against the API's, as a list.

Pure: :func:`plan` takes the file and the state read from the API and returns the changes
in the order they are made (exchanges, queues, bindings, consumers, keys; then what
``--prune`` removes, in reverse). A change that cannot be made (a queue's arguments differ,
which RabbitMQ cannot change) is a conflict, and nothing is changed.

Secrets: the API never shows them (the signing secret shows as ``signing: true``, others as
``***``), so a hidden value counts as unchanged. Whether a secret is set or not is compared;
``--update-secrets`` sends every secret of the file again.

A consumer with a ``source`` takes its own queue ``wrmq.<name>``, which the API declares and
binds: the plan never declares it, never prunes it as a queue, and deletes it only with its
consumer (it would otherwise fill from its exchange with no one to take the messages).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import urlsplit

from workerrmq.client.declared import Declared, consumer_defaults, looks_secret
from workerrmq.core.consumer import batch_settings, dead_letter_queue_for, redact_auth, source_queue_for
from workerrmq.core.credentials import PLACEHOLDER

__all__ = ["HIDDEN", "Change", "Plan", "State", "plan"]

#: How the API shows a credential.
HIDDEN = PLACEHOLDER


@dataclasses.dataclass
class State:
    """What the API holds, as far as apply is concerned."""

    exchanges: dict[str, dict[str, Any]]  # every exchange of the vhost
    queues: dict[str, dict[str, Any]]  # queues declared or managed that exist, with "bindings"
    managed: set[tuple[str, str]]  # ("queue" | "exchange", name)
    consumers: dict[str, dict[str, Any]]
    keys: list[dict[str, Any]]
    own_key_prefix: str | None = None  # the key apply runs with: never revoked


@dataclasses.dataclass
class Change:
    action: str  # create, update, adopt, delete
    kind: str  # exchange, queue, binding, consumer, api key
    name: str
    detail: str = ""
    body: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "adopt": "=", "delete": "-"}[self.action]
        text = f"{sign} {self.action} {self.kind} {self.name!r}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclasses.dataclass
class Plan:
    changes: list[Change] = dataclasses.field(default_factory=list)
    conflicts: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def plan(want: Declared, have: State, *, prune: bool = False, update_secrets: bool = False) -> Plan:
    """The changes that make *have* what *want* declares."""
    result = Plan()
    _exchanges(want, have, result)
    _queues(want, have, result)
    _consumers(want, have, result, update_secrets)
    _keys(want, have, result)
    if prune:
        _prune(want, have, result)
    return result


def _exchanges(want: Declared, have: State, result: Plan) -> None:
    for name, spec in want.exchanges.items():
        body = {"name": name, "type": spec.get("type", "direct"), "durable": spec.get("durable", True)}
        current = have.exchanges.get(name)
        if current is None:
            result.changes.append(Change("create", "exchange", name, body["type"], body))
            continue
        differs = [
            f"{k} {current.get(k)!r} (file: {body[k]!r})"
            for k in ("type", "durable")
            if current.get(k) != body[k]
        ]
        if differs:
            result.conflicts.append(
                f"exchange {name!r} exists with {', '.join(differs)}; an "
                "exchange cannot be changed: delete it and apply again"
            )
        elif ("exchange", name) not in have.managed:
            result.changes.append(Change("adopt", "exchange", name, "now managed by apply"))


def _queues(want: Declared, have: State, result: Plan) -> None:
    bindings: list[Change] = []
    for name, spec in want.queues.items():
        body = {
            "name": name,
            "type": spec.get("type", "classic"),
            "durable": spec.get("durable", True),
            "arguments": spec.get("arguments", {}),
        }
        current = have.queues.get(name)
        if current is None:
            result.changes.append(Change("create", "queue", name, body["type"], body))
        else:
            differs = [
                f"{k} {current.get(k)!r} (file: {body[k]!r})"
                for k in ("type", "durable", "arguments")
                if current.get(k) != body[k]
            ]
            if differs:
                result.conflicts.append(
                    f"queue {name!r} exists with {', '.join(differs)}; RabbitMQ cannot change a "
                    f"queue: delete it (workerrmq queues rm {name}) and apply again"
                )
            elif ("queue", name) not in have.managed:
                result.changes.append(Change("adopt", "queue", name, "now managed by apply"))
        bound = {(b["exchange"], b["routing_key"]) for b in (current or {}).get("bindings", [])}
        for b in spec.get("bindings", []):
            pair = (b["exchange"], b.get("routing_key", ""))
            if pair not in bound:
                bound.add(pair)
                bindings.append(
                    Change(
                        "create",
                        "binding",
                        name,
                        _binding(*pair),
                        {"exchange": pair[0], "routing_key": pair[1]},
                    )
                )
    result.changes += bindings


def _binding(exchange: str, routing_key: str) -> str:
    return f"from exchange {exchange!r} with routing key {routing_key!r}"


def queue_of(spec: dict[str, Any]) -> str:
    """The queue a consumer of the file takes: the one it names, or its own for a ``source``."""
    queue = spec.get("queue")
    return str(queue) if queue is not None else source_queue_for(spec["name"])


def desired_consumer(spec: dict[str, Any]) -> dict[str, Any]:
    """A consumer of the file with every field it left out at its default."""
    queue = queue_of(spec)
    full = {**consumer_defaults(), "dead_letter_queue": dead_letter_queue_for(queue), **spec, "queue": queue}
    full.pop("create_queue", None)
    return full


def _normalized(field: str, value: Any) -> Any:
    """*value* of *field* in the form the API keeps it, so that what a file leaves to its
    default (a headers source's ``match``, a batch's keys, an OAuth2 ``scope``) is no change."""
    if field == "source" and isinstance(value, dict) and "headers" in value:
        return {"match": "all", **value}
    if field == "batch" and isinstance(value, dict):
        return batch_settings(value)
    if field == "auth" and isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def _consumers(want: Declared, have: State, result: Plan, update_secrets: bool) -> None:
    for name, spec in want.consumers.items():
        full = desired_consumer(spec)
        current = have.consumers.get(name)
        if current is None:
            body = {k: v for k, v in spec.items() if v is not None}
            result.changes.append(Change("create", "consumer", name, _takes(spec), body))
            continue
        if (spec.get("source") is None) != (current.get("source") is None):
            result.conflicts.append(
                f"consumer {name!r} exists with {_takes(current)}, the file gives {_takes(spec)}; a "
                "consumer cannot change between a queue and a source: delete it "
                f"(workerrmq consumers rm {name}) and apply again, or give the new one another name"
            )
            continue
        body, shown = {}, []
        for field, value in full.items():
            if field in ("name", "signing_secret"):
                continue
            have_value = _normalized(field, current.get(field))
            hidden = _hidden(have_value)
            if not _same(_normalized(field, value), have_value) or (update_secrets and hidden):
                body[field] = value
                shown.append(
                    f"{field} {_show(field, have_value)} → {_show(field, value)}"
                    if not hidden or not _same(_normalized(field, value), have_value)
                    else f"{field} (resent)"
                )
        secret = full.get("signing_secret")
        signing = bool(current.get("signing") or current.get("signing_secret"))
        if (secret is not None) != signing or (update_secrets and secret is not None):
            body["signing_secret"] = secret
            shown.append(
                "signing_secret " + ("(removed)" if secret is None else "(resent)" if signing else "(set)")
            )
        if body:
            result.changes.append(Change("update", "consumer", name, "; ".join(shown), body))


def _takes(consumer: dict[str, Any]) -> str:
    """Where a consumer (of the file or the API) takes its messages from, as printed."""
    source = consumer.get("source")
    if source is None:
        return f"queue {consumer['queue']!r}"
    return f"source exchange {source['exchange']!r}, queue {source_queue_for(consumer['name'])!r}"


def _hidden(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_hidden(v) for v in value.values())
    return isinstance(value, str) and HIDDEN in value


def _same(want: Any, have: Any) -> bool:
    """Equal, where ``***`` in what the API shows stands for any hidden text."""
    if isinstance(want, dict) and isinstance(have, dict):
        return want.keys() == have.keys() and all(_same(want[k], have[k]) for k in want)
    if isinstance(want, list | tuple) and isinstance(have, list | tuple):
        return len(want) == len(have) and all(_same(w, h) for w, h in zip(want, have, strict=True))
    if isinstance(want, str) and isinstance(have, str) and HIDDEN in have:
        pattern = ".+".join(map(re.escape, have.split(HIDDEN)))
        return re.fullmatch(pattern, want, re.DOTALL) is not None
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    return bool(want == have)


def _show(field: str, value: Any) -> str:
    """A value as printed, with credentials masked."""
    if field == "headers" and isinstance(value, dict):
        value = {k: HIDDEN if looks_secret(k, v) else v for k, v in value.items()}
    elif field == "auth" and isinstance(value, dict):
        value = redact_auth(value)
    elif field == "target_url" and isinstance(value, str):
        parts = urlsplit(value)
        if parts.password and parts.password != HIDDEN:
            value = value.replace(f":{parts.password}@", f":{HIDDEN}@", 1)
    return repr(value)


def _keys(want: Declared, have: State, result: Plan) -> None:
    for name, scope in want.api_keys.items():
        same_name = [k for k in have.keys if k["name"] == name]
        active = [k for k in same_name if not k.get("revoked_at")]
        if not same_name:
            result.changes.append(Change("create", "api key", name, scope, {"name": name, "scope": scope}))
        elif not active:
            result.conflicts.append(
                f"api key {name!r} was revoked and its name cannot be used again: give the key another name"
            )
        elif active[0]["scope"] != scope:
            result.conflicts.append(
                f"api key {name!r} has scope {active[0]['scope']!r} (file: {scope!r}); a key's "
                f"scope cannot change: revoke it (workerrmq api-keys revoke {active[0]['id']}) and "
                "apply again to get a new token, or declare a key of another name"
            )


def _prune(want: Declared, have: State, result: Plan) -> None:
    for name, current in have.consumers.items():
        if name in want.consumers:
            continue
        if current.get("source") is None:
            result.changes.append(Change("delete", "consumer", name))
        else:
            result.changes.append(
                Change(
                    "delete",
                    "consumer",
                    name,
                    f"and its own queue {current['queue']!r} with the messages in it",
                    {"delete_queue": True},
                )
            )
    for name, current in have.queues.items():
        if name in want.queues:
            declared = {
                (b["exchange"], b.get("routing_key", "")) for b in want.queues[name].get("bindings", [])
            }
            for b in current.get("bindings", []):
                pair = (b["exchange"], b["routing_key"])
                if pair not in declared:
                    result.changes.append(
                        Change(
                            "delete",
                            "binding",
                            name,
                            _binding(*pair),
                            {"exchange": pair[0], "routing_key": pair[1]},
                        )
                    )
    used = {
        c[field]: c["name"]
        for c in map(desired_consumer, want.consumers.values())
        for field in ("queue", "dead_letter_queue")
    }
    for kind, name in sorted(have.managed):
        if kind == "queue" and name not in want.queues and name in have.queues:
            if name in used:
                result.notes.append(f"kept queue {name!r}: consumer {used[name]!r} uses it")
            else:
                result.changes.append(Change("delete", "queue", name, "only if empty"))
    for kind, name in sorted(have.managed):
        if kind == "exchange" and name not in want.exchanges and name in have.exchanges:
            result.changes.append(Change("delete", "exchange", name, "only if nothing is bound to it"))
    for key in have.keys:
        if key["name"] in want.api_keys or key.get("revoked_at"):
            continue
        if have.own_key_prefix and key.get("prefix") == have.own_key_prefix:
            result.notes.append(f"kept api key {key['name']!r}: apply is using it")
            continue
        result.changes.append(
            Change("delete", "api key", key["name"], f"revoke key {key['id']}", {"id": key["id"]})
        )
