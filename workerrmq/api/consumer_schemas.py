"""Schemas of ``/api/v1/consumers``.

Each field's bounds, default and description come from
:data:`workerrmq.core.consumer.FIELDS`; what is checked here besides is the form of
what is sent (header names, ``retry_on`` tokens, placeholders).
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workerrmq.api.schemas import (
    JsonBody,
    Name,
    Strict,
    StrictBoolean,
    StrictFloat,
    StrictInteger,
)
from workerrmq.core.consumer import DEFAULTS, FIELDS, SIGNING_SECRET_LENGTH
from workerrmq.core.credentials import PLACEHOLDER
from workerrmq.core.headers import refused_header
from workerrmq.core.policy import RETRY_ON_PATTERN
from workerrmq.core.signing import secret_bytes

_RETRY_TOKEN = re.compile(RETRY_ON_PATTERN)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _retry_token(value: str) -> None:
    if not _RETRY_TOKEN.fullmatch(value):
        raise ValidationError("use 'connection', 'timeout', '5xx' or a status such as '429'")


def _headers(value: dict[str, str]) -> None:
    for name, text in value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValidationError(f"{name[:40]!r} is not a valid header name")
        if "\r" in text or "\n" in text or not text.isascii():
            raise ValidationError(f"the value of {name!r} must be printable ASCII on one line")
        reason = refused_header(name)
        if reason is not None:
            raise ValidationError(f"{name!r} cannot be configured: {reason}")


def _signing_secret(value: str) -> None:
    shortest, longest = SIGNING_SECRET_LENGTH
    if value != PLACEHOLDER and not shortest <= len(value) <= longest:
        raise ValidationError(
            f"must be {shortest} to {longest} characters ({PLACEHOLDER!r} keeps the stored one)"
        )


def _documented(name: str, extra: str = "") -> dict[str, Any]:
    """The OpenAPI description and default of consumer field *name*."""
    rule = FIELDS[name]
    described = {"description": rule.description + (f" ({rule.unit})" if rule.unit else "") + extra}
    if name in DEFAULTS and DEFAULTS[name] != "":
        default = DEFAULTS[name]
        described["default"] = list(default) if isinstance(default, tuple) else default
    return described


def _field(kind: type[fields.Field], name: str, *, extra: str = "", **kwargs: Any) -> fields.Field:
    """A request field for consumer field *name*, bounded and described by its rule."""
    rule = FIELDS[name]
    checks = list(kwargs.pop("validate", []))
    if rule.minimum is not None or rule.maximum is not None:
        checks.append(validate.Range(min=rule.minimum, max=rule.maximum))
    if rule.max_length is not None:
        checks.append(validate.Length(min=1 if kind is fields.String else None, max=rule.max_length))
    if rule.choices is not None:
        checks.append(validate.OneOf([str(choice) for choice in rule.choices]))
    return kind(validate=checks, metadata=_documented(name, extra), **kwargs)


class ConsumerFields(JsonBody):
    """Everything a consumer can be given; required-ness is set by the subclasses."""

    allow_nul = False  # stored in the database

    name = _field(fields.String, "name")
    queue = Name()
    target_url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=FIELDS["target_url"].max_length),
        metadata={
            "description": "shown with its password and credential-like query values "
            f"as {PLACEHOLDER!r}; sending {PLACEHOLDER!r} back keeps them"
        },
    )
    method = _field(fields.String, "method")
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        validate=_headers,
        metadata={
            **_documented("headers"),
            "description": "credential-like headers (Authorization, *-Key, *Token*, ...) "
            f"are shown as {PLACEHOLDER!r}; sending {PLACEHOLDER!r} back keeps them",
        },
    )
    timeout = _field(StrictFloat, "timeout")
    concurrency = _field(StrictInteger, "concurrency")
    max_attempts = _field(StrictInteger, "max_attempts")
    initial_delay = _field(StrictFloat, "initial_delay")
    max_delay = _field(StrictFloat, "max_delay")
    retry_on = fields.List(
        fields.String(validate=_retry_token),
        validate=validate.Length(max=FIELDS["retry_on"].max_length),
        metadata=_documented("retry_on"),
    )
    signing_secret = fields.String(
        allow_none=True,
        validate=_signing_secret,
        load_only=True,
        metadata={
            "description": "Standard Webhooks secret (whsec_<base64>); never shown again; "
            f"{PLACEHOLDER!r} keeps the stored one, null removes it"
        },
    )
    rate_limit = _field(StrictFloat, "rate_limit", allow_none=True)
    ordered = _field(StrictBoolean, "ordered")
    circuit_threshold = _field(StrictInteger, "circuit_threshold")
    circuit_cooldown = _field(StrictFloat, "circuit_cooldown")
    dead_letter_queue = Name(metadata=_documented("dead_letter_queue"))
    instances = _field(StrictInteger, "instances", allow_none=True)
    state = _field(fields.String, "state")

    @validates_schema
    def _delays(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("initial_delay", 0) > data.get("max_delay", FIELDS["max_delay"].maximum):
            raise ValidationError("must not be smaller than initial_delay", "max_delay")
        secret = data.get("signing_secret")
        if secret and secret.startswith("whsec_"):
            try:
                secret_bytes(secret)
            except ValueError as exc:
                raise ValidationError(str(exc), "signing_secret") from None


class ConsumerCreate(ConsumerFields):
    queue = Name(required=True)
    create_queue = StrictBoolean(
        load_default=False, metadata={"description": "declare the queue if it is missing"}
    )


class ConsumerUpdate(ConsumerFields):
    pass


class ConsumerStatsView(Schema):
    delivered = fields.Integer()
    failed = fields.Integer(metadata={"description": "failed attempts"})
    retried = fields.Integer()
    dead_lettered = fields.Integer()
    in_flight = fields.Integer()
    workers = fields.Integer()
    running_on = fields.List(fields.String(), metadata={"description": "ids of the workers"})
    status = fields.List(fields.String())
    circuit = fields.String()
    last_error = fields.String(allow_none=True)
    last_error_at = fields.String(allow_none=True)
    latency_p50_ms = fields.Float(allow_none=True)
    latency_p99_ms = fields.Float(allow_none=True)


class Consumer(ConsumerFields):
    id = fields.String(required=True)
    signing = fields.Boolean(metadata={"description": "requests are signed"})
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    stats = fields.Nested(ConsumerStatsView)


class ConsumerListArgs(Strict):
    queue = Name(metadata={"description": "only the consumers of this queue"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class ConsumerPage(Schema):
    items = fields.List(fields.Nested(Consumer), required=True)
    page = fields.Integer()
    page_size = fields.Integer()
    total = fields.Integer()


class DeadLetterArgs(Strict):
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=500))


class DeadLetter(Schema):
    message_id = fields.String(allow_none=True)
    payload = fields.String(allow_none=True)
    payload_encoding = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    attempts = fields.Integer(allow_none=True)
    last_status = fields.Raw(allow_none=True)
    last_error = fields.String(allow_none=True)
    dead_lettered_at = fields.String(allow_none=True)
    headers = fields.Dict()


class DeadLetterPage(Schema):
    items = fields.List(fields.Nested(DeadLetter))
    offset = fields.Integer()
    limit = fields.Integer()
    total = fields.Integer()


class ReplayRequest(JsonBody):
    count = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1),
        metadata={"description": "how many; all when absent"},
    )


class ReplayResult(Schema):
    replayed = fields.Integer(required=True)


class SeedConsumerCreate(ConsumerFields):
    queueName = Name(required=True)  # noqa: N815 - the seed's field name
    create_queue = StrictBoolean(load_default=False)


class SeedConsumerRef(JsonBody):
    allow_nul = False  # looked up in the database

    queueName = fields.String(validate=validate.Length(min=1, max=255))  # noqa: N815
    name = fields.String(validate=validate.Length(min=1, max=200))
    id = fields.String(validate=validate.Length(min=1, max=64))

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("give queueName, name or id", "queueName")


class SeedConsumer(Consumer):
    queueName = fields.String()  # noqa: N815
    consumerId = fields.String()  # noqa: N815
