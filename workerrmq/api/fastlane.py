"""A quick way through for publish requests that are plainly valid, built from the request schema.

Publishing is the API's hot path, and a marshmallow ``load`` costs more than the rest of
a publish together: without this lane the API publishes a quarter fewer single messages
with 32 clients (docs/RELIABILITY.md, "Hardening"). Most requests are plain: known fields
holding JSON values of the field's own type. For those, :func:`plain_publish_request`
returns the body as the schema would load it; for anything else it returns None and the
request takes the full path (webargs and marshmallow), which answers every mistake with
its field and reason.

Nothing here restates a limit: the checks are made at import from the schema's own fields
(:class:`~workerrmq.api.schemas.Message` and its kin), running each field's validators
(lengths, byte limits, ranges, the header-safety and AMQP-table rules) on the value. What
the lane adds is stricter only: a value must already be of the field's JSON type (``5.0``
for an integer goes the full way), unknown fields and the schema-level rules (``body`` or
``body_base64``, one message or a batch) are checked by shape, and a field of a kind the
lane does not know stops the import. ``tests/test_fastlane.py`` holds the two paths to that.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from flask import request
from marshmallow import Schema, ValidationError, fields, missing

from workerrmq.api import schemas

__all__ = ["Lane", "fast_lane", "plain_publish_request"]

_LONG_NUMBER = re.compile(rb"[0-9]{19}")
Check = Callable[[Any], bool]

#: The JSON type a value of each field kind must already have to take the lane.
_TYPES: dict[type[fields.Field], type | None] = {
    schemas.StrictInteger: int,
    schemas.StrictBoolean: bool,
    fields.String: str,
    fields.Dict: dict,
    fields.Raw: None,  # any JSON value
}


def _passes(validators: list[Callable[[Any], Any]], value: Any) -> bool:
    try:
        for validator in validators:
            validator(value)
    except ValidationError:
        return False
    return True


def _check(field: fields.Field) -> Check:
    """A check that takes a value only if *field* loads it as it is and validates it."""
    kind = next((t for cls, t in _TYPES.items() if type(field) is cls), missing)
    if kind is missing:
        raise TypeError(f"the publish fast lane cannot check a {type(field).__name__} field")
    validators = list(field.validators)
    keys = list(field.key_field.validators) if isinstance(field, fields.Dict) and field.key_field else []
    if isinstance(field, fields.Dict) and field.value_field is not None:
        raise TypeError("the publish fast lane cannot check the values of a Dict field")

    def check(value: Any) -> bool:
        if value is None:
            return field.allow_none
        if kind is not None and (type(value) is not kind):
            return False
        if keys and not all(_passes(keys, key) for key in value):
            return False
        return _passes(validators, value)

    return check


def _checks(schema: Schema, skip: frozenset[str] = frozenset()) -> dict[str, Check]:
    return {name: _check(field) for name, field in schema.fields.items() if name not in skip}


def _defaults(schema: Schema) -> dict[str, Any]:
    return {
        name: f.load_default
        for name, f in schema.fields.items()
        if f.load_default is not missing and not callable(f.load_default)
    }


class Lane:
    """The plain requests one publish schema takes: one message, or ``messages`` (and, on
    the exchange route, a ``routing_key`` for all of them)."""

    def __init__(self, request_schema: Schema, message_schema: Schema) -> None:
        self.message = _checks(message_schema)
        self.defaults = _defaults(message_schema)
        self.single = _checks(request_schema, frozenset({"messages"}))
        batch = request_schema.fields["messages"]
        self.batch_size = list(batch.validators)
        self.batch_fields = {"messages"} | ({"routing_key"} & request_schema.fields.keys())

    def message_ok(self, message: Any, checks: Mapping[str, Check]) -> bool:
        if type(message) is not dict or ("body" in message) == ("body_base64" in message):
            return False
        for key, value in message.items():
            check = checks.get(key)
            if check is None or not check(value):
                return False
        return True

    def load(self, body: Any) -> dict[str, Any] | None:
        if type(body) is not dict:
            return None
        if "messages" not in body:
            return {**self.defaults, **body} if self.message_ok(body, self.single) else None
        messages = body["messages"]
        if (
            body.keys() - self.batch_fields
            or ("routing_key" in body and not self.single["routing_key"](body["routing_key"]))
            or type(messages) is not list
            or not _passes(self.batch_size, messages)
            or not all(self.message_ok(m, self.message) for m in messages)
        ):
            return None
        body["messages"] = [{**self.defaults, **m} for m in messages]
        return body


_LANES = {
    False: Lane(schemas.PublishRequest(), schemas.Message()),
    True: Lane(schemas.ExchangePublishRequest(), schemas.RoutedMessage()),
}


def plain_publish_request(raw: bytes, *, routed: bool) -> dict[str, Any] | None:
    """The publish request *raw* as its schema would load it, or None to take the full path.

    *routed*: the exchange route's request, whose messages may carry a routing key.
    """
    if _LONG_NUMBER.search(raw):
        # orjson reads integers outside int64/uint64 as floats, json keeps them whole: any
        # number of 19 digits or more (-2**63 - 1 has 19) goes to the full path.
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return _LANES[routed].load(body)


def fast_lane(
    parse: Callable[[bytes], dict[str, Any] | None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Put in front of a view that parses its body with webargs: a JSON body that *parse*
    takes goes straight to the view's own function (``view(body, **view_args)``, under its
    webargs and response decorators); the rest through them."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        handle = inspect.unwrap(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.mimetype == "application/json":
                body = parse(request.get_data(cache=True))
                if body is not None:
                    return handle(body, **kwargs)
            return view(*args, **kwargs)

        return wrapper

    return decorate
