"""The states of a consumer, of its runner in a worker, and of its circuit breaker.

String enums: each member is its value (``RunnerStatus.CONSUMING == "consuming"``),
so what is stored in the database and shown by the API stays the same text.
"""

from __future__ import annotations

import enum

__all__ = ["CircuitState", "ConsumerState", "Health", "RunnerStatus"]


class ConsumerState(enum.StrEnum):
    """What a consumer's definition asks for: its messages delivered, or not."""

    RUNNING = "running"
    PAUSED = "paused"


class RunnerStatus(enum.StrEnum):
    """What one worker's runner of a consumer is doing; reported with its statistics."""

    STARTING = "starting"
    CONSUMING = "consuming"  # delivering
    QUEUE_MISSING = "queue_missing"  # the queue does not exist (or was deleted); retried
    WAITING_FOR_QUEUE = "waiting_for_queue"  # ordered: another consumer holds the queue
    CIRCUIT_OPEN = "circuit_open"  # too many failures in a row: taking no messages
    PROBING = "probing"  # the circuit's cool-down is over: one message at a time
    CHANNEL_CLOSED = "channel_closed"  # the broker closed the channel; restarted
    NO_CAPACITY = "no_capacity"  # the worker cannot open another channel
    INVALID_DEFINITION = "invalid_definition"  # no request could be sent as configured
    START_FAILED = "start_failed"  # the broker refused the start; retried
    STOPPING = "stopping"
    STOPPED = "stopped"  # no longer run by this worker


class Health(enum.StrEnum):
    """Whether a consumer needs someone's attention (see :mod:`workerrmq.core.health`)."""

    OK = "ok"
    DEGRADED = "degraded"  # its circuit stayed open, or its dead letters grew, too long


class CircuitState(enum.StrEnum):
    CLOSED = "closed"  # delivering normally
    OPEN = "open"  # cooling down, taking no messages
    HALF_OPEN = "half_open"  # one probe delivery decides
