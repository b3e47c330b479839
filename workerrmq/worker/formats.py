"""What a request carries, by the consumer's ``format``: the body, its content type, and the
headers a format adds (CloudEvents attributes, trace context).

- ``raw``: the message's body as is, with its content type.
- ``cloudevents-binary``: the CloudEvents 1.0 HTTP binding's binary mode: the body as is,
  the attributes as ``ce-*`` headers (values percent-encoded as the binding says).
- ``cloudevents-structured``: its structured mode: one ``application/cloudevents+json``
  document holding the attributes and the body, as ``data`` when the content type is
  JSON and the body parses, else as ``data_base64``.

The attributes of a message: ``id`` its message id; ``source`` the consumer's
``ce_source`` (default ``/workerrmq/<queue>``); ``type`` its ``ce-type`` or ``type``
AMQP header, else its AMQP ``type`` property, else its routing key; ``time`` its AMQP
timestamp (RFC 3339); ``datacontenttype`` its content type. A message published as a
CloudEvent through the AMQP binding (headers ``cloudEvents:<attribute>``, or the
``ce-``/``ce_`` prefixes some publishers use) keeps the attributes it carries, extensions
included; those headers then are not also forwarded as ``X-WorkerRMQ-Header-*``.

In every format the W3C trace context (``traceparent``, ``tracestate``, ``baggage``;
:data:`~workerrmq.core.protocol.TRACE_HEADERS`) is forwarded under its own names. The
signature covers the body this module makes, which is exactly what is sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from workerrmq.core.protocol import TRACE_HEADERS

__all__ = ["CE_CONTENT_TYPE", "Rendered", "Renderer", "renderer_for", "trace_headers"]

#: The content type of a structured-mode CloudEvent.
CE_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
_OCTETS = "application/octet-stream"
#: AMQP header prefixes that carry a CloudEvents attribute (compared in lower case).
_CE_HEADER_PREFIXES = ("cloudevents:", "cloudevents_", "ce-", "ce_")
#: Attribute names: lower-case letters and digits (CloudEvents 1.0, "Attribute Naming Convention").
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,64}")
_REQUIRED = ("id", "source", "type")
#: Attributes a message's headers cannot set: the version is this module's, and the data is the body.
_NOT_FROM_HEADERS = frozenset({"specversion", "data", "data_base64"})
#: Characters a binary-mode header value keeps as they are: printable ASCII but space, '"' and '%'.
_HEADER_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
_HEADER_UNSAFE = re.compile(r'[^\x21-\x7e]|["%]')
_JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9!#$&^_.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


class _Message(Protocol):
    """What a format reads of a message (:class:`~workerrmq.worker.delivery.Attempt` has it)."""

    @property
    def message_id(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def timestamp(self) -> dt.datetime | None: ...
    @property
    def message_type(self) -> str | None: ...


class Rendered:
    """One request's body, its Content-Type, and the headers the format adds."""

    __slots__ = ("body", "content_type", "headers")

    def __init__(self, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.body = body
        self.content_type = content_type
        self.headers = headers


class Renderer:
    """Makes the requests of one consumer's format; what every request shares is worked out
    once, when the consumer's :class:`~workerrmq.worker.delivery.Target` is made."""

    def render(self, message: _Message) -> Rendered:
        return Rendered(message.body, message.content_type or _OCTETS, trace_headers(message.headers))

    def forwards(self, name: str) -> bool:
        """Whether the message's AMQP header *name* is also forwarded as ``X-WorkerRMQ-Header-*``."""
        return True


class _CloudEvents(Renderer):
    def __init__(self, source: str) -> None:
        self.source = source

    def forwards(self, name: str) -> bool:
        return _ce_attribute(name) is None

    def attributes(self, message: _Message) -> dict[str, Any]:
        """The event's attributes, as Python values (str, bool, int, bytes or datetime)."""
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": message.message_id,
            "source": self.source,
            "type": _default_type(message),
        }
        if message.timestamp is not None:
            attributes["time"] = message.timestamp
        for name, value in message.headers.items():
            attribute = _ce_attribute(name)
            if attribute is None or attribute in _NOT_FROM_HEADERS or value is None:
                continue
            if attribute in _REQUIRED and not _text(value):
                continue  # an empty required attribute: the default stands
            if attribute == "time" and not _is_time(value):
                continue  # a receiver would refuse the event: the AMQP timestamp stands
            attributes[attribute] = value
        if message.content_type:
            attributes["datacontenttype"] = message.content_type
        return attributes


