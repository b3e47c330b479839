"""Request and response schemas. They validate requests and generate ``/openapi.json``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from workerrmq.core.scopes import SCOPES
from workerrmq.services.names import NAME_MAX, NAME_PATTERN


class FullMatch(validate.Regexp):
    """``validate.Regexp`` over the whole value: ``re.match`` with ``$`` lets a trailing
    newline through. apispec still documents the pattern."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


# A list, not validate.And: apispec documents each validator (maxLength, pattern) of a list.
_name = [
    validate.Length(min=1, max=NAME_MAX),
    FullMatch(NAME_PATTERN, error="may only contain ASCII letters, digits and _ . : -"),
]


def Name(**kwargs: Any) -> fields.String:  # noqa: N802 - reads like a field class
    return fields.String(validate=_name, **kwargs)


def max_bytes(limit: int) -> validate.Validator:
    """At most *limit* bytes in UTF-8: AMQP short strings are counted in bytes, not characters."""

    class MaxBytes(validate.Validator):
        def __call__(self, value: str) -> str:
            if len(value.encode("utf-8", "surrogatepass")) > limit:
                raise ValidationError(f"must be at most {limit} bytes in UTF-8")
            return value

    return MaxBytes()


#: Characters no HTTP header value may hold (tab is allowed): CR, LF, NUL and the other
#: controls. The worker sends message properties on as request headers, and aiohttp
#: refuses a request holding one (the message would be dead-lettered).
HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_safe(value: str) -> str:
    """Refuse text that could not be sent on as an HTTP header value."""
    found = HEADER_UNSAFE.search(value)
    if found is not None:
        raise ValidationError(
            f"must not contain control characters such as CR, LF or NUL (found "
            f"{found.group()!r}): it is sent to the endpoint as an HTTP header"
        )
    return value


# -- JSON bodies: the types they document, and text that can be sent on ---------------------


class StrictInteger(fields.Integer):
    """A JSON integer. marshmallow's own casts ``"12"`` to 12 and 2.5 (or 1e-42) to 2 (0)."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema counts 5.0 as an integer
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class StrictFloat(fields.Float):
    """A JSON number, not a string holding one."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class StrictBoolean(fields.Boolean):
    """``true`` or ``false``; not ``1``, ``"yes"`` or ``"on"``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _bad_text(data: Any, *, allow_nul: bool) -> tuple[str, str] | None:
    """(dotted path, problem) of a string in *data* (keys included) that cannot be
    passed on, or None.

    JSON may escape lone surrogates (``"\\udcff"``), which no UTF-8 encoder takes;
    PostgreSQL text cannot hold NUL.
    """
    for where, text in _leaves(data, lambda v: _text_problem(v, allow_nul=allow_nul)):
        return where, str(_text_problem(text, allow_nul=allow_nul))
    return None


def _text_problem(value: Any, *, allow_nul: bool) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate)"
    if not allow_nul and "\x00" in value:
        return "must not contain NUL characters"
    return None


# -- decoding JSON bodies --------------------------------------------------------------------


_INT_DIGITS_MAX = 4300  # CPython's default int max str digits


class _LongInteger:
    """Stands in for a JSON integer too long for ``int()`` until the body is checked."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def load_json_body(text: str | bytes) -> Any:
    """Decode a request body as every JSON route does.

    Python refuses to convert integers of more than 4,300 digits (a guard against
    quadratic-time conversion), and ``json`` lets that ``ValueError`` escape as if the
    body were fine. Such an integer is refused here with a ``ValidationError`` naming
    where it is (``arguments.max_length``, ``messages.0.priority``), so it is a 400
    on every route, wherever it sits. Other malformed JSON raises ``JSONDecodeError``.
    """
    long_integers: list[_LongInteger] = []

    def parse_int(digits: str) -> int | _LongInteger:
        try:
            return int(digits)
        except ValueError:
            long_integers.append(_LongInteger(len(digits.lstrip("-"))))
            return long_integers[-1]

    data = json.loads(text, parse_int=parse_int)
    if long_integers:
        where, value = next(_leaves(data, lambda v: isinstance(v, _LongInteger)))
        problem = f"is an integer of {value.digits} digits; integers may have at most {_INT_DIGITS_MAX}"
        raise ValidationError({where or "_schema": [problem]})
    return data


def _leaves(data: Any, wanted: Callable[[Any], object]) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of each value in *data*, keys included, for which *wanted*
    is true. Iterative: the parser allows deeper nesting than Python's recursion limit."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if wanted(key):
                    yield _dotted((*path, str(key))), key
                stack.append(((*path, str(key)), item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), v) for i, v in enumerate(value))
        elif wanted(value):
            yield _dotted(path), value


