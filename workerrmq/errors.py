"""WorkerRMQ's error tree.

Library errors (pika, requests, SQLAlchemy) are wrapped at the boundary into one
of these, and the HTTP layer maps each to one JSON response in one place
(:mod:`workerrmq.api.errors`).
"""

from __future__ import annotations

__all__ = [
    "WorkerRMQError",
    "ConfigError",
    "InvalidInput",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooManyRequests",
    "ServiceUnavailable",
    "BrokerUnavailable",
    "DatabaseUnavailable",
]


class WorkerRMQError(Exception):
    """Base of every error WorkerRMQ raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(WorkerRMQError):
    """A setting is missing or invalid; names the environment variable."""

    code = "invalid_config"

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class InvalidInput(WorkerRMQError):
    """The request is malformed; ``field`` names the offending field when known."""

    status = 400
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(WorkerRMQError):
    status = 401
    code = "unauthorized"


class Forbidden(WorkerRMQError):
    status = 403
    code = "forbidden"


class NotFound(WorkerRMQError):
    status = 404
    code = "not_found"


class Conflict(WorkerRMQError):
    status = 409
    code = "conflict"


class TooManyRequests(WorkerRMQError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(WorkerRMQError):
    """A dependency is down; the client should retry after ``retry_after`` seconds."""

    status = 503
    code = "service_unavailable"
    retry_after = 5


class BrokerUnavailable(ServiceUnavailable):
    code = "broker_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
