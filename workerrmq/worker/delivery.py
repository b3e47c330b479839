"""One HTTP delivery attempt: the request an endpoint receives, and what came back."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aio_pika.abc import AbstractIncomingMessage

from workerrmq.store.consumers import ConsumerSpec
from workerrmq.worker.guard import TargetBlocked, check_literal
from workerrmq.worker.policy import parse_retry_after
from workerrmq.worker.signing import secret_bytes, signature_headers

__all__ = ["Attempt", "DeliveryResult", "send", "build_headers", "HEADER_PREFIX"]

#: Every delivery header WorkerRMQ sets starts with this; the message's own AMQP
#: headers arrive as ``X-WorkerRMQ-Header-<name>``.
HEADER_PREFIX = "X-WorkerRMQ-"
ATTEMPTS_HEADER = "x-workerrmq-attempts"
_ERROR_TEXT_MAX = 300


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A message as one delivery attempt sees it."""

    message_id: str
    number: int  # 1-based
    body: bytes
    content_type: str | None
    headers: Mapping[str, Any]
    correlation_id: str | None
    routing_key: str
    redelivered: bool

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Attempt:
        headers = dict(message.headers or {})
        prior = headers.get(ATTEMPTS_HEADER, 0)
        return cls(
            # A message published without an id gets one here; retries carry it on.
            message_id=str(message.message_id or uuid.uuid4().hex),
            number=(prior if isinstance(prior, int) else 0) + 1,
            body=message.body,
            content_type=message.content_type,
            headers=headers,
            correlation_id=message.correlation_id,
            routing_key=message.routing_key or "",
            redelivered=bool(message.redelivered),
        )


#: Headers the broker adds when it dead-letters a message (our delay queues do that).
DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def is_internal_header(name: str) -> bool:
    """Headers WorkerRMQ or the broker's dead-lettering add; not forwarded to endpoints."""
    return name.startswith(("x-workerrmq-", *DEATH_HEADERS))


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    status: int | None  # HTTP status, or None when no response came
    error: str | None  # "connection", "timeout", "blocked", "client", or the HTTP reason
    detail: str  # text for the operator: start of the response body or the exception
    retry_after: float | None
    seconds: float


def _header_value(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = orjson.dumps(value, default=str).decode()
    if not value.isascii() or not value.isprintable():
        value = json.dumps(value)  # escapes to printable ASCII
    return value


def build_headers(spec: ConsumerSpec, attempt: Attempt, queue: str, now: int) -> dict[str, str]:
    headers = {str(k): _header_value(v) for k, v in spec.headers.items()}
    headers.update(
        {
            "Content-Type": attempt.content_type or "application/octet-stream",
            f"{HEADER_PREFIX}Message-Id": attempt.message_id,
            f"{HEADER_PREFIX}Queue": queue,
            f"{HEADER_PREFIX}Routing-Key": attempt.routing_key,
            f"{HEADER_PREFIX}Attempt": str(attempt.number),
            f"{HEADER_PREFIX}Redelivered": "true" if attempt.redelivered else "false",
        }
    )
    if attempt.correlation_id:
        headers[f"{HEADER_PREFIX}Correlation-Id"] = attempt.correlation_id
    for name, value in attempt.headers.items():
        if is_internal_header(name):
            continue
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)
        headers[f"{HEADER_PREFIX}Header-{safe}"[:200]] = _header_value(value)[:4096]
    if spec.signing_secret:
        headers.update(
            signature_headers(secret_bytes(spec.signing_secret), attempt.message_id, now, attempt.body)
        )
    return headers


async def send(
    session: aiohttp.ClientSession, spec: ConsumerSpec, attempt: Attempt, queue: str,
    *, guard: bool = False,
) -> DeliveryResult:
    """POST (or PUT) the message to the consumer's endpoint once. Never raises for HTTP trouble.

    With *guard*, an IP-literal target in a non-public range is refused here; named
    hosts are checked by the session's :class:`~workerrmq.worker.guard.GuardedResolver`.
    """
    started = time.perf_counter()
    headers = build_headers(spec, attempt, queue, int(time.time()))
    try:
        if guard:
            check_literal(urlsplit(spec.target_url).hostname or "")
        async with session.request(
            spec.method,
            spec.target_url,
            data=attempt.body,
            headers=headers,
            allow_redirects=False,
            timeout=_timeout(spec.timeout),
        ) as response:
            detail = ""
            if not 200 <= response.status < 300:
                detail = (await response.content.read(_ERROR_TEXT_MAX)).decode("utf-8", "replace")
            return DeliveryResult(
                status=response.status,
                error=None if response.status < 300 else f"HTTP {response.status}",
                detail=detail,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                seconds=time.perf_counter() - started,
            )
    except TargetBlocked as exc:
        return _failed("blocked", str(exc), started)
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, TargetBlocked):
            return _failed("blocked", str(exc.os_error), started)
        return _failed("connection", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _failed("timeout", f"no answer within {spec.timeout}s", started)
    except (aiohttp.ClientConnectionError, OSError) as exc:
        return _failed("connection", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)
    except aiohttp.ClientError as exc:
        return _failed("client", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)


@functools.lru_cache(maxsize=256)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _failed(error: str, detail: str, started: float) -> DeliveryResult:
    return DeliveryResult(None, error, detail, None, time.perf_counter() - started)