def _dotted(path: tuple[str, ...]) -> str:
    """*path* joined with dots, escaped so that any key can be shown in an answer."""
    dotted = ".".join(path).encode("utf-8", "backslashreplace").decode()
    return dotted.replace("\x00", "\\x00")


class Strict(Schema):
    """Refuses unknown fields wherever it is loaded from. webargs ignores unknown query
    arguments, so a typo such as ``?if_emtpy=true`` would delete a queue that is not empty."""

    @pre_load
    def _no_unknown(self, data: Any, **_: Any) -> Any:
        if hasattr(data, "keys"):
            known = {f.data_key or name for name, f in self.load_fields.items()}
            for key in data.keys():  # noqa: SIM118 - webargs passes a MultiDictProxy
                if key not in known:
                    if not key:
                        raise ValidationError("a field without a name is not accepted")
                    raise ValidationError("Unknown field.", str(key))
        return data


class JsonBody(Strict):
    """Base of request bodies: refuses text that could not be published or stored."""

    allow_nul = True  # message content may hold NUL; names stored in the database may not

    @pre_load
    def _check_text(self, data: Any, **_: Any) -> Any:
        problem = _bad_text(data, allow_nul=self.allow_nul)
        if problem is not None:
            where, what = problem
            raise ValidationError(what, where or "_schema")
        return data


# -- errors -----------------------------------------------------------------------------


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    field = fields.String()


class Error(Schema):
    error = fields.Nested(ErrorBody, required=True)


# -- queues -------------------------------------------------------------------------------


# RabbitMQ refuses TTLs and expirations above ten years (in ms).
MAX_EXPIRY_MS = 315_360_000_000


class QueueArguments(Schema):
    message_ttl = StrictInteger(
        validate=validate.Range(min=0, max=MAX_EXPIRY_MS), metadata={"description": "ms"}
    )
    max_length = StrictInteger(validate=validate.Range(min=0))
    max_length_bytes = StrictInteger(validate=validate.Range(min=0))
    overflow = fields.String(validate=validate.OneOf(["drop-head", "reject-publish", "reject-publish-dlx"]))
    dead_letter_exchange = fields.String(validate=validate.Length(max=NAME_MAX))
    dead_letter_routing_key = fields.String(validate=validate.Length(max=NAME_MAX))
    max_priority = StrictInteger(validate=validate.Range(min=1, max=255))


