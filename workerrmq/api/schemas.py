"""Request and response schemas. They validate requests and generate ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workerrmq.services.names import NAME_MAX, NAME_PATTERN
from workerrmq.store.models import SCOPES

# A list, not validate.And: apispec documents each validator (maxLength, pattern) of a list.
_name = [
    validate.Length(min=1, max=NAME_MAX),
    validate.Regexp(NAME_PATTERN, error="may only contain ASCII letters, digits and _ . : -"),
]


def Name(**kwargs: Any) -> fields.String:  # noqa: N802 - reads like a field class
    return fields.String(validate=_name, **kwargs)


# -- errors -----------------------------------------------------------------------------


class ErrorBody(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    field = fields.String()


class Error(Schema):
    error = fields.Nested(ErrorBody, required=True)


# -- queues -------------------------------------------------------------------------------


class QueueArguments(Schema):
    message_ttl = fields.Integer(validate=validate.Range(min=0), metadata={"description": "ms"})
    max_length = fields.Integer(validate=validate.Range(min=0))
    max_length_bytes = fields.Integer(validate=validate.Range(min=0))
    overflow = fields.String(validate=validate.OneOf(["drop-head", "reject-publish", "reject-publish-dlx"]))
    dead_letter_exchange = fields.String(validate=validate.Length(max=NAME_MAX))
    dead_letter_routing_key = fields.String(validate=validate.Length(max=NAME_MAX))
    max_priority = fields.Integer(validate=validate.Range(min=1, max=255))


class QueueCreate(Schema):
    name = Name(required=True)
    durable = fields.Boolean(load_default=True)
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


class QueueListArgs(Schema):
    name = fields.String(validate=validate.Length(max=NAME_MAX), metadata={"description": "substring filter"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class QueuePage(Schema):
    items = fields.List(fields.Nested(Queue), required=True)
    page = fields.Integer()
    page_size = fields.Integer()
    total = fields.Integer()


class QueueDeleteArgs(Schema):
    if_empty = fields.Boolean(load_default=False)
    if_unused = fields.Boolean(load_default=False)


class Binding(Schema):
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


class Message(Schema):
    body = fields.Raw(allow_none=True, metadata={
        "description": "a string is sent as UTF-8 text, any other JSON value as JSON"})
    body_base64 = fields.String(metadata={"description": "raw bytes, base64-encoded"})
    content_type = fields.String(validate=validate.Length(max=255))
    headers = fields.Dict(keys=fields.String(validate=validate.Length(max=255)))
    message_id = fields.String(validate=validate.Length(min=1, max=255))
    correlation_id = fields.String(validate=validate.Length(max=255))
    priority = fields.Integer(validate=validate.Range(min=0, max=255))
    expiration = fields.Integer(validate=validate.Range(min=0), metadata={"description": "ms"})
    persistent = fields.Boolean(load_default=True)

    @validates_schema
    def _one_body(self, data: dict[str, Any], **_: Any) -> None:
        if "body" in data and "body_base64" in data:
            raise ValidationError("give either body or body_base64, not both", "body_base64")
        if "body" not in data and "body_base64" not in data and "messages" not in data:
            raise ValidationError("a message needs body or body_base64", "body")


class RoutedMessage(Message):
    routing_key = fields.String(validate=validate.Length(max=NAME_MAX))


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


class ConnectionCloseArgs(Schema):
    reason = fields.String(load_default="closed through the WorkerRMQ API",
                           validate=validate.Length(max=255))


class KeyCreate(Schema):
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


class SeedQueueName(Schema):
    queueName = fields.String(required=True, validate=_name)  # noqa: N815 - the seed's field name


class SeedPublish(SeedQueueName):
    message = fields.Raw(required=True, allow_none=False)


class SeedMessage(Schema):
    message = fields.String(required=True)


class SeedQueue(Queue):
    queueName = fields.String(required=True)  # noqa: N815


class SeedConnection(Connection):
    connectionId = fields.String(required=True)  # noqa: N815
