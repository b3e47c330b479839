"""The consumer: what a definition holds, and every field's default, bounds and meaning.

This is the one place they are written. The database's defaults
(:mod:`workerrmq.store.models`), the API's request schema
(:mod:`workerrmq.api.consumer_schemas`) and the ``workerrmq consumers create`` help
read them from :data:`FIELDS`; the README's table and ``apply``'s file schema are
tested against it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from workerrmq.core.credentials import PLACEHOLDER, PlaceholderUnmatched
from workerrmq.core.endpoint_auth import SECRET_FIELDS
from workerrmq.core.policy import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    DEFAULT_RETRY_ON,
    DELAY_TIERS,
    RetryPolicy,
)
from workerrmq.core.status import ConsumerState

__all__ = [
    "AUTH_SECRETS",
    "BATCH_DEFAULTS",
    "BATCH_FIELDS",
    "DEFAULTS",
    "FIELDS",
    "FORMATS",
    "SIGNING_SECRET_LENGTH",
    "SOURCE_MATCH",
    "SOURCE_QUEUE_PREFIX",
    "ConsumerSpec",
    "FieldRule",
    "batch_settings",
    "dead_letter_queue_for",
    "redact_auth",
    "restore_auth",
    "source_queue_for",
]

#: How long a signing secret may be, in characters.
SIGNING_SECRET_LENGTH = (16, 255)

#: How a message is sent: the body as is, or as a CloudEvent (HTTP binding, either mode).
FORMATS = ("raw", "cloudevents-binary", "cloudevents-structured")

#: The keys of ``auth`` that hold secrets: write-only, shown as ``***``, encrypted at rest
#: (:mod:`workerrmq.core.endpoint_auth` says which shapes ``auth`` takes).
AUTH_SECRETS = tuple(sorted(SECRET_FIELDS))

#: How a headers-exchange ``source`` matches: every header it lists, or any one of them.
SOURCE_MATCH = ("all", "any")
#: A ``source`` consumer's own queue is this prefix and its name (see :func:`source_queue_for`).
SOURCE_QUEUE_PREFIX = "wrmq."


def source_queue_for(name: str) -> str:
    """The queue WorkerRMQ declares and binds for the ``source`` consumer named *name*."""
    return f"{SOURCE_QUEUE_PREFIX}{name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldRule:
    """What one field of a consumer means and which values it takes.

    *minimum* and *maximum* bound a number (inclusive), *max_length* a text,
    *choices* list the values a text may take; *unit* is how a number is counted.
    """

    description: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    unit: str | None = None

    def help(self, default: Any = None) -> str:
        """One line for a command's ``--help``: the meaning, the range and the default."""
        text = self.description
        if self.minimum is not None and self.maximum is not None:
            text += f"; {_number(self.minimum)} to {_number(self.maximum)}"
        if self.unit:
            text += f" {self.unit}"
        if default is not None:
            text += f" (default {_number(default)})"
        return text


#: What each key of ``batch`` takes; :data:`BATCH_DEFAULTS` fills the ones left out.
BATCH_FIELDS: Mapping[str, FieldRule] = {
    "max_messages": FieldRule(description="most messages in one request", minimum=1, maximum=1000),
    "max_wait_ms": FieldRule(
        description="longest wait for a batch to fill", minimum=1, maximum=60_000, unit="ms"
    ),
    "encoding": FieldRule(description="how the items are written", choices=("json-array", "ndjson")),
}
BATCH_DEFAULTS: Mapping[str, Any] = {"max_messages": 100, "max_wait_ms": 50, "encoding": "json-array"}


def batch_settings(batch: Mapping[str, Any]) -> dict[str, Any]:
    """*batch* (a consumer's ``batch``) with every key it leaves out at its default."""
    return {**BATCH_DEFAULTS, **batch}