class QueueCreate(JsonBody):
    name = Name(required=True)
    durable = StrictBoolean(load_default=True)
    type = fields.String(load_default="classic", validate=validate.OneOf(["classic", "quorum"]))
    arguments = fields.Nested(QueueArguments, load_default=dict)

    @validates_schema
    def _quorum_rules(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("type") == "quorum":
            if not data.get("durable", True):
                raise ValidationError("quorum queues are always durable", "durable")
            if "max_priority" in data.get("arguments", {}):
                raise ValidationError("quorum queues have no priorities", "arguments")


class Queue(Schema):
    name = fields.String(required=True)
    type = fields.String()
    durable = fields.Boolean()
    state = fields.String()
    messages = fields.Integer()
    messages_ready = fields.Integer()
    messages_unacknowledged = fields.Integer()
    consumers = fields.Integer()
    publish_rate = fields.Float()
    deliver_rate = fields.Float()
    arguments = fields.Nested(QueueArguments)
    stats_age_seconds = fields.Float(
        allow_none=True,
        metadata={
            "description": "0: messages_ready and consumers (and so messages) were read from the broker "
            "just now; null: every figure is the management API's sample, up to its statistics "
            "interval (5 s by default) old. messages_unacknowledged and the rates are always the sample."
        },
    )


class QueueListArgs(Strict):
    name = fields.String(validate=validate.Length(max=NAME_MAX), metadata={"description": "substring filter"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class QueuePage(Schema):
    items = fields.List(fields.Nested(Queue), required=True)
    page = fields.Integer()
    page_size = fields.Integer()
    total = fields.Integer()


class QueueDeleteArgs(Strict):
    if_empty = fields.Boolean(load_default=False)
    if_unused = fields.Boolean(load_default=False)


class Binding(JsonBody):
    exchange = Name(required=True)
    routing_key = fields.String(load_default="", validate=validate.Length(max=NAME_MAX))


class BindingView(Binding):
    properties_key = fields.String()


class BrokerConsumer(Schema):
    consumer_tag = fields.String()
    connection = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    peer_host = fields.String(allow_none=True)
    ack_required = fields.Boolean()
    prefetch_count = fields.Integer()
    active = fields.Boolean()


# -- messages -------------------------------------------------------------------------------


_INT64 = 2**63
_FLOAT32_MAX = 3.4028234663852886e38  # AMQP tables carry JSON numbers with a fraction as float32
HEADER_DEPTH = 16


def amqp_table(headers: dict[str, Any]) -> None:
    """Header values an AMQP field table can carry (pamqp fails on the rest mid-publish)."""
    stack: list[tuple[Any, int]] = [(v, 1) for v in headers.values()]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= HEADER_DEPTH:
            raise ValidationError(f"header values may nest at most {HEADER_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if len(key.encode("utf-8", "surrogatepass")) > 128:
                    raise ValidationError(f"header table key {key[:40]!r} is over 128 bytes")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ValidationError("header integers must fit in 64 bits (signed)")
        elif isinstance(value, float) and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise ValidationError(f"header numbers with a fraction must be within ±{_FLOAT32_MAX:.4g}")


class Message(JsonBody):
    body = fields.Raw(
        allow_none=True,
        metadata={"description": "a string is sent as UTF-8 text, any other JSON value as JSON"},
    )
    body_base64 = fields.String(metadata={"description": "raw bytes, base64-encoded"})
    # AMQP short strings, sent to the endpoint as request headers (see workerrmq.core.protocol).
    content_type = fields.String(validate=[validate.Length(max=255), max_bytes(255), header_safe])
    headers = fields.Dict(
        keys=fields.String(validate=[validate.Length(max=128), max_bytes(128)]), validate=amqp_table
    )
    message_id = fields.String(validate=[validate.Length(min=1, max=255), max_bytes(255), header_safe])
    correlation_id = fields.String(validate=[validate.Length(max=255), max_bytes(255), header_safe])
    priority = StrictInteger(validate=validate.Range(min=0, max=255))
    expiration = StrictInteger(
        validate=validate.Range(min=0, max=MAX_EXPIRY_MS), metadata={"description": "ms"}
    )
    persistent = StrictBoolean(load_default=True)

    @validates_schema
    def _one_body(self, data: dict[str, Any], **_: Any) -> None:
        if "body" in data and "body_base64" in data:
            raise ValidationError("give either body or body_base64, not both", "body_base64")
        if "body" not in data and "body_base64" not in data and "messages" not in data:
            raise ValidationError("a message needs body or body_base64", "body")


class RoutedMessage(Message):
    # Sent to the endpoint as a request header (core.protocol.HTTP_ROUTING_KEY).
    routing_key = fields.String(validate=[validate.Length(max=NAME_MAX), max_bytes(NAME_MAX), header_safe])


class PublishRequest(Message):
    """One message, or a batch under ``messages``."""

    messages = fields.List(fields.Nested(Message), validate=validate.Length(min=1))

    @validates_schema
    def _batch_alone(self, data: dict[str, Any], **_: Any) -> None:
        if "messages" in data and ({"body", "body_base64"} & data.keys()):
            raise ValidationError("give either one message or messages, not both", "messages")


class ExchangePublishRequest(RoutedMessage):
    messages = fields.List(fields.Nested(RoutedMessage), validate=validate.Length(min=1))

    _batch_alone = PublishRequest._batch_alone


class PublishResult(Schema):
    message_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["published", "unroutable", "rejected"]})


class BatchResult(Schema):
    published = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    results = fields.List(fields.Nested(PublishResult), required=True)


# -- connections and keys ---------------------------------------------------------------------


class Connection(Schema):
    name = fields.String(required=True)
    client_properties = fields.Dict()
    peer_host = fields.String(allow_none=True)
    peer_port = fields.Integer(allow_none=True)
    user = fields.String(allow_none=True)
    vhost = fields.String(allow_none=True)
    channels = fields.Integer()
    state = fields.String()
    connected_at = fields.String(allow_none=True)


class ConnectionCloseArgs(Strict):
    # Sent on as an HTTP header (X-Reason): printable ASCII only.
    reason = fields.String(
        load_default="closed through the WorkerRMQ API",
        validate=[
            validate.Length(max=255),
            FullMatch(r"^[ -~]*$", error="may only contain printable ASCII characters"),
        ],
    )


class KeyCreate(JsonBody):
    allow_nul = False
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scope = fields.String(required=True, validate=validate.OneOf(SCOPES))


class Key(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    scope = fields.String(required=True)
    prefix = fields.String(metadata={"description": "first characters of the token, to tell keys apart"})
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class NewKey(Key):
    key = fields.String(required=True, metadata={"description": "the token; shown only once"})


# -- the seed's routes ----------------------------------------------------------------------


class SeedQueueName(JsonBody):
    queueName = fields.String(required=True, validate=_name)  # noqa: N815 - the seed's field name


class SeedPublish(SeedQueueName):
    message = fields.Raw(required=True, allow_none=False)


class SeedMessage(Schema):
    message = fields.String(required=True)


class SeedQueue(Queue):
    queueName = fields.String(required=True)  # noqa: N815


class SeedConnection(Connection):
    connectionId = fields.String(required=True)  # noqa: N815
