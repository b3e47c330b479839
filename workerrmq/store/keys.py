"""API keys: random tokens, kept only as SHA-256 digests.

Tokens carry 256 bits of randomness, so a fast digest is as safe as a slow
password hash here and costs microseconds per request instead of bcrypt's
hundreds of milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from workerrmq.core.scopes import SCOPES
from workerrmq.errors import Conflict, InvalidInput, NotFound
from workerrmq.store.db import Database
from workerrmq.store.models import ApiKey, as_utc, utcnow

__all__ = ["KeyInfo", "KeyStore", "TOKEN_PREFIX", "scope_allows"]

TOKEN_PREFIX = "wrmq_"
#: How long a process trusts a key it has checked before looking again.
CACHE_SECONDS = 2.0
_CACHE_MAX = 10_000
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


def scope_allows(granted: str, needed: str) -> bool:
    """True when a key of scope *granted* may do what needs scope *needed*."""
    return _RANK[granted] >= _RANK[needed]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: never the token or its digest."""

    id: int
    name: str
    scope: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            row.id,
            row.name,
            row.scope,
            row.prefix,
            as_utc(row.created_at),
            as_utc(row.revoked_at) if row.revoked_at else None,
        )


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[KeyInfo, float]] = {}

    def create(self, name: str, scope: str, token: str | None = None) -> tuple[KeyInfo, str]:
        """Create a key; returns its record and the token, which is never shown again."""
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}", field="scope")
        token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(name=name, scope=scope, digest=digest(token), prefix=token[:12])
        try:
            with self.db.session() as session:
                session.add(row)
                session.flush()
                info = KeyInfo.of(row)
        except IntegrityError:
            raise Conflict(f"a key named {name!r} already exists") from None
        return info, token

    def list(self) -> list[KeyInfo]:
        with self.db.session() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.id))
            return [KeyInfo.of(row) for row in rows]

    def revoke(self, key_id: int) -> KeyInfo:
        with self.db.session() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no key with id {key_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            self._cache.pop(row.digest, None)
            return KeyInfo.of(row)

    def authenticate(self, token: str) -> KeyInfo | None:
        """The live key whose token is *token*, or None.

        A key found is remembered for :data:`CACHE_SECONDS`, so a revocation made
        through another process takes effect within that time.
        """
        wanted = digest(token)
        cached = self._cache.get(wanted)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        info = self._lookup(wanted)
        if info is not None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[wanted] = (info, time.monotonic() + CACHE_SECONDS)
        return info

    def remembered(self, token: str) -> KeyInfo | None:
        """:meth:`authenticate`'s answer while it is remembered, without asking the
        database: None also when the key is not remembered (ask :meth:`authenticate`)."""
        cached = self._cache.get(digest(token))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def _lookup(self, wanted: str) -> KeyInfo | None:
        with self.db.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.digest == wanted))
            if row is None or row.revoked_at is not None:
                return None
            # The lookup is by digest; compare again in constant time for good measure.
            if not hmac.compare_digest(row.digest, wanted):
                return None
            return KeyInfo.of(row)

    def _register_configured(self, token: str) -> None:
        """Make *token* the ``bootstrap`` admin key; a changed token replaces the old one."""
        with self.db.session() as session:
            if session.scalar(select(ApiKey).where(ApiKey.digest == digest(token))):
                return
            row = session.scalar(select(ApiKey).where(ApiKey.name == "bootstrap"))
            if row is not None:
                self._cache.pop(row.digest, None)
                row.digest, row.prefix, row.revoked_at = digest(token), token[:12], None
                return
        with contextlib.suppress(Conflict):  # another process registered it meanwhile
            self.create("bootstrap", "admin", token=token)

    def bootstrap(self, configured_token: str = "") -> str | None:
        """Make sure an admin key exists.

        With *configured_token* (``WORKERRMQ_API_KEY``), that token is registered
        as the admin key named ``bootstrap`` if it is not known yet. Otherwise, when
        the store holds no key at all, a new admin key is created and its token
        returned so the caller can show it once. Safe to call from several
        processes at once: the unique key name lets only one of them win.
        """
        if configured_token:
            self._register_configured(configured_token)
            return None
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(ApiKey)):
                return None
        try:
            _, token = self.create("admin", "admin")
        except Conflict:
            return None
        return token
