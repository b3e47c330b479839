"""Validation of the names users give queues, exchanges and keys."""

from __future__ import annotations

import re

from workerrmq.core.consumer import SOURCE_QUEUE_PREFIX
from workerrmq.errors import InvalidInput

__all__ = ["check_name", "NAME_PATTERN", "NAME_MAX"]

NAME_MAX = 255
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str, *, field: str = "name", kind: str = "queue") -> str:
    """Return *value* if it is an acceptable queue or exchange name, else raise InvalidInput.

    Names are 1 to 255 characters of ASCII letters, digits, ``_ . : -``; not
    ``.`` or ``..`` and not starting with ``amq.`` (RabbitMQ reserves that prefix).
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > NAME_MAX:
        raise InvalidInput(f"{field} is longer than {NAME_MAX} characters", field=field)
    # fullmatch: with match, "$" would let a trailing newline through.
    if not _NAME.fullmatch(value) or value in (".", ".."):
        raise InvalidInput(
            f"{field} may only contain ASCII letters, digits and _ . : - (got {value[:60]!r})",
            field=field,
        )
    if kind == "queue" and value.startswith("amq."):
        raise InvalidInput(f"{field} must not start with 'amq.' (reserved by RabbitMQ)", field=field)
    return value


def check_unreserved(value: str, *, field: str = "name") -> str:
    """*value* if a queue of that name may be created other than as a ``source`` consumer's
    own queue. A consumer with a source takes, rebinds and may delete the queue
    ``wrmq.<its name>`` it finds: made under that name by hand, a queue would be taken over
    (its bindings replaced, its messages relayed, deleted with the consumer)."""
    if value.startswith(SOURCE_QUEUE_PREFIX):
        raise InvalidInput(
            f"{field} must not start with {SOURCE_QUEUE_PREFIX!r}: such queues are the own queues of "
            "consumers with a source, declared by WorkerRMQ",
            field=field,
        )
    return value
