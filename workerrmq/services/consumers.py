"""Consumer management: definitions in the store, workers told of every change."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from workerrmq.broker.control import announce_change
from workerrmq.broker.management import ManagementClient
from workerrmq.broker.publisher import Publisher
from workerrmq.core.consumer import (
    AUTH_SECRETS,
    ConsumerSpec,
    dead_letter_queue_for,
    redact_auth,
    restore_auth,
    url_origin,
)
from workerrmq.core.credentials import (
    PLACEHOLDER,
    PlaceholderUnmatched,
    auth_conflict,
    looks_secret,
    redact_headers,
    redact_url,
    restore_headers,
    restore_url,
    secret_headers,
)
from workerrmq.core.dead_letters import DeadLetterSelector
from workerrmq.core.endpoint_auth import AuthInvalid, check_pems, target_conflict
from workerrmq.core.protocol import dead_letter_view
from workerrmq.core.signing import new_secret
from workerrmq.core.status import ConsumerState
from workerrmq.errors import Conflict, InvalidInput, NotFound
from workerrmq.guard import TargetBlocked, check_target
from workerrmq.services.names import check_name, check_unreserved
from workerrmq.services.queues import QueueService
from workerrmq.services.subscriptions import SourceQueues
from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.health import HealthStore

__all__ = ["ConsumerService"]


def view(spec: ConsumerSpec) -> dict[str, Any]:
    """What the API shows of a consumer: its credentials as ``***``, its signing secrets
    only as ``signing: true``."""
    shown = dataclasses.asdict(spec)
    shown["target_url"] = redact_url(spec.target_url)
    shown["headers"] = redact_headers(spec.headers)
    shown["auth"] = redact_auth(spec.auth)
    shown["signing"] = shown.pop("signing_secret") is not None
    del shown["signing_secret_previous"]
    shown["retry_on"] = list(spec.retry_on)
    return shown


class ConsumerService:
    def __init__(
        self,
        store: ConsumerStore,
        queues: QueueService,
        management: ManagementClient,
        publisher: Publisher,
        *,
        default_target_url: str,
        block_private_targets: bool = False,
    ) -> None:
        self.block_private_targets = block_private_targets
        self.store = store
        self.health = HealthStore(store.db)  # what the workers' health watch found
        self.queues = queues
        self.management = management
        self.publisher = publisher
        self.default_target_url = default_target_url
        self.sources = SourceQueues(management, queues, publisher.queue_counts)

    def create(self, values: dict[str, Any]) -> dict[str, Any]:
        values = dict(values)
        create_queue = values.pop("create_queue", False)
        source = values.get("source")
        if source is not None:
            if values.get("queue") is not None:
                raise InvalidInput("source: give queue or source, not both", field="source")
            values["queue"] = self.sources.queue_for(values["name"])
        _check_queue_names(values)
        values.setdefault("name", values["queue"])
        if not values.get("target_url"):
            if not self.default_target_url:
                raise InvalidInput(
                    "target_url is required (no DEFAULT_TARGET_URL is configured)", field="target_url"
                )
            values["target_url"] = self.default_target_url
        with _placeholders():
            values["target_url"] = restore_url(values["target_url"], None)
            values["headers"] = restore_headers(values.get("headers") or {}, {})
            values["auth"] = restore_auth(values.get("auth"), None)
        if values.get("signing_secret") == PLACEHOLDER:
            raise InvalidInput(
                f"signing_secret: {PLACEHOLDER!r} keeps a stored secret, and a new "
                "consumer has none; send the secret itself",
                field="signing_secret",
            )
        _check_consistent(values, values)
        self._check_target(values["target_url"])
        self._check_token_url(values.get("auth"))
        if source is not None:
            self._check_name_free(values["name"])  # its queue may be another consumer's
            self.sources.declare(values["queue"], source)
        elif not self.queues.exists(values["queue"]):
            if not create_queue:
                raise NotFound(
                    f"queue {values['queue']!r} not found; create it first or send create_queue: true"
                )
            self.queues.create(check_unreserved(check_name(values["queue"], field="queue"), field="queue"))
        spec = self.store.create(values)
        announce_change(self.publisher, spec.id, "created")
        return self._with_stats(spec)

    def list(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Every consumer (of *queue*) with its statistics; the seed's listing."""
        return self._views(self.store.list(queue=queue))

    def page(self, *, page: int = 1, page_size: int = 100, queue: str | None = None) -> dict[str, Any]:
        """One page of consumers (of *queue*), oldest first, shaped like a page of queues."""
        specs, total = self.store.page(queue=queue, offset=(page - 1) * page_size, limit=page_size)
        return {"items": self._views(specs), "page": page, "page_size": page_size, "total": total}

    def oldest_of(self, queue: str) -> str | None:
        """The id of the oldest consumer of *queue*, or None if it has none."""
        specs, _ = self.store.page(queue=queue, limit=1)
        return specs[0].id if specs else None

    def get(self, ref: str) -> dict[str, Any]:
        return self._with_stats(self.store.get(_ref(ref)))

    def update(self, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
        ref = _ref(ref)
        changes = dict(changes)
        _check_queue_names(changes)
        if changes.get("signing_secret") == PLACEHOLDER:
            del changes["signing_secret"]  # sent back as read: keep the stored secret
        current = self.store.get(ref)
        _check_source_change(current, changes)
        _check_credentials_stay(current, changes)
        with _placeholders():
            if changes.get("target_url"):
                changes["target_url"] = restore_url(changes["target_url"], current.target_url)
            if "headers" in changes:
                changes["headers"] = restore_headers(changes["headers"] or {}, current.headers)
            if "auth" in changes:
                changes["auth"] = restore_auth(changes["auth"], current.auth)
        _check_consistent({**dataclasses.asdict(current), **changes}, changes)
        if changes.get("target_url"):
            self._check_target(changes["target_url"])
        if changes.get("auth"):
            self._check_token_url(changes["auth"])
        if "queue" in changes and not self.queues.exists(changes["queue"]):
            raise NotFound(f"queue {changes['queue']!r} not found")
        if "initial_delay" in changes or "max_delay" in changes:
            # The schema only sees the request; check the policy the consumer would end up with.
            initial = changes.get("initial_delay", current.initial_delay)
            maximum = changes.get("max_delay", current.max_delay)
            if initial > maximum:
                field = "max_delay" if "max_delay" in changes else "initial_delay"
                raise InvalidInput(
                    f"max_delay ({maximum}) must not be smaller than initial_delay ({initial})",
                    field=field,
                )
        if changes.get("source") is not None and changes["source"] != current.source:
            self.sources.declare(current.queue, changes["source"])
        spec = self.store.update(ref, changes)
        announce_change(self.publisher, spec.id, "updated")
        return self._with_stats(spec)

    def rotate_signing_secret(
        self, ref: str, *, grace_seconds: int, secret: str | None = None
    ) -> dict[str, Any]:
        """Sign with *secret* (a new random one if None) from now on; requests carry the
        current secret's signature too for *grace_seconds*, so receivers can switch over.

        Answers the consumer with the new secret, shown this once. Rotating again within
        the grace keeps only the secret being replaced, not the one before it.
        """
        current = self.store.get(_ref(ref))
        secret = secret or new_secret()
        if secret in (current.signing_secret, current.signing_secret_previous):
            raise InvalidInput("secret: must differ from the current and the previous secret", field="secret")
        keep = current.signing_secret if grace_seconds > 0 else None
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace_seconds) if keep else None
        spec = self.store.update(
            ref,
            {
                "signing_secret": secret,
                "signing_secret_previous": keep,
                "signing_secret_previous_until": until,
            },
        )
        announce_change(self.publisher, spec.id, "updated")
        return {**self._with_stats(spec), "signing_secret": secret}

    def set_state(self, ref: str, state: ConsumerState) -> dict[str, Any]:
        return self.update(ref, {"state": state})

    def delete(self, ref: str, *, delete_queue: bool = False) -> None:
        """Delete a consumer; with *delete_queue*, a source consumer's own queue too (only
        that: another consumer's queue is deleted through ``/api/v1/queues``)."""
        ref = _ref(ref)
        if delete_queue:
            spec = self.store.get(ref)
            if spec.source is None:
                raise InvalidInput(
                    f"delete_queue: only the queue of a consumer with a source is deleted with it; "
                    f"delete {spec.queue!r} through /api/v1/queues",
                    field="delete_queue",
                )
            others = [c.name for c in self.store.list(queue=spec.queue) if c.id != spec.id]
            if others:
                raise Conflict(f"queue {spec.queue!r} not deleted: consumers {others} take from it too")
        spec = self.store.delete(ref)
        announce_change(self.publisher, spec.id, "deleted")
        if delete_queue:
            self.sources.delete(spec.queue)

    def _check_name_free(self, name: str) -> None:
        try:
            self.store.get(name)
        except NotFound:
            return
        raise Conflict(f"a consumer named {name!r} already exists")

    def dead_letters(self, ref: str, *, offset: int, limit: int) -> dict[str, Any]:
        """Peek at dead-lettered messages without taking them."""
        spec = self.store.get(_ref(ref))
        try:
            raw = self.management.peek_messages(spec.dead_letter_queue, offset + limit)
            total = self.queues.get(spec.dead_letter_queue)["messages"]
        except NotFound:
            raw, total = [], 0
        items = [dead_letter_view(m) for m in raw[offset : offset + limit]]
        return {"items": items, "offset": offset, "limit": limit, "total": max(total, len(raw))}

    def replay(
        self, ref: str, count: int | None, selector: DeadLetterSelector | None = None
    ) -> dict[str, int]:
        """Move the dead letters *selector* picks (every one when None), up to *count*, back
        to the consumer's queue; the others stay, in their order. Answers how many matched,
        moved and remain (``replayed``: moved, the answer's older name)."""
        spec = self.store.get(_ref(ref))
        try:
            if selector is None or selector.everything:  # from the head: batched, the fastest
                done = self.publisher.replay(spec.dead_letter_queue, spec.queue, count)
            else:
                done = self.publisher.sift(spec.dead_letter_queue, spec.queue, selector, count)
        except NotFound:
            if not self.queues.exists(spec.dead_letter_queue):
                return {"replayed": 0, "matched": 0, "moved": 0, "remaining": 0}
            raise
        return {
            "replayed": done.moved,
            "matched": done.matched,
            "moved": done.moved,
            "remaining": done.remaining,
        }

    def discard(self, ref: str, selector: DeadLetterSelector) -> dict[str, int]:
        """Delete the dead letters *selector* picks (every one when it gives no condition);
        the others stay, in their order."""
        spec = self.store.get(_ref(ref))
        try:
            done = self.publisher.sift(spec.dead_letter_queue, None, selector, None)
        except NotFound:
            if not self.queues.exists(spec.dead_letter_queue):
                return {"matched": 0, "discarded": 0, "remaining": 0}
            raise
        return {"matched": done.matched, "discarded": done.moved, "remaining": done.remaining}

    def _check_target(self, url: str, field: str = "target_url") -> None:
        if not self.block_private_targets:
            return
        try:
            check_target(url)
        except TargetBlocked as exc:
            raise InvalidInput(f"{field} refused: {exc}", field=field) from None

    def _check_token_url(self, auth: dict[str, Any] | None) -> None:
        """An OAuth2 token endpoint is a target too: the guard refuses the same addresses."""
        if auth and auth.get("type") == "oauth2":
            self._check_target(auth["token_url"], "auth.token_url")

    def _with_stats(self, spec: ConsumerSpec) -> dict[str, Any]:
        return {**view(spec), **self.health.views([spec.id])[spec.id], "stats": self.store.stats(spec.id)}

    def _views(self, specs: builtins.list[ConsumerSpec]) -> builtins.list[dict[str, Any]]:
        stats = self.store.stats_of(spec.id for spec in specs)
        health = self.health.views(spec.id for spec in specs)
        return [{**view(spec), **health[spec.id], "stats": stats[spec.id]} for spec in specs]


