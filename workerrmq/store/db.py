"""The database handle: engine, sessions, schema migrations."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from workerrmq.errors import DatabaseUnavailable

__all__ = ["Database"]

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant will do: it only has to be the same in every WorkerRMQ process.
_PG_MIGRATION_LOCK = 0x574F524B


class Database:
    """One engine per process. Use :meth:`session` for a unit of work.

    Connection failures surface as :class:`DatabaseUnavailable`, which the API
    answers with 503.
    """

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        try:
            with self._sessions.begin() as session:
                yield session
        except (OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from None

    def ping(self) -> None:
        """Raise :class:`DatabaseUnavailable` unless a trivial query succeeds."""
        with self.session() as session:
            session.execute(text("SELECT 1"))

    def migrate(self) -> None:
        """Bring the schema to the newest version; safe when several processes start at once."""
        if self.revision() == head_revision():
            return  # current: alembic, slow to load and 10 MB in memory, is not needed
        from alembic import command  # imported here: start-up only, and alembic is slow to load
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._migration_lock(), self.engine.begin() as connection:
                if self.url.get_backend_name() == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except (OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from None

    def revision(self) -> str | None:
        """The schema version the database is at; None before the first migration."""
        try:
            with self.engine.connect() as connection:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:
            return None

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        database = self.url.database
        if self.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def dispose(self) -> None:
        self.engine.dispose()


@functools.cache
def head_revision() -> str | None:
    """The newest migration's id, read from the migration files (None if they do not
    form one line). Alembic finds the same; this needs no alembic import."""
    revises: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text()
        revision = re.search(r'^revision = "([^"]+)"$', source, re.MULTILINE)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)$', source, re.MULTILINE)
        if revision is None or down is None:
            return None
        revises[revision.group(1)] = down.group(1)
    heads = revises.keys() - set(revises.values())
    return heads.pop() if len(heads) == 1 else None


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_timeout=5)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 5})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
