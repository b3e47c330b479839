"""The ``workerrmq apply`` file: read, checked against its JSON Schema, secrets resolved.

Checks run before anything is sent, in this order: the YAML parses; no secret is written
inline (a signing secret, a password in ``target_url``, a credential-looking header value or
a secret of ``auth`` must be a ``${ENV_NAME}`` reference); no queue declared is a ``source``
consumer's own (``wrmq.``); the file matches ``apply-schema.json``; names are unique; every
reference names a set variable. Each error names its place, e.g. ``consumers[0].timeout``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from workerrmq.core import credentials
from workerrmq.core.consumer import AUTH_SECRETS, SOURCE_QUEUE_PREFIX

__all__ = [
    "Declared",
    "FileProblem",
    "consumer_defaults",
    "env_name",
    "load",
    "looks_secret",
    "schema",
]

_REFERENCE = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_SECRET_VALUE = re.compile(r"^(bearer|basic|token|digest)\s+\S", re.IGNORECASE)


class FileProblem(Exception):
    """The file cannot be applied; the message names the place in it."""


@cache
def schema() -> dict[str, Any]:
    """The file's JSON Schema (``workerrmq apply --schema`` prints it)."""
    text = resources.files("workerrmq.client").joinpath("apply-schema.json").read_text("utf-8")
    found: dict[str, Any] = json.loads(text)
    return found


def consumer_defaults() -> dict[str, Any]:
    """What a consumer field left out of the file means, from the schema's ``default``s."""
    fields = schema()["$defs"]["consumer"]["properties"]
    return {name: spec["default"] for name, spec in fields.items() if "default" in spec}


def looks_secret(header: str, value: str = "") -> bool:
    """True for a header whose value is a credential, by its name (the rule the API shows
    credentials by) or its value; such values must come from the environment."""
    return credentials.looks_secret(header) or bool(_SECRET_VALUE.match(value))


def env_name(*parts: str) -> str:
    """A variable name suggested for a secret, e.g. ``WORKERRMQ_ORDERS_RELAY_SIGNING_SECRET``."""
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(("WORKERRMQ", *parts)).upper()).strip("_")


@dataclasses.dataclass
class Declared:
    """The file's objects, references resolved, keyed by name in file order."""

    exchanges: dict[str, dict[str, Any]]
    queues: dict[str, dict[str, Any]]
    consumers: dict[str, dict[str, Any]]
    api_keys: dict[str, str]


def load(text: str, environ: Mapping[str, str] | None = None) -> Declared:
    """Parse and check *text*; raises :class:`FileProblem`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileProblem(f"not valid YAML: {exc}") from None
    _refuse_inline_secrets(raw)
    _refuse_source_queues(raw)
    errors = sorted(
        jsonschema.Draft202012Validator(schema()).iter_errors(raw),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        raise FileProblem("\n".join(f"{_path(e.absolute_path)}: {e.message}" for e in errors))
    resolved = _resolve(raw, os.environ if environ is None else environ, ())
    declared = Declared(
        exchanges=_by_name(resolved, "exchanges"),
        queues=_by_name(resolved, "queues"),
        consumers=_by_name(resolved, "consumers"),
        api_keys={k["name"]: k["scope"] for k in _by_name(resolved, "api_keys").values()},
    )
    return declared


def _refuse_source_queues(raw: Any) -> None:
    """The ``wrmq.`` queues are the own queues of ``source`` consumers, made and bound by the
    API from the source (which refuses to create one otherwise): a file cannot declare one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("queues"), list):
        return
    for i, queue in enumerate(raw["queues"]):
        name = queue.get("name") if isinstance(queue, dict) else None
        if isinstance(name, str) and name.startswith(SOURCE_QUEUE_PREFIX):
            raise FileProblem(
                f"queues[{i}].name: {name!r}: the {SOURCE_QUEUE_PREFIX} prefix is reserved for the own "
                "queues of consumers with a source, which the API declares and binds from the "
                "source: leave it out of queues"
            )


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def _by_name(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(data.get(section) or []):
        if item["name"] in items:
            raise FileProblem(f"{section}[{i}].name: {item['name']!r} is declared twice")
        items[item["name"]] = item
    return items


def _consumers(raw: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(raw, dict) and isinstance(raw.get("consumers"), list):
        for i, consumer in enumerate(raw["consumers"]):
            if isinstance(consumer, dict):
                yield i, consumer


def _refuse_inline_secrets(raw: Any) -> None:
    """A secret written in the file would end up in git: only references are accepted."""
    hint = "write it as ${ENV_NAME} and set that variable where apply runs"
    for i, consumer in _consumers(raw):
        where = f"consumers[{i}]"
        secret = consumer.get("signing_secret")
        if isinstance(secret, str) and not _WHOLE_REFERENCE.match(secret):
            raise FileProblem(f"{where}.signing_secret: a secret must not be written in the file; {hint}")
        url = consumer.get("target_url")
        if isinstance(url, str):
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password and not _WHOLE_REFERENCE.match(password):
                raise FileProblem(f"{where}.target_url: the password must not be written in the file; {hint}")
        auth = consumer.get("auth")
        if isinstance(auth, dict):
            for key in AUTH_SECRETS:
                value = auth.get(key)
                if isinstance(value, str) and not _WHOLE_REFERENCE.match(value):
                    raise FileProblem(f"{where}.auth.{key}: a secret must not be written in the file; {hint}")
        headers = consumer.get("headers")
        if isinstance(headers, dict):
            for name, value in headers.items():
                if (
                    isinstance(value, str)
                    and looks_secret(str(name), value)
                    and _REFERENCE.search(value) is None
                    and value
                ):
                    raise FileProblem(
                        f"{where}.headers.{name}: this looks like a credential and "
                        f"must not be written in the file; {hint}"
                    )


def _resolve(value: Any, environ: Mapping[str, str], where: tuple[Any, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, environ, (*where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, environ, (*where, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2)
        if name not in environ:
            raise FileProblem(f"{_path(where)}: environment variable {name} is not set")
        return environ[name]

    return _REFERENCE.sub(substitute, value)
