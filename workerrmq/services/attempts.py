"""The attempt log as the API reads it: a consumer's attempts, or one message's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from workerrmq.errors import NotFound
from workerrmq.store.attempts import AttemptFilter, AttemptStore
from workerrmq.store.consumers import ConsumerStore

__all__ = ["AttemptService"]


class AttemptService:
    def __init__(self, store: AttemptStore, consumers: ConsumerStore) -> None:
        self.store = store
        self.consumers = consumers

    def of_consumer(
        self,
        ref: str,
        *,
        message_id: str | None = None,
        status: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> dict[str, Any]:
        """One page of the attempts of consumer *ref* (id or name), newest first."""
        if "\x00" in ref:
            raise NotFound(f"consumer {ref!r} not found")
        spec = self.consumers.get(ref)
        where = AttemptFilter(
            consumer_id=spec.id, message_id=message_id, status=status, since=since, until=until
        )
        return self._page(where, page, page_size)

    def of_message(
        self,
        message_id: str,
        *,
        status: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> dict[str, Any]:
        """One page of the attempts made to deliver *message_id*, by any consumer, newest first."""
        where = AttemptFilter(message_id=message_id, status=status, since=since, until=until)
        return self._page(where, page, page_size)

    def _page(self, where: AttemptFilter, page: int, page_size: int) -> dict[str, Any]:
        items, total = self.store.page(where, offset=(page - 1) * page_size, limit=page_size)
        return {"items": items, "total": total, "page": page, "page_size": page_size}
