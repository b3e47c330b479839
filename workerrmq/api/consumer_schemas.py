"""Schemas of ``/api/v1/consumers``."""

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
from workerrmq.credentials import PLACEHOLDER
from workerrmq.worker.headers import refused_header
from workerrmq.worker.policy import DELAY_TIERS
from workerrmq.worker.signing import secret_bytes

_RETRY_TOKEN = re.compile(r"^(connection|timeout|5xx|[45]\d\d)$")
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
    if value != PLACEHOLDER and not 16 <= len(value) <= 255:
        raise ValidationError(f"must be 16 to 255 characters ({PLACEHOLDER!r} keeps the stored one)")


class ConsumerFields(JsonBody):
    """Everything a consumer can be given; required-ness is set by the subclasses."""

    allow_nul = False  # stored in the database

    name = fields.String(validate=validate.Length(min=1, max=200))
    queue = Name()
    target_url = fields.Url(
        schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048),
        metadata={"description": "shown with its password and credential-like query values "
                                 f"as {PLACEHOLDER!r}; sending {PLACEHOLDER!r} back keeps them"})
    method = fields.String(validate=validate.OneOf(["POST", "PUT"]))
    headers = fields.Dict(
        keys=fields.String(), values=fields.String(), validate=_headers,
        metadata={"description": "credential-like headers (Authorization, *-Key, *Token*, ...) "
                                 f"are shown as {PLACEHOLDER!r}; sending {PLACEHOLDER!r} back keeps them"})
    timeout = StrictFloat(validate=validate.Range(min=0.1, max=300), metadata={"description": "s"})
    concurrency = StrictInteger(validate=validate.Range(min=1, max=1000), metadata={
        "description": "deliveries in flight, in total over the workers that run it"})
    max_attempts = StrictInteger(validate=validate.Range(min=1, max=100))
    initial_delay = StrictFloat(validate=validate.Range(min=DELAY_TIERS[0], max=DELAY_TIERS[-1]))
    max_delay = StrictFloat(validate=validate.Range(min=DELAY_TIERS[0], max=DELAY_TIERS[-1]))
    retry_on = fields.List(fields.String(validate=_retry_token), validate=validate.Length(max=50))
    signing_secret = fields.String(
        allow_none=True, validate=_signing_secret, load_only=True,
        metadata={"description": "Standard Webhooks secret (whsec_<base64>); never shown again; "
                                 f"{PLACEHOLDER!r} keeps the stored one, null removes it"},
    )
    rate_limit = StrictFloat(allow_none=True, validate=validate.Range(min=0.01, max=100_000),
                              metadata={"description": "deliveries per second"})
    ordered = StrictBoolean()
    circuit_threshold = StrictInteger(validate=validate.Range(min=1, max=100_000))
    circuit_cooldown = StrictFloat(validate=validate.Range(min=0.1, max=3600))
    dead_letter_queue = Name()
    instances = StrictInteger(
        allow_none=True, validate=validate.Range(min=1, max=10_000),
        metadata={"description": "how many workers run it (null: all); concurrency is "
                                 "shared among them"},
    )
    state = fields.String(validate=validate.OneOf(["running", "paused"]))

    @validates_schema
    def _delays(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("initial_delay", 0) > data.get("max_delay", DELAY_TIERS[-1]):
            raise ValidationError("must not be smaller than initial_delay", "max_delay")
        secret = data.get("signing_secret")
        if secret and secret.startswith("whsec_"):
            try:
                secret_bytes(secret)
            except ValueError as exc:
                raise ValidationError(str(exc), "signing_secret") from None


class ConsumerCreate(ConsumerFields):
    queue = Name(required=True)
    create_queue = StrictBoolean(load_default=False,
                                 metadata={"description": "declare the queue if it is missing"})


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
    count = StrictInteger(load_default=None, allow_none=True, validate=validate.Range(min=1),
                           metadata={"description": "how many; all when absent"})


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