def _check_consistent(result: dict[str, Any], sent: dict[str, Any]) -> None:
    """Refuse a definition no delivery could succeed with. *result* is the consumer as it
    would be saved, *sent* what the request set (which field the error names)."""
    dead_letter_queue = result.get("dead_letter_queue") or dead_letter_queue_for(result["queue"])
    if dead_letter_queue == result["queue"]:
        raise InvalidInput(
            "dead_letter_queue: must differ from queue (its messages would come back forever)",
            field="dead_letter_queue" if "dead_letter_queue" in sent else "queue",
        )
    _check_subscription(result, sent)
    _check_auth(result, sent)
    if auth_conflict(result["target_url"], result.get("headers") or {}):
        field = "headers" if "headers" in sent else "target_url"
        raise InvalidInput(
            f"{field}: an Authorization header cannot go with credentials in target_url "
            "(user:password@); keep one of them",
            field=field,
        )


def _check_auth(result: dict[str, Any], sent: dict[str, Any]) -> None:
    """Refuse an ``auth`` that cannot go with the target or headers, or an mTLS key that is
    not its certificate's (checked here, as the key may be a stored one kept by ``***``)."""
    auth = result.get("auth")
    if not auth:
        return
    conflict = target_conflict(auth, result["target_url"], result.get("headers") or {})
    if conflict is not None:
        field, message = conflict
        raise InvalidInput(message, field=field if field in sent else "auth")
    if auth["type"] == "mtls":
        try:
            check_pems(auth["cert_pem"], auth["key_pem"], auth.get("ca_pem"))
        except AuthInvalid as exc:
            raise InvalidInput(exc.message, field=exc.field) from None


