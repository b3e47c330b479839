"""Encryption of consumer credentials at rest.

Credentials are sealed with Fernet (AES-128-CBC with HMAC-SHA256, from the
``cryptography`` package) under a key derived by HKDF-SHA256 from ``SECRET_KEY``.
``SECRET_KEY_FALLBACKS`` lists earlier keys that still decrypt; at start every
token is re-encrypted under ``SECRET_KEY`` (MultiFernet's rotation).

Without ``SECRET_KEY`` a random key is generated once into a key file (mode 0600,
next to the SQLite database or at ``SECRET_KEY_FILE``), and each start says so in
one warning. Processes on several hosts must share ``SECRET_KEY`` instead.

The database keeps a small token encrypted under the key it was set up with;
:meth:`Cipher.check` refuses to start with another key, naming ``SECRET_KEY``,
rather than deliver with credentials it cannot read.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from workerrmq.errors import ConfigError
from workerrmq.settings import Settings
from workerrmq.store.db import Database
from workerrmq.store.models import KeyCheck

__all__ = ["Cipher", "key_file_path"]

log = logging.getLogger(__name__)

_HKDF_SALT = b"workerrmq"
_HKDF_INFO = b"consumer credentials"


def _derive(secret: str) -> Fernet:
    """A Fernet key from any string: HKDF-SHA256, so SECRET_KEY need not be a Fernet key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(secret.encode())))


class Cipher:
    """Seals and opens credentials; the first secret encrypts, every one decrypts."""

    def __init__(self, secrets_: Sequence[str], *, source: str = "SECRET_KEY") -> None:
        if not secrets_:
            raise ValueError("at least one secret is needed")
        self.source = source
        self._primary = _derive(secrets_[0])
        self._fernet = MultiFernet([self._primary, *(_derive(s) for s in secrets_[1:])])
        # Definitions are re-read every few seconds; each token is opened once.
        self._open = functools.lru_cache(maxsize=65536)(self._open_uncached)

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        """The cipher of ``SECRET_KEY``, or of the key file when it is unset (with a warning)."""
        if settings.secret_key:
            return cls([settings.secret_key, *settings.secret_key_fallbacks])
        path = key_file_path(settings)
        secret, created = _read_or_create_key_file(path)
        log.warning(
            "SECRET_KEY is not set: consumer credentials are encrypted with the key %s %s; "
            "set SECRET_KEY when WorkerRMQ runs on more than one host",
            "generated into" if created else "kept in",
            path,
        )
        return cls([secret], source=f"SECRET_KEY (unset; the key file {path})")

    def seal(self, values: Mapping[str, Any]) -> str:
        """*values* (JSON-serialisable) as a Fernet token."""
        return self._fernet.encrypt(orjson.dumps(dict(values))).decode()

    def open(self, token: str) -> dict[str, Any]:
        """The values sealed in *token*. Raises :class:`ConfigError` naming SECRET_KEY if
        no key decrypts it."""
        return dict(self._open(token))

    def rotate(self, token: str) -> str | None:
        """*token* re-encrypted under the first key, or None if it already is."""
        with contextlib.suppress(InvalidToken):
            self._primary.decrypt(token)
            return None
        try:
            return self._fernet.rotate(token).decode()
        except InvalidToken:
            raise self._mismatch() from None

    def check(self, db: Database) -> None:
        """Refuse a key the database was not set up with; on a new database, record it."""
        with db.session() as session:
            row = session.scalar(select(KeyCheck))
            if row is not None:
                self.open(row.token)
                rotated = self.rotate(row.token)
                if rotated is not None:
                    row.token = rotated
                return
        try:
            with db.session() as session:
                session.add(KeyCheck(id=1, token=self.seal({"check": "ok"})))
        except IntegrityError:  # another process recorded its key first: it must be ours
            self.check(db)

    def _open_uncached(self, token: str) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = orjson.loads(self._fernet.decrypt(token))
            return opened
        except InvalidToken:
            raise self._mismatch() from None

    def _mismatch(self) -> ConfigError:
        return ConfigError(
            "SECRET_KEY",
            f"does not decrypt the stored consumer credentials (key from {self.source}); "
            "start with the SECRET_KEY this database was set up with (list earlier keys "
            "in SECRET_KEY_FALLBACKS to change it)",
        )


def key_file_path(settings: Settings) -> Path:
    """Where the generated key is kept: ``SECRET_KEY_FILE``, else next to the SQLite
    database, else ``var/workerrmq.key``."""
    if settings.secret_key_file:
        return Path(settings.secret_key_file)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(f"{url.database}.key")
    return Path("var/workerrmq.key")


def _read_or_create_key_file(path: Path) -> tuple[str, bool]:
    """The secret in *path*, made first if absent; True when it was made now. Atomic:
    processes starting together all end up with the first one's key."""
    if path.exists():
        return _read_key(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(draft, path)
            created = True
        except FileExistsError:
            created = False
    finally:
        draft.unlink(missing_ok=True)
    return _read_key(path), created


def _read_key(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError("SECRET_KEY", f"is unset and the key file {path} is empty")
    return secret
