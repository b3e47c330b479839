"""Connecting to one of several brokers (a cluster): the first that answers wins."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection

from workerrmq.core.credentials import redact_url

__all__ = ["connect_first", "failure_reason", "is_alive"]

log = logging.getLogger(__name__)


async def connect_first(urls: Sequence[str], *, timeout: float, name: str) -> AbstractConnection:
    """Connect to the first of *urls* that accepts; raises the last error if none does."""
    last: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=timeout, client_properties={"connection_name": name})
        except Exception as exc:  # noqa: BLE001 - try the next broker, whatever went wrong
            reason = failure_reason(exc)
            level = logging.WARNING if reason.startswith("TLS") else logging.INFO
            log.log(level, "broker %s refused (%s); trying the next", redact_url(url), reason)
            last = exc
    raise last if last is not None else ValueError("no broker URL given")


def is_alive(connection: AbstractConnection) -> bool:
    """True while *connection* is open. aio-pika's ``is_closed`` stays False after the
    broker closes a connection; its ``connected`` event is cleared then."""
    return not connection.is_closed and connection.connected.is_set()


def failure_reason(exc: BaseException) -> str:
    """Why a connection failed, safe to log: the error's type, or for a TLS failure what
    the TLS layer said (``TLS: certificate verify failed: Hostname mismatch ...``).

    Each error of the chain is looked at once: aiormq's chains can loop (a broker that
    hangs up during the handshake gives a ``StopAsyncIteration`` caused by a
    ``CancelledError`` that holds it), and walking one round and round would block the
    event loop of the worker or publisher for good."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
        wrapped = [a for a in (*cause.args, getattr(cause, "reason", None)) if isinstance(a, BaseException)]
        cause = cause.__cause__ or (wrapped[0] if wrapped else None)  # requests wraps in args
    return type(exc).__name__
