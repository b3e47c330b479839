"""A per-consumer circuit breaker: stop taking messages after repeated failures."""

from __future__ import annotations

import time
from collections.abc import Callable

from workerrmq.core.status import CircuitState

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Opens after *threshold* consecutive failures; after *cooldown* seconds lets
    one probe through; a success closes it, a failure opens it again."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self.remaining() == 0:
            self._state = CircuitState.HALF_OPEN
        return self._state

    def remaining(self) -> float:
        """Seconds of cool-down left (0 unless open)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def record(self, success: bool) -> None:
        if success:
            self.failures = 0
            self._state = CircuitState.CLOSED
            return
        self.failures += 1
        if self._state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()
