"""A quick way through for publish requests that are plainly valid.

Publishing is the API's hot path, and marshmallow costs more than the rest of
a publish together (about 0.8 ms for a batch message). Most requests are
plain: known fields with values of the right JSON type and size. For those,
:func:`plain_publish_request` returns the body exactly as the request schema
would load it; for anything else it returns None, and the request takes the
full path (webargs and marshmallow), which answers every mistake with its
field and reason. The quick way therefore only ever accepts what the full
path accepts, and never has error messages of its own; ``tests/test_fastlane.py``
holds the two paths to that.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import orjson
from flask import request
from marshmallow import ValidationError

from workerrmq.api.schemas import HEADER_UNSAFE, MAX_EXPIRY_MS, amqp_table
from workerrmq.services.names import NAME_MAX

__all__ = ["plain_publish_request", "fast_lane"]

_TEXT_LIMITS = {"content_type": 255, "message_id": 255, "correlation_id": 255}
_ROUTED_TEXT_LIMITS = {**_TEXT_LIMITS, "routing_key": NAME_MAX}
_INT_LIMITS = {"priority": 255, "expiration": MAX_EXPIRY_MS}
_HEADER_KEY_MAX = 128
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _plain_message(message: Any, texts: dict[str, int]) -> bool:
    if type(message) is not dict or (("body" in message) == ("body_base64" in message)):
        return False
    for key, value in message.items():
        if key == "body":
            continue
        if key == "body_base64":
            if type(value) is not str:
                return False
        elif key in texts:
            if not _plain_text(value, texts[key]):
                return False
            if key == "message_id" and not value:
                return False
        elif key in _INT_LIMITS:
            if type(value) is not int or not 0 <= value <= _INT_LIMITS[key]:
                return False
        elif key == "persistent":
            if type(value) is not bool:
                return False
        elif key == "headers":
            if type(value) is not dict or not _plain_headers(value):
                return False
        else:
            return False
    return True


def _plain_text(value: Any, limit: int) -> bool:
    """A string within *limit* bytes that can be sent on as an HTTP header value."""
    # orjson refuses lone surrogates, so every str here encodes to UTF-8.
    return type(value) is str and len(value.encode()) <= limit and not HEADER_UNSAFE.search(value)


def _plain_headers(headers: dict[str, Any]) -> bool:
    if any(len(key.encode()) > _HEADER_KEY_MAX for key in headers):
        return False
    try:
        amqp_table(headers)
    except ValidationError:
        return False
    return True


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
    texts = _ROUTED_TEXT_LIMITS if routed else _TEXT_LIMITS
    if type(body) is not dict:
        return None
    if "messages" not in body:
        if not _plain_message(body, texts):
            return None
        body.setdefault("persistent", True)
        return body
    extra = body.keys() - {"messages", "routing_key"} if routed else body.keys() - {"messages"}
    routing_key = body.get("routing_key", "")
    messages = body["messages"]
    if (
        extra
        or not _plain_text(routing_key, NAME_MAX)
        or type(messages) is not list
        or not messages
        or not all(_plain_message(m, texts) for m in messages)
    ):
        return None
    for message in messages:
        message.setdefault("persistent", True)
    return body


def fast_lane(
    parse: Callable[[bytes], dict[str, Any] | None], handle: Callable[..., Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Put in front of a view that parses its body with webargs: a JSON body that
    *parse* takes goes to ``handle(body, **view_args)`` instead; the rest to the view."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.mimetype == "application/json":
                body = parse(request.get_data(cache=True))
                if body is not None:
                    return handle(body, **kwargs)
            return view(*args, **kwargs)

        return wrapper

    return decorate
