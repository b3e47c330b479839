"""The headers WorkerRMQ writes on messages and on requests to endpoints: every name once.

On a message (AMQP headers, lower case):

- a retried message carries :data:`ATTEMPTS` (attempts made so far);
- a dead-lettered one also carries why it failed (:data:`DEAD_LETTER_HEADERS`);
- the broker adds its death headers (:data:`DEATH_HEADERS`) when a delay queue
  dead-letters a message back to its queue; a republish drops them;
- a replayed message loses every one of these (:func:`replay_headers`), so its
  attempts start again.

On a request to an endpoint (HTTP headers, ``X-WorkerRMQ-*``): the message's id,
queue, routing key, attempt number and redelivered flag, and each AMQP header of the
message as ``X-WorkerRMQ-Header-<name>`` (:func:`forwarded_header_name`). The trace
context headers (:data:`TRACE_HEADERS`) also go out under their own names, so that a
trace crosses the relay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ATTEMPTS",
    "CONSUMER",
    "DEAD_LETTERED_AT",
    "DEAD_LETTER_HEADERS",
    "DEATH_HEADERS",
    "HTTP_ATTEMPT",
    "HTTP_CORRELATION_ID",
    "HTTP_MESSAGE_ID",
    "HTTP_PREFIX",
    "HTTP_QUEUE",
    "HTTP_REDELIVERED",
    "HTTP_ROUTING_KEY",
    "LAST_ERROR",
    "LAST_ERROR_MAX",
    "LAST_STATUS",
    "PREFIX",
    "SOURCE_QUEUE",
    "TRACE_HEADERS",
    "attempts_made",
    "dead_letter_headers",
    "dead_letter_view",
    "forwarded_header_name",
    "is_internal",
    "replay_headers",
    "retry_headers",
]

# -- on messages ------------------------------------------------------------------------------

#: Every AMQP header WorkerRMQ sets starts with this.
PREFIX = "x-workerrmq-"
#: Attempts made so far (an int); the next delivery is attempt ``ATTEMPTS + 1``.
ATTEMPTS = f"{PREFIX}attempts"
#: On a dead-lettered message: the queue it came from, and the consumer that gave up.
SOURCE_QUEUE = f"{PREFIX}source-queue"
CONSUMER = f"{PREFIX}consumer"
#: On a dead-lettered message: the last HTTP status (an int, or ``"none"``), the
#: last error (at most :data:`LAST_ERROR_MAX` characters) and when (ISO 8601, UTC).
LAST_STATUS = f"{PREFIX}last-status"
LAST_ERROR = f"{PREFIX}last-error"
DEAD_LETTERED_AT = f"{PREFIX}dead-lettered-at"
LAST_ERROR_MAX = 500
DEAD_LETTER_HEADERS = (ATTEMPTS, SOURCE_QUEUE, CONSUMER, LAST_STATUS, LAST_ERROR, DEAD_LETTERED_AT)

#: Prefixes of the headers the broker adds when it dead-letters a message.
DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def is_internal(name: str) -> bool:
    """True for a header WorkerRMQ or the broker's dead-lettering added; such headers are
    not forwarded to endpoints."""
    return name.startswith((PREFIX, *DEATH_HEADERS))


def attempts_made(headers: Mapping[str, Any] | None) -> int:
    """How many attempts *headers* (a delivered message's) say were made before."""
    prior = (headers or {}).get(ATTEMPTS, 0)
    return prior if isinstance(prior, int) else 0


def retry_headers(headers: Mapping[str, Any] | None, attempts: int) -> dict[str, Any]:
    """The headers of a message sent back for another attempt, *attempts* made so far."""
    kept = {k: v for k, v in (headers or {}).items() if not k.startswith(DEATH_HEADERS)}
    kept[ATTEMPTS] = attempts
    return kept


def dead_letter_headers(
    headers: Mapping[str, Any] | None,
    *,
    attempts: int,
    source_queue: str,
    consumer: str,
    status: int | None,
    error: str,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The headers of a message sent to a dead-letter queue: why it failed, and when."""
    marked = retry_headers(headers, attempts)
    marked[SOURCE_QUEUE] = source_queue
    marked[CONSUMER] = consumer
    marked[LAST_STATUS] = status if status is not None else "none"
    marked[LAST_ERROR] = error[:LAST_ERROR_MAX]
    marked[DEAD_LETTERED_AT] = (now or dt.datetime.now(dt.UTC)).isoformat()
    return marked


def replay_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of a dead-lettered message replayed to its queue: its attempts start
    again, and nothing says it was dead-lettered."""
    return {
        k: v
        for k, v in (headers or {}).items()
        if k not in DEAD_LETTER_HEADERS and not k.startswith(DEATH_HEADERS)
    }


def dead_letter_view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A dead-lettered message, as the management API's ``get`` returns it, as the API
    shows it: why it failed in fields of their own, its own headers apart."""
    props = raw.get("properties") or {}
    headers = props.get("headers") or {}
    return {
        "message_id": props.get("message_id"),
        "payload": raw.get("payload"),
        "payload_encoding": raw.get("payload_encoding"),
        "content_type": props.get("content_type"),
        "attempts": headers.get(ATTEMPTS),
        "last_status": headers.get(LAST_STATUS),
        "last_error": headers.get(LAST_ERROR),
        "dead_lettered_at": headers.get(DEAD_LETTERED_AT),
        "headers": {k: v for k, v in headers.items() if not k.startswith(PREFIX)},
    }


# -- on requests to endpoints -------------------------------------------------------------------

#: Every request header WorkerRMQ sets starts with this (HTTP compares names case-insensitively).
HTTP_PREFIX = "X-WorkerRMQ-"
HTTP_MESSAGE_ID = f"{HTTP_PREFIX}Message-Id"  # the same on every attempt: deduplicate on it
HTTP_CORRELATION_ID = f"{HTTP_PREFIX}Correlation-Id"
HTTP_QUEUE = f"{HTTP_PREFIX}Queue"
HTTP_ROUTING_KEY = f"{HTTP_PREFIX}Routing-Key"
HTTP_ATTEMPT = f"{HTTP_PREFIX}Attempt"  # 1, 2, ...
HTTP_REDELIVERED = f"{HTTP_PREFIX}Redelivered"  # "true" or "false"
_FORWARDED = f"{HTTP_PREFIX}Header-"
_FORWARDED_NAME_MAX = 200


def forwarded_header_name(name: str) -> str:
    """The request header that carries the message's AMQP header *name*:
    ``X-WorkerRMQ-Header-<name>``, any character but letters, digits, ``-`` and ``_`` as ``_``."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)
    return f"{_FORWARDED}{safe}"[:_FORWARDED_NAME_MAX]


#: The W3C trace context headers (Trace Context and Baggage), each with the longest value
#: forwarded: taken from the message's AMQP headers of the same name and sent to the endpoint
#: under that name, unprefixed, in every format. A value that is not printable ASCII or is
#: longer is dropped (the specifications cap ``tracestate`` at 512 characters, ``baggage``
#: at 8192 bytes; ``traceparent`` is 55 in version 00).
TRACE_HEADERS: Mapping[str, int] = {"traceparent": 512, "tracestate": 512, "baggage": 8192}