def redact_auth(auth: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """*auth* with each secret replaced by ``***``: what may be shown, stored plain or logged."""
    if auth is None:
        return None
    return {key: PLACEHOLDER if key in AUTH_SECRETS else value for key, value in auth.items()}


def restore_auth(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """*new* with each ``***`` secret replaced by the stored one of *old*, so a consumer read
    and sent back keeps its secrets. Raises :class:`PlaceholderUnmatched` where *old* holds
    none of that ``type``: a placeholder cannot carry a token to another kind of auth, nor an
    OAuth2 client secret to a ``token_url`` on another scheme, host or port (whoever may edit
    the consumer but not read its secret would have it sent to a server of theirs)."""
    if new is None:
        return None
    restored = dict(new)
    for key in AUTH_SECRETS:
        if restored.get(key) != PLACEHOLDER:
            continue
        if old is None or old.get("type") != new.get("type") or old.get(key) is None:
            raise PlaceholderUnmatched(
                f"auth.{key}: {PLACEHOLDER!r} keeps a stored secret, and there is none of "
                f"type {new.get('type')!r}; send the secret itself",
                field=f"auth.{key}",
            )
        if key == "client_secret" and url_origin(new.get("token_url")) != url_origin(old.get("token_url")):
            raise PlaceholderUnmatched(
                f"auth.{key}: {PLACEHOLDER!r} keeps the stored secret only for a token_url on the "
                "same scheme, host and port; send the secret itself",
                field=f"auth.{key}",
            )
        restored[key] = old[key]
    return restored


def url_origin(url: Any) -> tuple[str, str, int | None] | None:
    """A URL's scheme, host and port (the default one filled in), or None if it has none."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field(
    default: Any = dataclasses.MISSING,
    *,
    rule: FieldRule,
    factory: Any = dataclasses.MISSING,
    repr: bool = True,
) -> Any:  # noqa: A002 - dataclasses.field's own name
    metadata = {"rule": rule}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, repr=repr, metadata=metadata)
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A consumer definition: forward each message of ``queue`` to ``target_url``.

    It holds the credentials themselves: show it through
    :func:`workerrmq.core.credentials.redact_url` and ``redact_headers``, never as is.
    """

    id: str
    name: str = _field(rule=FieldRule(description="its name, unique", max_length=200))
    queue: str = _field(rule=FieldRule(description="the queue whose messages it delivers"))
    target_url: str = _field(
        rule=FieldRule(description="where to deliver (http or https)", max_length=2048), repr=False
    )
    method: str = _field("POST", rule=FieldRule(description="the request method", choices=("POST", "PUT")))
    headers: Mapping[str, str] = _field(
        rule=FieldRule(description="headers sent with every request"), factory=dict, repr=False
    )
    timeout: float = _field(
        10.0, rule=FieldRule(description="how long one request may take", minimum=0.1, maximum=300, unit="s")
    )
    concurrency: int = _field(
        32,
        rule=FieldRule(
            description="deliveries in flight, in total over the workers that run it", minimum=1, maximum=1000
        ),
    )
    max_attempts: int = _field(
        DEFAULT_MAX_ATTEMPTS,
        rule=FieldRule(description="attempts before a message is dead-lettered", minimum=1, maximum=100),
    )
    initial_delay: float = _field(
        DEFAULT_INITIAL_DELAY,
        rule=FieldRule(
            description="the wait before the first retry, doubling each time",
            minimum=DELAY_TIERS[0],
            maximum=DELAY_TIERS[-1],
            unit="s",
        ),
    )
    max_delay: float = _field(
        DEFAULT_MAX_DELAY,
        rule=FieldRule(
            description="the longest wait between two attempts",
            minimum=DELAY_TIERS[0],
            maximum=DELAY_TIERS[-1],
            unit="s",
        ),
    )
    retry_on: tuple[str, ...] = _field(
        DEFAULT_RETRY_ON,
        rule=FieldRule(
            description="outcomes that are retried: connection, timeout, 5xx or a status such as 429",
            max_length=50,
        ),
    )
    signing_secret: str | None = _field(
        None, rule=FieldRule(description="Standard Webhooks secret (whsec_<base64>)"), repr=False
    )
    rate_limit: float | None = _field(
        None, rule=FieldRule(description="deliveries per second", minimum=0.01, maximum=100_000)
    )
    ordered: bool = _field(False, rule=FieldRule(description="one message at a time, retried in place"))
    circuit_threshold: int = _field(
        10,
        rule=FieldRule(
            description="consecutive failures that open the circuit (no messages taken)",
            minimum=1,
            maximum=100_000,
        ),
    )
    circuit_cooldown: float = _field(
        30.0,
        rule=FieldRule(
            description="how long an open circuit takes no messages", minimum=0.1, maximum=3600, unit="s"
        ),
    )
    dead_letter_queue: str = _field(
        "", rule=FieldRule(description="where undeliverable messages go (default: <queue>.dlq)")
    )
    instances: int | None = _field(
        None,
        rule=FieldRule(
            description="how many workers run it (null: all); concurrency is shared among them",
            minimum=1,
            maximum=10_000,
        ),
    )
    state: ConsumerState = _field(
        ConsumerState.RUNNING,
        rule=FieldRule(description="whether its messages are delivered", choices=tuple(ConsumerState)),
    )
    source: Mapping[str, Any] | None = _field(
        None,
        rule=FieldRule(
            description="an exchange and its binding keys (or match and headers) to take messages from, "
            "into the consumer's own queue wrmq.<name>, instead of queue"
        ),
    )
    filter: str | None = _field(
        None,
        rule=FieldRule(
            description="a CEL expression over routing_key, headers, properties and body; "
            "messages it is false for are acked, not delivered",
            max_length=4096,
        ),
    )
    format: str = _field(
        "raw",
        rule=FieldRule(description="how a message is sent: the body as is, or a CloudEvent", choices=FORMATS),
    )
    ce_source: str | None = _field(
        None,
        rule=FieldRule(
            description="the CloudEvents source attribute (default: /workerrmq/<queue>)", max_length=2048
        ),
    )
    auth: Mapping[str, Any] | None = _field(
        None,
        rule=FieldRule(description="how requests authenticate: bearer, basic, oauth2 or mtls"),
        repr=False,
    )
    reply: bool = _field(
        False, rule=FieldRule(description="publish the endpoint's 2xx answer to the message's reply_to")
    )
    batch: Mapping[str, Any] | None = _field(
        None, rule=FieldRule(description="send up to max_messages messages in one request")
    )
    degraded_after: float = _field(
        300.0,
        rule=FieldRule(
            description="how long an open circuit or a growing dead-letter queue lasts before the "
            "consumer is marked degraded",
            minimum=1,
            maximum=86_400,
            unit="s",
        ),
    )
    # Set by a signing-secret rotation, not by a definition: requests carry a signature with
    # this secret too until signing_secret_previous_until.
    signing_secret_previous: str | None = dataclasses.field(default=None, repr=False)
    signing_secret_previous_until: dt.datetime | None = None
    version: int = 1
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def retry_policy(self) -> RetryPolicy:
        """The retry policy this definition sets."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            retry_on=self.retry_on,
        )


def _rules() -> dict[str, FieldRule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(ConsumerSpec) if "rule" in f.metadata}


def _defaults() -> dict[str, Any]:
    found = {}
    for f in dataclasses.fields(ConsumerSpec):
        if "rule" not in f.metadata:
            continue
        if f.default is not dataclasses.MISSING:
            found[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            found[f.name] = f.default_factory()
    return found


#: Each field a definition sets (``id``, ``version`` and the times are the store's), with its rule.
FIELDS: Mapping[str, FieldRule] = _rules()
#: What each field that may be left out is when it is (``dead_letter_queue``'s ``""``:
#: see :func:`dead_letter_queue_for`).
DEFAULTS: Mapping[str, Any] = _defaults()


def dead_letter_queue_for(queue: str) -> str:
    """The dead-letter queue of a consumer of *queue* that names none."""
    return f"{queue}.dlq"