class _Binary(_CloudEvents):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self._fixed = {"ce-specversion": "1.0"}
        self._source = _header_text(source)

    def render(self, message: _Message) -> Rendered:
        headers = self._fixed.copy()
        content_type = message.content_type
        for name, value in self.attributes(message).items():
            if name == "datacontenttype":
                content_type = _text(value)  # binary mode: the attribute is the Content-Type
            elif name == "source" and value is self.source:
                headers["ce-source"] = self._source
            elif name != "specversion":
                headers[f"ce-{name}"] = _header_text(_text(value))
        headers.update(trace_headers(message.headers))
        return Rendered(message.body, content_type or _OCTETS, headers)


class _Structured(_CloudEvents):
    def render(self, message: _Message) -> Rendered:
        attributes = {name: _json_value(value) for name, value in self.attributes(message).items()}
        body = message.body
        if body and _is_json(attributes.get("datacontenttype")) and _parses(body):
            # The body is spliced in as it came: no decoding and encoding it again.
            document = orjson.dumps(attributes)[:-1] + b',"data":' + body + b"}"
        else:
            if body:
                attributes["data_base64"] = base64.b64encode(body).decode()
            document = orjson.dumps(attributes)
        return Rendered(document, CE_CONTENT_TYPE, trace_headers(message.headers))


def renderer_for(format_: str, *, ce_source: str | None, queue: str) -> Renderer:
    """The renderer of a consumer with *format_* (``raw`` and anything unknown: raw)."""
    source = ce_source or f"/workerrmq/{queue}"
    if format_ == "cloudevents-binary":
        return _Binary(source)
    if format_ == "cloudevents-structured":
        return _Structured(source)
    return Renderer()


def trace_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The trace context headers of a message's AMQP *headers* that are fit to forward:
    text of printable ASCII, within :data:`~workerrmq.core.protocol.TRACE_HEADERS`'s length."""
    found: dict[str, str] = {}
    for name, limit in TRACE_HEADERS.items():
        value = headers.get(name)
        if value is None:
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                continue
        if isinstance(value, str) and 0 < len(value) <= limit and value.isascii() and value.isprintable():
            found[name] = value
    return found


@functools.lru_cache(maxsize=1024)  # a publisher's header names repeat message after message
def _ce_attribute(header: str) -> str | None:
    """The CloudEvents attribute AMQP header *header* carries, or None."""
    lowered = header.lower()
    for prefix in _CE_HEADER_PREFIXES:
        if lowered.startswith(prefix):
            name = lowered[len(prefix) :]
            return name if _ATTRIBUTE_NAME.fullmatch(name) else None
    return None


def _header_text(value: str) -> str:
    """*value* as a binary-mode header value: percent-encoded where the binding says."""
    return quote(value, safe=_HEADER_SAFE) if _HEADER_UNSAFE.search(value) else value


def _default_type(message: _Message) -> str:
    declared = message.headers.get("type")
    if declared is not None and _text(declared):
        return _text(declared)
    return message.message_type or message.routing_key or "workerrmq.message"


def _text(value: Any) -> str:
    """An attribute value as its canonical string (CloudEvents 1.0, "Type System")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        return _rfc3339(value)
    return orjson.dumps(value, default=str).decode()


def _json_value(value: Any) -> Any:
    """An attribute value in the JSON format: booleans and integers as themselves
    (integers beyond CloudEvents' 32 bits as strings), everything else as its string."""
    if isinstance(value, bool) or (isinstance(value, int) and -(2**31) <= value < 2**31):
        return value
    return _text(value)


def _rfc3339(value: dt.datetime) -> str:
    """*value* in RFC 3339; a time without a zone is UTC, as AMQP timestamps are."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat().replace("+00:00", "Z")


def _is_time(value: Any) -> bool:
    """Whether *value* is a time a ``time`` attribute can carry (RFC 3339 when a string)."""
    if isinstance(value, dt.datetime):
        return True
    try:
        return isinstance(value, str) and "T" in value.upper() and bool(dt.datetime.fromisoformat(value))
    except ValueError:
        return False


def _is_json(content_type: Any) -> bool:
    return isinstance(content_type, str) and _JSON_TYPE.match(content_type) is not None


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True