def _check_subscription(result: dict[str, Any], sent: dict[str, Any]) -> None:
    """Refuse subscription fields that cannot go together; the error names a field *sent*."""

    def named(*fields: str) -> str:
        return next((field for field in fields if field in sent), fields[0])

    if result.get("batch") is None:
        return
    if result.get("ordered"):
        field = named("batch", "ordered")
        raise InvalidInput(
            f"{field}: batch cannot go with ordered (a batch takes many messages at once, "
            "ordered one at a time)",
            field=field,
        )
    if result.get("reply"):
        field = named("batch", "reply")
        raise InvalidInput(
            f"{field}: batch cannot go with reply (one answer cannot be a reply to each message)",
            field=field,
        )
    if result.get("format", "raw") != "raw":
        field = named("batch", "format")
        raise InvalidInput(f"{field}: batch has its own encoding; format must be raw with it", field=field)


def _check_source_change(current: ConsumerSpec, changes: dict[str, Any]) -> None:
    """A consumer keeps its kind: one of a queue cannot take a source, nor one with a source
    lose it or change its queue (wrmq.<name>, declared for it); its source may change."""
    if current.source is None:
        if changes.get("source") is not None:
            raise InvalidInput(
                "source: this consumer takes the queue it names; create a new consumer with the source",
                field="source",
            )
        return
    if "source" in changes and changes["source"] is None:
        raise InvalidInput(
            "source: it cannot be removed (the consumer's queue is its own); delete the consumer instead",
            field="source",
        )
    if changes.get("queue") not in (None, current.queue):
        raise InvalidInput(
            f"queue: a consumer with a source takes its own queue {current.queue!r}; change source instead",
            field="queue",
        )
    if changes.get("name") not in (None, current.name):
        # Moving the queue would need a new queue bound beside the old one and the old one's
        # messages moved over while both fill: messages twice, or a gap. Refusing keeps the
        # rule "a source consumer's queue is wrmq.<its name>" true.
        raise InvalidInput(
            f"name: a consumer with a source cannot be renamed, as its queue {current.queue!r} is "
            "named after it; create a consumer of the new name with the same source, then delete "
            "this one (?delete_queue=true) once its queue is empty",
            field="name",
        )


