"""Tables. Every change here needs a migration in ``migrations/versions``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workerrmq.core.consumer import DEFAULTS
from workerrmq.core.status import CircuitState, RunnerStatus

__all__ = [
    "Base",
    "ApiKey",
    "AttemptRow",
    "ConsumerDef",
    "ConsumerHealth",
    "ConsumerStats",
    "ManagedObject",
    "StatsSample",
    "WorkerRecord",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """*moment* with its time zone; SQLite hands back naive datetimes, written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """An API key. Only the SHA-256 digest of the token is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


def new_id() -> str:
    return uuid.uuid4().hex


class ConsumerDef(Base):
    """A consumer: forwards each message of ``queue`` to ``target_url``; its fields and
    their defaults are those of :class:`workerrmq.core.consumer.ConsumerSpec`.

    ``target_url``, ``headers`` and ``auth`` hold the definition as shown, credentials
    replaced by ``***``; ``credentials`` holds the values themselves and the signing
    secrets, encrypted (see
    :mod:`workerrmq.store.crypto` and :mod:`workerrmq.core.credentials`).
    """

    __tablename__ = "consumers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    queue: Mapped[str] = mapped_column(String(255), index=True)
    target_url: Mapped[str] = mapped_column(String(2048))
    method: Mapped[str] = mapped_column(String(8), default=DEFAULTS["method"])
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    timeout: Mapped[float] = mapped_column(Float, default=DEFAULTS["timeout"])
    concurrency: Mapped[int] = mapped_column(Integer, default=DEFAULTS["concurrency"])
    max_attempts: Mapped[int] = mapped_column(Integer, default=DEFAULTS["max_attempts"])
    initial_delay: Mapped[float] = mapped_column(Float, default=DEFAULTS["initial_delay"])
    max_delay: Mapped[float] = mapped_column(Float, default=DEFAULTS["max_delay"])
    retry_on: Mapped[list[str]] = mapped_column(JSON)
    # Plaintext written before credentials were encrypted; sealed and emptied at start.
    legacy_signing_secret: Mapped[str | None] = mapped_column("signing_secret", String(255))
    credentials: Mapped[str | None] = mapped_column(Text)  # a Fernet token, or None
    rate_limit: Mapped[float | None] = mapped_column(Float)
    ordered: Mapped[bool] = mapped_column(Boolean, default=DEFAULTS["ordered"])
    circuit_threshold: Mapped[int] = mapped_column(Integer, default=DEFAULTS["circuit_threshold"])
    circuit_cooldown: Mapped[float] = mapped_column(Float, default=DEFAULTS["circuit_cooldown"])
    dead_letter_queue: Mapped[str] = mapped_column(String(255))
    instances: Mapped[int | None] = mapped_column(Integer)  # None: every worker
    state: Mapped[str] = mapped_column(String(16), default=DEFAULTS["state"].value)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    filter: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32), default=DEFAULTS["format"])
    ce_source: Mapped[str | None] = mapped_column(String(2048))
    # Shown as is, secrets as ``***``; the whole object is in ``credentials``.
    auth: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reply: Mapped[bool] = mapped_column(Boolean, default=DEFAULTS["reply"])
    batch: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    degraded_after: Mapped[float] = mapped_column(Float, default=DEFAULTS["degraded_after"])
    # signing_secret_previous itself is in ``credentials``.
    signing_secret_previous_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsumerStats(Base):
    """One worker's running totals for one consumer, written every few seconds."""

    __tablename__ = "consumer_stats"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("consumers.id", ondelete="CASCADE"), primary_key=True
    )
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    retried: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_lettered: Mapped[int] = mapped_column(BigInteger, default=0)
    filtered: Mapped[int] = mapped_column(BigInteger, default=0)
    filter_errors: Mapped[int] = mapped_column(BigInteger, default=0)
    replies: Mapped[int] = mapped_column(BigInteger, default=0)
    replies_unroutable: Mapped[int] = mapped_column(BigInteger, default=0)
    in_flight: Mapped[int] = mapped_column(BigInteger, default=0)
    circuit: Mapped[str] = mapped_column(String(16), default=CircuitState.CLOSED.value)
    status: Mapped[str] = mapped_column(String(32), default=RunnerStatus.CONSUMING.value)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsumerHealth(Base):
    """A consumer's health as last assessed (:mod:`workerrmq.store.health`): when its
    trouble started, whether it is degraded, and which change was last notified."""

    __tablename__ = "consumer_health"

    consumer_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("consumers.id", ondelete="CASCADE"), primary_key=True
    )
    health: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    circuit_open_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_mark: Mapped[int | None] = mapped_column(BigInteger)
    dead_letters: Mapped[int] = mapped_column(BigInteger)
    dead_letters_grew_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    notified: Mapped[str] = mapped_column(String(16))  # the health last notified
    notify_claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)  # bumped by each write: compare-and-set


class StatsSample(Base):
    """Every consumer's totals and every queue's figures at one moment, as one worker took
    them (:mod:`workerrmq.store.history`). The moment is the key: a second worker that
    takes the same one cannot write it twice."""

    __tablename__ = "stats_samples"

    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    step: Mapped[float] = mapped_column(Float)  # seconds between samples when it was taken
    worker: Mapped[str] = mapped_column(String(64))
    # JSON text, read with orjson (several times faster than the JSON type's decoder here):
    consumers: Mapped[str] = mapped_column(Text)  # {id: totals, as HISTORY_COUNTERS}
    queues: Mapped[str] = mapped_column(Text)  # {name: figures, as QUEUE_FIGURES}


class KeyCheck(Base):
    """A token encrypted under the key the credentials are encrypted with: a start with
    another ``SECRET_KEY`` fails to open it and stops, naming the variable."""

    __tablename__ = "key_check"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(Text)


class WorkerRecord(Base):
    """A worker process, as it registered itself; its heartbeat says it is alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class AttemptRow(Base):
    """One delivery attempt, as a worker made it (:mod:`workerrmq.store.attempts`)."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_consumer_at", "consumer_id", "at"),
        Index("ix_attempts_message_id", "message_id"),
        Index("ix_attempts_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(32))
    consumer: Mapped[str] = mapped_column(String(200))  # its name then: kept after a rename or delete
    message_id: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP status; None when no answer came
    error: Mapped[str | None] = mapped_column(String(64))  # connection, timeout, HTTP 503 ...
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, retry, dead_lettered, failed
    response: Mapped[str | None] = mapped_column(Text)  # the first 1 KB of an error's answer
    worker: Mapped[str] = mapped_column(String(64))


class ManagedObject(Base):
    """A queue or exchange that ``workerrmq apply`` declared, so ``--prune`` may delete it.

    Broker objects carry no labels and queue arguments cannot change, so the record is kept here.
    """

    __tablename__ = "managed_objects"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "queue" or "exchange"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    declared_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
