"""Which dead letters a selective replay or a discard takes: a pure test of a dead letter's
id and the failure headers of :mod:`workerrmq.core.protocol`, so the rules can be tested
without a broker."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from workerrmq.core import protocol

__all__ = ["DeadLetterSelector", "error_kind"]

#: How the worker starts a dead letter's last error, before the kind of failure.
_REASONS = ("attempts exhausted: ", "permanent failure: ")
_INTERNAL = "internal error: "


def error_kind(last_error: str) -> str:
    """The kind of failure a dead letter's last error names: ``connection``, ``timeout``,
    ``blocked``, ``client``, ``HTTP 503`` ..., or ``internal`` (a WorkerRMQ error)."""
    if last_error.startswith(_INTERNAL):
        return "internal"
    for reason in _REASONS:
        if last_error.startswith(reason):
            last_error = last_error[len(reason) :]
            break
    return last_error.split(": ", 1)[0].strip()


def _moment(value: Any) -> dt.datetime | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetterSelector:
    """Every condition given must hold (none given: every dead letter matches).

    - *message_ids*: the message's id is one of them;
    - *since* / *until*: it was dead-lettered at or after / before that moment;
    - *status*: its last HTTP status (``"503"``) or error kind (``"timeout"``, ``"HTTP 503"``);
    - *error_contains*: its last error holds this text (case-insensitive).
    """

    message_ids: frozenset[str] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    status: str | None = None
    error_contains: str | None = None

    @property
    def everything(self) -> bool:
        """True when no condition is given."""
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def matches(self, message_id: str | None, headers: Mapping[str, Any] | None) -> bool:
        """True if the dead letter of *message_id* with these AMQP *headers* is selected."""
        headers = headers or {}
        if self.message_ids is not None and (message_id or "") not in self.message_ids:
            return False
        if self.since is not None or self.until is not None:
            at = _moment(headers.get(protocol.DEAD_LETTERED_AT))
            if at is None:
                return False
            if self.since is not None and at < self.since:
                return False
            if self.until is not None and at >= self.until:
                return False
        last_error = _text(headers.get(protocol.LAST_ERROR))
        if self.status is not None and not self._status_matches(
            headers.get(protocol.LAST_STATUS), last_error
        ):
            return False
        return self.error_contains is None or self.error_contains.casefold() in last_error.casefold()

    def _status_matches(self, last_status: Any, last_error: str) -> bool:
        wanted = self.status or ""
        if wanted.isascii() and wanted.isdigit():
            return _text(last_status) == str(int(wanted))
        return error_kind(last_error).casefold() == wanted.casefold()
