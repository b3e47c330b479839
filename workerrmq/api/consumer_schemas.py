"""Schemas of ``/api/v1/consumers``.

Each field's bounds, default and description come from
:data:`workerrmq.core.consumer.FIELDS`; what is checked here besides is the form of
what is sent (header names, ``retry_on`` tokens, placeholders).
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from workerrmq.api.schemas import (
    JsonBody,
    Name,
    Strict,
    StrictBoolean,
    StrictFloat,
    StrictInteger,
    max_bytes,
)
from workerrmq.core.consumer import (
    AUTH_SECRETS,
    BATCH_DEFAULTS,
    BATCH_FIELDS,
    DEFAULTS,
    FIELDS,
    SIGNING_SECRET_LENGTH,
    SOURCE_MATCH,
)
from workerrmq.core.credentials import PLACEHOLDER
from workerrmq.core.dead_letters import DeadLetterSelector
from workerrmq.core.endpoint_auth import AuthInvalid, check_auth
from workerrmq.core.headers import refused_header
from workerrmq.core.policy import RETRY_ON_PATTERN
from workerrmq.core.signing import ROTATION_GRACE, ROTATION_GRACE_MAX, secret_bytes

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
    described: dict[str, Any] = {
        "description": rule.description + (f" ({rule.unit})" if rule.unit else "") + extra
    }
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


# -- subscription fields ---------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Most binding keys (or headers) one ``source`` may bind with.
SOURCE_BINDINGS_MAX = 100
_INT64 = 2**63


def _one_line(value: str) -> None:
    found = _CONTROL.search(value)
    if found is not None:
        raise ValidationError(
            f"must not contain control characters such as CR, LF or NUL (found {found.group()!r})"
        )


def _text(*, required: bool = True, longest: int, shortest: int = 1, **kwargs: Any) -> fields.String:
    """A one-line text field of *shortest* to *longest* characters."""
    checks = [validate.Length(min=shortest, max=longest), _one_line, *kwargs.pop("validate", [])]
    return fields.String(required=required, validate=checks, **kwargs)


def _binding_value(value: Any) -> None:
    """A header value a headers exchange can match: text, an integer or a boolean."""
    if isinstance(value, str):
        if len(value) > 255:
            raise ValidationError("must be at most 255 characters")
        _one_line(value)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValidationError("integers must fit in 64 bits (signed)")
    else:
        raise ValidationError("must be text, an integer or a boolean")


def _binding_header(name: str) -> None:
    _one_line(name)
    if name.lower().startswith("x-"):
        raise ValidationError(
            f"{name[:40]!r}: headers starting with 'x-' are not matched by a headers exchange"
        )


class Source(Strict):
    """Where a ``source`` consumer's own queue takes messages from."""

    exchange = Name(required=True, metadata={"description": "an exchange that exists"})
    binding_keys = fields.List(
        _text(longest=255, shortest=0, validate=[max_bytes(255)]),
        validate=validate.Length(min=1, max=SOURCE_BINDINGS_MAX),
        metadata={"description": "topic, direct or fanout exchange: the queue is bound with each key"},
    )
    match = fields.String(
        validate=validate.OneOf(SOURCE_MATCH),
        metadata={"description": "headers exchange: every header must match (all, default) or one (any)"},
    )
    headers = fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=128), _binding_header]),
        values=fields.Raw(validate=_binding_value),
        validate=validate.Length(max=SOURCE_BINDINGS_MAX),
        metadata={"description": "headers exchange: the headers to match"},
    )

    @validates_schema
    def _one_shape(self, data: dict[str, Any], **_: Any) -> None:
        if ("binding_keys" in data) == ("headers" in data):
            raise ValidationError("give binding_keys (topic, direct, fanout) or headers (headers exchange)")
        if "match" in data and "headers" not in data:
            raise ValidationError("match goes with headers (a headers exchange)", "match")

    @post_load
    def _default_match(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "headers" in data:
            data.setdefault("match", SOURCE_MATCH[0])
        return data


class Batch(Strict):
    """How deliveries are grouped; keys left out take their defaults."""

    max_messages = StrictInteger(
        load_default=BATCH_DEFAULTS["max_messages"],
        validate=validate.Range(
            min=BATCH_FIELDS["max_messages"].minimum, max=BATCH_FIELDS["max_messages"].maximum
        ),
        metadata={"description": BATCH_FIELDS["max_messages"].description},
    )
    max_wait_ms = StrictInteger(
        load_default=BATCH_DEFAULTS["max_wait_ms"],
        validate=validate.Range(
            min=BATCH_FIELDS["max_wait_ms"].minimum, max=BATCH_FIELDS["max_wait_ms"].maximum
        ),
        metadata={"description": BATCH_FIELDS["max_wait_ms"].description},
    )
    encoding = fields.String(
        load_default=BATCH_DEFAULTS["encoding"],
        validate=validate.OneOf(BATCH_FIELDS["encoding"].choices or ()),
        metadata={"description": BATCH_FIELDS["encoding"].description},
    )


class Auth(fields.Dict):
    """An ``auth`` object, checked by :func:`workerrmq.core.endpoint_auth.check_auth`.

    With a ``***`` secret (sent back as read, keeping the stored one) only its type and
    keys are checked here; the service checks it whole once the stored secret is in place.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        kept = isinstance(value, dict) and PLACEHOLDER in (value.get(key) for key in AUTH_SECRETS)
        try:
            if not kept:
                return check_auth(value)
            # A stand-in for a kept secret passes every check but a key's, which is left out.
            check_auth(
                {**value, "key_pem": None}
                if value.get("type") == "mtls"
                else {k: "x" if v == PLACEHOLDER and k in AUTH_SECRETS else v for k, v in value.items()}
            )
        except AuthInvalid as exc:
            if not (kept and exc.field == "auth.key_pem"):
                raise ValidationError(_auth_problem(exc)) from None
        return dict(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


def _auth_problem(exc: AuthInvalid) -> Any:
    """*exc* as marshmallow messages, nested by field: the 400 names ``auth.<field>``."""
    field = exc.field.removeprefix("auth").lstrip(".")
    problem = exc.message.removeprefix(exc.field).strip()
    return {field: [problem]} if field else [problem]


def _filter(expression: str) -> None:
    """Compile *expression* when the filter module is there: a bad one is refused on save."""
    try:
        module = importlib.import_module("workerrmq.core.filter")
    except ImportError:
        return
    try:
        module.compile_filter(expression)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _uri_reference(value: str) -> None:
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        raise ValidationError("must be a URI reference: no spaces or control characters")


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
    source = fields.Nested(
        Source,
        allow_none=True,
        metadata={
            **_documented("source"),
            "description": FIELDS["source"].description + "; it must exist (else 404)",
        },
    )
    filter = _field(fields.String, "filter", allow_none=True, validate=[_filter])
    format = _field(fields.String, "format")
    ce_source = _field(fields.String, "ce_source", allow_none=True, validate=[_uri_reference])
    auth = Auth(
        allow_none=True,
        metadata={
            **_documented("auth"),
            "description": FIELDS["auth"].description
            + ": {type: bearer, token}, {type: basic, username, password}, "
            "{type: oauth2, token_url, client_id, client_secret, scope?}, "
            "{type: mtls, cert_pem, key_pem, ca_pem?}; "
            f"{', '.join(AUTH_SECRETS)} are shown as {PLACEHOLDER!r}, "
            f"and sending {PLACEHOLDER!r} back keeps them",
        },
    )
    reply = _field(StrictBoolean, "reply")
    batch = fields.Nested(Batch, allow_none=True, metadata=_documented("batch"))
    degraded_after = _field(StrictFloat, "degraded_after")

    @validates_schema
    def _delays(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("initial_delay", 0) > data.get("max_delay", FIELDS["max_delay"].maximum):
            raise ValidationError("must not be smaller than initial_delay", "max_delay")
        if data.get("source") is not None and "queue" in data:
            raise ValidationError(
                "give queue or source, not both (source makes the queue wrmq.<name>)", "source"
            )
        secret = data.get("signing_secret")
        if secret and secret.startswith("whsec_"):
            try:
                secret_bytes(secret)
            except ValueError as exc:
                raise ValidationError(str(exc), "signing_secret") from None


class ConsumerCreate(ConsumerFields):
    queue = Name(metadata={"description": "required unless source is given"})
    create_queue = StrictBoolean(
        load_default=False, metadata={"description": "declare the queue if it is missing"}
    )

    @validates_schema
    def _queue_or_source(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("source") is None and "queue" not in data:
            raise ValidationError("Missing data for required field (or give source).", "queue")
        if data.get("source") is not None and "name" not in data:
            raise ValidationError("required with source: the consumer's queue is wrmq.<name>", "name")
        if data.get("source") is not None and data.get("create_queue"):
            raise ValidationError(
                "goes with queue: a source consumer's queue is always created", "create_queue"
            )


class ConsumerUpdate(ConsumerFields):
    pass


class ConsumerDeleteArgs(Strict):
    delete_queue = fields.Boolean(
        load_default=False,
        metadata={"description": "also delete the queue WorkerRMQ declared for a source consumer"},
    )


class ConsumerStatsView(Schema):
    delivered = fields.Integer()
    failed = fields.Integer(metadata={"description": "failed attempts"})
    retried = fields.Integer()
    dead_lettered = fields.Integer()
    filtered = fields.Integer(
        metadata={"description": "messages the filter was false for: acked, not delivered"}
    )
    filter_errors = fields.Integer(
        metadata={"description": "messages the filter failed on (a type mismatch, say): acked, not delivered"}
    )
    replies = fields.Integer(metadata={"description": "answers published to the messages' reply_to"})
    replies_unroutable = fields.Integer(metadata={"description": "answers no queue took"})
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
    signing_previous_until = fields.DateTime(
        attribute="signing_secret_previous_until",
        dump_only=True,
        allow_none=True,
        metadata={"description": "until when requests also carry the replaced secret's signature"},
    )
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    health = fields.String(
        dump_only=True,
        metadata={
            "description": "degraded: its circuit stayed open, or its dead-letter queue grew, "
            "for longer than degraded_after; else ok",
            "enum": ["ok", "degraded"],
        },
    )
    degraded_reason = fields.String(
        dump_only=True, allow_none=True, metadata={"description": "why it is degraded"}
    )
    degraded_since = fields.String(
        dump_only=True, allow_none=True, metadata={"description": "when it was marked degraded (ISO 8601)"}
    )
    stats = fields.Nested(ConsumerStatsView)


class SecretRotation(JsonBody):
    grace_seconds = StrictInteger(
        load_default=ROTATION_GRACE,
        validate=validate.Range(0, ROTATION_GRACE_MAX),
        metadata={
            "description": "how long requests also carry the replaced secret's signature, in seconds "
            f"(0 to {ROTATION_GRACE_MAX}; default {ROTATION_GRACE})"
        },
    )
    secret = fields.String(
        validate=_signing_secret,
        metadata={"description": "the new secret (whsec_<base64>); default: 32 random bytes"},
    )

    @validates_schema
    def _whsec(self, data: dict[str, Any], **_: Any) -> None:
        secret = data.get("secret")
        if secret == PLACEHOLDER:
            raise ValidationError(f"{PLACEHOLDER!r} stands for a stored secret; give the new one", "secret")
        if secret and not secret.isprintable():
            raise ValidationError("must not contain control characters", "secret")
        if secret and secret.startswith("whsec_"):
            try:
                secret_bytes(secret)
            except ValueError as exc:
                raise ValidationError(str(exc), "secret") from None


class ConsumerWithSecret(Consumer):
    signing_secret = fields.String(
        dump_only=True, metadata={"description": "the new signing secret; shown in this answer only"}
    )


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


_SELECTOR_IDS_MAX = 1000


class _Selectors(Schema):
    """The conditions that pick dead letters (:class:`DeadLetterSelector`); each given must hold."""

    message_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=255)),
        validate=validate.Length(min=1, max=_SELECTOR_IDS_MAX),
        metadata={"description": f"only these message ids (at most {_SELECTOR_IDS_MAX})"},
    )
    since = fields.AwareDateTime(
        format="iso",
        default_timezone=dt.UTC,
        metadata={"description": "dead-lettered at or after (ISO 8601; UTC if no zone)"},
    )
    until = fields.AwareDateTime(
        format="iso", default_timezone=dt.UTC, metadata={"description": "dead-lettered before (ISO 8601)"}
    )
    status = fields.String(
        validate=validate.Regexp(
            r"^([1-5][0-9][0-9]|[A-Za-z]{1,20}|HTTP [1-5][0-9][0-9])$",
            error="use an HTTP status such as 503, or an error kind such as timeout",
        ),
        metadata={"description": "last HTTP status (503) or error kind (connection, timeout, HTTP 503)"},
    )
    error_contains = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "the last error holds this text (case-insensitive)"},
    )

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("must be later than since", "until")


def selector_of(args: dict[str, Any]) -> DeadLetterSelector:
    """The :class:`DeadLetterSelector` of loaded request *args*."""
    ids = args.get("message_ids")
    return DeadLetterSelector(
        message_ids=frozenset(ids) if ids is not None else None,
        since=args.get("since"),
        until=args.get("until"),
        status=args.get("status"),
        error_contains=args.get("error_contains"),
    )


class ReplayRequest(JsonBody, _Selectors):
    count = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1),
        metadata={"description": "at most this many; all that match when absent"},
    )


class ReplayResult(Schema):
    replayed = fields.Integer(required=True, metadata={"description": "moved (the older name)"})
    matched = fields.Integer(required=True, metadata={"description": "dead letters the selectors picked"})
    moved = fields.Integer(required=True, metadata={"description": "moved back to the queue"})
    remaining = fields.Integer(required=True, metadata={"description": "left in the dead-letter queue"})


class DiscardArgs(Strict, _Selectors):
    """Selectors in the query (``message_ids`` repeated); ``all=true`` with none at all."""

    all = fields.Boolean(load_default=False, metadata={"description": "discard every dead letter"})


class DiscardRequest(JsonBody, _Selectors):
    """Selectors in a JSON body instead of the query."""

    all = StrictBoolean(metadata={"description": "discard every dead letter"})


class DiscardResult(Schema):
    matched = fields.Integer(required=True)
    discarded = fields.Integer(required=True)
    remaining = fields.Integer(required=True)


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