def _check_queue_names(values: dict[str, Any]) -> None:
    """The queues a consumer names must be ones the API can manage: not ``.``, ``..`` or
    ``amq.*`` (the schema checks only the characters)."""
    for field in ("queue", "dead_letter_queue"):
        if values.get(field) is not None:
            check_name(values[field], field=field)


def _ref(ref: str) -> str:
    """A consumer id or name from a URL. No consumer's has a NUL, and PostgreSQL cannot
    even compare text holding one (it would be a 500, not a 404)."""
    if "\x00" in ref:
        raise NotFound(f"consumer {ref!r} not found")
    return ref


def _check_credentials_stay(current: ConsumerSpec, changes: dict[str, Any]) -> None:
    """Refuse a ``target_url`` on another scheme, host or port that would take stored
    credentials along without their being sent again: whoever may edit a consumer but not
    read its secrets would otherwise have the worker send them to a server of theirs."""
    if not changes.get("target_url") or url_origin(changes["target_url"]) == url_origin(current.target_url):
        return
    carried: list[str] = []
    auth = changes.get("auth", current.auth) or {}
    kept = "auth" not in changes or any(auth.get(key) == PLACEHOLDER for key in AUTH_SECRETS)
    # An mtls key never leaves the worker: the new host sees the certificate only.
    if auth and auth.get("type") != "mtls" and kept:
        carried.append("auth")
    if "headers" in changes:
        headers = changes["headers"] or {}
        carried += [f"headers {n!r}" for n, v in headers.items() if v == PLACEHOLDER and looks_secret(n)]
    else:
        carried += [f"headers {n!r}" for n in secret_headers(current.headers)]
    if carried:
        raise InvalidInput(
            f"target_url moves to another scheme, host or port, and the stored credentials "
            f"({', '.join(carried)}) do not go along unsent: send them again in the same request, "
            "or remove them",
            field="target_url",
        )


@contextlib.contextmanager
def _placeholders() -> Iterator[None]:
    """Answer a placeholder that stands for no stored credential with a 400 naming its field."""
    try:
        yield
    except PlaceholderUnmatched as exc:
        raise InvalidInput(exc.message, field=exc.field) from None
