"""Pure delivery policy: what an outcome means, how long to wait, which delay tier.

No I/O here, so every rule can be tested directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import enum
import random
from collections.abc import Callable, Sequence

__all__ = [
    "Verdict",
    "RetryPolicy",
    "classify",
    "compute_backoff",
    "parse_retry_after",
    "pick_tier",
    "retry_floor",
    "DELAY_TIERS",
    "DEFAULT_INITIAL_DELAY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_RETRY_ON",
    "RETRY_ON_PATTERN",
]

#: Outcomes that are retried unless a consumer says otherwise. "connection" and
#: "timeout" are transport errors; "5xx" is any server error.
DEFAULT_RETRY_ON = ("connection", "timeout", "408", "425", "429", "5xx")
#: What a ``retry_on`` entry may be: a transport error, ``5xx`` or one 4xx or 5xx status.
RETRY_ON_PATTERN = r"^(connection|timeout|5xx|[45][0-9][0-9])$"
#: A consumer's retry settings when it sets none (see :mod:`workerrmq.core.consumer`).
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_INITIAL_DELAY = 1.0
DEFAULT_MAX_DELAY = 3600.0

#: Delay queues, in seconds. A wait falls between two tiers and goes to one of
#: them at random, weighted so the expected wait is the wanted one: this keeps
#: the jitter while every queue has one fixed TTL (so none blocks at its head).
DELAY_TIERS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    4,
    8,
    15,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
)


class Verdict(enum.Enum):
    """What becomes of a message after one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long apart a consumer's failed deliveries are tried again."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: float = 0.2
    retry_on: Sequence[str] = DEFAULT_RETRY_ON


def classify(status: int | None, error: str | None, retry_on: Sequence[str]) -> Verdict:
    """What to do after one attempt that got HTTP *status*, or failed with *error*.

    *error* is ``"connection"`` or ``"timeout"`` when no response came.
    2xx is delivered; listed outcomes retry; everything else (other 4xx,
    redirects, unknown transport errors) is permanent and dead-letters at once.
    ``"auth"`` (no credentials could be had, e.g. the OAuth2 token endpoint failed)
    always retries: the endpoint never saw the message, so it has not refused it.
    """
    if status is None:
        return Verdict.RETRY if error in retry_on or error == "auth" else Verdict.DEAD_LETTER
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if str(status) in retry_on or (status >= 500 and "5xx" in retry_on):
        return Verdict.RETRY
    return Verdict.DEAD_LETTER


def compute_backoff(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number *attempt* (1-based).

    Doubles from ``initial_delay`` up to ``max_delay``, spread by ±``jitter``;
    a server's ``Retry-After`` raises the wait, never beyond ``max_delay``.
    """
    base = min(policy.max_delay, policy.initial_delay * 2 ** max(0, attempt - 1))
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    delay = base * (1 + spread)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return max(0.0, min(policy.max_delay, delay))


def retry_floor(retry_after: float | None, policy: RetryPolicy) -> float:
    """The earliest a retry may come, in seconds: the server's ``Retry-After``
    (never beyond ``max_delay``, as :func:`compute_backoff` caps it), else 0."""
    return min(policy.max_delay, retry_after) if retry_after is not None else 0.0


def pick_tier(
    delay: float,
    tiers: Sequence[float] = DELAY_TIERS,
    *,
    at_least: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The delay tier for a wait of *delay* seconds.

    Between two tiers the pick is random, weighted so the mean is *delay*; a tier
    below *at_least* (a ``Retry-After``) is never picked: the wait is rounded up to
    the next tier instead, so the retry never comes sooner than asked. Only the
    longest tier can be below *at_least*, when nothing longer exists.
    """
    pick = _weighted_neighbour(delay, tiers, (rng or random).random)
    if pick >= at_least:
        return pick
    return next((tier for tier in tiers if tier >= at_least), tiers[-1])


def _weighted_neighbour(delay: float, tiers: Sequence[float], draw: Callable[[], float]) -> float:
    if delay <= tiers[0]:
        return tiers[0]
    if delay >= tiers[-1]:
        return tiers[-1]
    for low, high in zip(tiers, tiers[1:], strict=False):
        if low <= delay <= high:
            chance_high = (delay - low) / (high - low)
            return high if draw() < chance_high else low
    raise AssertionError("unreachable: tiers are sorted")


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also accepts "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())
