"""Connecting to one of several brokers (a cluster): the first that answers wins."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractConnection

from workerrmq.settings import redact_url

__all__ = ["connect_first"]

log = logging.getLogger(__name__)


async def connect_first(urls: Sequence[str], *, timeout: float, name: str) -> AbstractConnection:
    """Connect to the first of *urls* that accepts; raises the last error if none does."""
    last: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(
                url, timeout=timeout, client_properties={"connection_name": name}
            )
        except Exception as exc:  # noqa: BLE001 - try the next broker, whatever went wrong
            log.info("broker %s refused (%s); trying the next", redact_url(url), type(exc).__name__)
            last = exc
    raise last if last is not None else ValueError("no broker URL given")
