"""Which workers run a consumer, and with how much concurrency each. Pure functions."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

__all__ = ["chosen_workers", "share_of"]


def chosen_workers(consumer_id: str, instances: int | None, alive: Sequence[str]) -> list[str]:
    """The workers that run *consumer_id*: all of *alive*, or *instances* of them.

    Rendezvous hashing: every worker computes the same choice from the same list,
    and a worker joining or leaving moves as few consumers as possible.
    """
    if instances is None or instances >= len(alive):
        return sorted(alive)

    def weight(worker: str) -> bytes:
        return hashlib.sha256(f"{consumer_id}:{worker}".encode()).digest()

    return sorted(sorted(alive, key=weight, reverse=True)[:instances])


def share_of(total_concurrency: int, instances: int) -> int:
    """Each instance's part of a consumer's total concurrency (at least 1)."""
    return max(1, math.ceil(total_concurrency / max(1, instances)))
