"""Which HTTP headers a consumer's ``headers`` may set.

One rule, used when a definition is saved (the API answers 400) and again by the
worker for definitions already stored (the consumer does not start). Refused:

- framing and hop-by-hop headers, which would change how the body is read
  (``Content-Length: 0`` makes every endpoint read an empty body) or what the
  connection does;
- ``Content-Type`` and ``Content-Encoding``: the message's own content type is sent,
  and one fixed type would mislabel every message published with another;
- the headers WorkerRMQ sets itself (those of :mod:`workerrmq.core.protocol`, the
  Standard Webhooks signature headers), which endpoints rely on to deduplicate and verify.

Names compare case-insensitively, as HTTP does.
"""

from __future__ import annotations

from collections.abc import Iterable

from workerrmq.core.protocol import HTTP_PREFIX
from workerrmq.core.signing import SIGNATURE_HEADERS

__all__ = ["refused_header", "first_refused"]

_FRAMING = (
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
)
_BODY = ("content-type", "content-encoding")


def refused_header(name: str) -> str | None:
    """Why a consumer may not set header *name*, or None if it may."""
    lowered = name.strip().lower()
    if lowered in _FRAMING or lowered.startswith("proxy-"):
        return "a framing or hop-by-hop header, which the HTTP client sets"
    if lowered in _BODY:
        return "the message's own content type is sent; set content_type when publishing"
    if lowered.startswith(HTTP_PREFIX.lower()) or lowered in SIGNATURE_HEADERS:
        return "WorkerRMQ sets it on every delivery"
    return None


def first_refused(names: Iterable[str]) -> str | None:
    """A message naming the first header of *names* a consumer may not set, or None."""
    for name in names:
        reason = refused_header(name)
        if reason is not None:
            return f"header {name!r} cannot be configured: {reason}"
    return None
