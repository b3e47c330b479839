"""The one place that reads the environment.

Everything else receives a :class:`Settings`. Values come from the process
environment, then from a ``.env`` file in the working directory (the
environment wins). An invalid value raises :class:`ConfigError` naming the
variable, so start-up stops with a message instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import dotenv_values

from workerrmq.core.consumer import SIGNING_SECRET_LENGTH
from workerrmq.core.credentials import redact_url
from workerrmq.core.signing import secret_bytes
from workerrmq.errors import ConfigError

__all__ = ["Settings"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: What a worker delivers with (``HTTP_CLIENT``): see :mod:`workerrmq.worker.transport`.
HTTP_CLIENTS = ("aiohttp", "reqwest")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime configuration. ``repr`` never shows a secret."""

    rabbitmq_url: str = dataclasses.field(default="amqp://guest:guest@127.0.0.1:5672/%2F", repr=False)
    rabbitmq_management_url: str = dataclasses.field(default="http://guest:guest@127.0.0.1:15672", repr=False)
    database_url: str = dataclasses.field(default="sqlite:///var/workerrmq.sqlite3", repr=False)
    secret_key: str = dataclasses.field(default="", repr=False)
    # Earlier SECRET_KEYs that still decrypt stored credentials (re-encrypted at start).
    secret_key_fallbacks: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    secret_key_file: str = ""  # the generated key's file when SECRET_KEY is unset; "": by the database
    default_target_url: str = ""
    bootstrap_api_key: str = dataclasses.field(default="", repr=False)
    bind: str = "0.0.0.0:5000"
    log_level: str = "INFO"
    log_format: str = "text"
    max_batch: int = 1000
    max_request_bytes: int = 16 * 1024 * 1024
    broker_timeout: float = 5.0
    api_workers: int = 2
    api_threads: int = 8
    block_private_targets: bool = False
    auth_failure_limit: int = 20  # failed authentications per client per minute
    # Proxies whose X-Forwarded-* headers name the client (TRUSTED_PROXIES); none by default.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    worker_bind: str = "127.0.0.1:5001"  # a worker's /healthz, /readyz, /metrics; "" for none
    rabbitmq_management_ca_file: str = ""  # CA bundle for an https management URL; "": the system's
    tls_cert_file: str = ""  # with tls_key_file: the API serves https with this certificate (PEM)
    tls_key_file: str = ""
    url_prefix: str = ""  # the path the API and dashboard live under behind a proxy, e.g. /workerrmq
    worker_max_connections: int = 16  # AMQP connections one worker opens, each for channel_max channels
    # Where a consumer's degraded/recovered events are POSTed (""; none), and their signing secret.
    notify_url: str = dataclasses.field(default="", repr=False)
    notify_secret: str = dataclasses.field(default="", repr=False)
    # The attempt log: on or off, the share of successful attempts kept, and its retention.
    attempt_log: bool = True
    attempt_log_sample_success: float = 1.0
    attempt_log_max_age: float = 7 * 86400.0  # seconds
    attempt_log_max_per_consumer: int = 100_000
    # The worker's delivery client: "aiohttp", or "reqwest" (pyreqwest, less CPU per message).
    http_client: str = "aiohttp"

    @property
    def rabbitmq_urls(self) -> tuple[str, ...]:
        """The brokers of ``RABBITMQ_URL`` (comma-separated: the nodes of a cluster)."""
        return tuple(u.strip() for u in self.rabbitmq_url.split(",") if u.strip())

    @property
    def vhost(self) -> str:
        """The virtual host named by ``RABBITMQ_URL`` (``/`` when it names none)."""
        path = urlsplit(self.rabbitmq_url.split(",")[0].strip()).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from *environ* (default ``os.environ``) over *env_file*."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return cls._parse(values)

    @classmethod
    def _parse(cls, env: Mapping[str, str]) -> Settings:
        kwargs: dict[str, object] = {}

        def text(var: str, field: str) -> None:
            if env.get(var, "").strip():
                kwargs[field] = env[var].strip()

        def integer(var: str, field: str, minimum: int) -> None:
            raw = env.get(var, "").strip()
            if not raw:
                return
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(var, f"must be a whole number, got {raw!r}") from None
            if value < minimum:
                raise ConfigError(var, f"must be at least {minimum}, got {value}")
            kwargs[field] = value

        text("RABBITMQ_URL", "rabbitmq_url")
        text("RABBITMQ_MANAGEMENT_URL", "rabbitmq_management_url")
        text("DATABASE_URL", "database_url")
        text("SECRET_KEY", "secret_key")
        text("SECRET_KEY_FILE", "secret_key_file")
        fallbacks = [k.strip() for k in env.get("SECRET_KEY_FALLBACKS", "").split(",") if k.strip()]
        if fallbacks:
            kwargs["secret_key_fallbacks"] = tuple(fallbacks)
        text("EPINTOWER_API_PROCESS_ORDER", "default_target_url")
        if "default_target_url" in kwargs and not env.get("DEFAULT_TARGET_URL", "").strip():
            # Only the seed's alias is set: name it, not DEFAULT_TARGET_URL, if it is invalid.
            _check_url("EPINTOWER_API_PROCESS_ORDER", str(kwargs["default_target_url"]), ("http", "https"))
        text("DEFAULT_TARGET_URL", "default_target_url")
        text("WORKERRMQ_API_KEY", "bootstrap_api_key")
        text("BIND", "bind")
        text("RABBITMQ_MANAGEMENT_CA_FILE", "rabbitmq_management_ca_file")
        text("TLS_CERT_FILE", "tls_cert_file")
        text("TLS_KEY_FILE", "tls_key_file")
        if env.get("URL_PREFIX", "").strip():
            kwargs["url_prefix"] = env["URL_PREFIX"].strip().rstrip("/")
        if "WORKER_BIND" in env:
            kwargs["worker_bind"] = env["WORKER_BIND"].strip()
        integer("MAX_BATCH", "max_batch", 1)
        integer("MAX_REQUEST_BYTES", "max_request_bytes", 1024)
        integer("API_WORKERS", "api_workers", 1)
        integer("API_THREADS", "api_threads", 1)
        integer("AUTH_FAILURE_LIMIT", "auth_failure_limit", 1)
        if env.get("TRUSTED_PROXIES", "").strip():
            kwargs["trusted_proxies"] = _networks("TRUSTED_PROXIES", env["TRUSTED_PROXIES"])
        integer("WORKER_MAX_CONNECTIONS", "worker_max_connections", 1)
        text("NOTIFY_URL", "notify_url")
        text("NOTIFY_SECRET", "notify_secret")
        _attempt_log(env, kwargs)
        flag = env.get("BLOCK_PRIVATE_TARGETS", "").strip().lower()
        if flag:
            if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigError("BLOCK_PRIVATE_TARGETS", f"must be true or false, got {flag!r}")
            kwargs["block_private_targets"] = flag in ("1", "true", "yes", "on")
        if env.get("LOG_LEVEL", "").strip():
            kwargs["log_level"] = env["LOG_LEVEL"].strip().upper()
        if env.get("LOG_FORMAT", "").strip():
            kwargs["log_format"] = env["LOG_FORMAT"].strip().lower()
        if env.get("HTTP_CLIENT", "").strip():
            kwargs["http_client"] = env["HTTP_CLIENT"].strip().lower()
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first invalid value."""
        for url in self.rabbitmq_url.split(","):
            _check_url("RABBITMQ_URL", url.strip(), ("amqp", "amqps"))
            _check_tls_files("RABBITMQ_URL", url.strip())
        for url in self.rabbitmq_management_url.split(","):
            _check_url("RABBITMQ_MANAGEMENT_URL", url.strip(), ("http", "https"))
        if self.default_target_url:
            _check_url("DEFAULT_TARGET_URL", self.default_target_url, ("http", "https"))
        self._validate_tls()
        self._validate_notify()
        if "://" not in self.database_url:
            raise ConfigError("DATABASE_URL", "must be a URL such as sqlite:///path/to/file.db")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError("LOG_FORMAT", "must be 'text' or 'json'")
        if self.http_client not in HTTP_CLIENTS:
            raise ConfigError("HTTP_CLIENT", f"must be {' or '.join(HTTP_CLIENTS)}, got {self.http_client!r}")
        _check_bind("BIND", self.bind, allow_zero=False)
        if self.worker_bind:
            _check_bind("WORKER_BIND", self.worker_bind, allow_zero=True)

    def _validate_tls(self) -> None:
        for var, path in (
            ("RABBITMQ_MANAGEMENT_CA_FILE", self.rabbitmq_management_ca_file),
            ("TLS_CERT_FILE", self.tls_cert_file),
            ("TLS_KEY_FILE", self.tls_key_file),
        ):
            _check_file(var, path)
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("TLS_CERT_FILE", "and TLS_KEY_FILE must be set together")
        if self.url_prefix and (
            not self.url_prefix.startswith("/")
            or "?" in self.url_prefix
            or "#" in self.url_prefix
            or "//" in self.url_prefix
        ):
            raise ConfigError("URL_PREFIX", f"must be a path such as /workerrmq, got {self.url_prefix!r}")

    def _validate_notify(self) -> None:
        if self.notify_url:
            # Checked before parsing: urlsplit drops CR, LF and tabs without a word.
            if len(self.notify_url) > 2048 or any(
                c.isspace() or not c.isprintable() for c in self.notify_url
            ):
                raise ConfigError(
                    "NOTIFY_URL",
                    "must be one http or https URL of at most 2048 characters, with no "
                    "spaces, line breaks or control characters",
                )
            _check_url("NOTIFY_URL", self.notify_url, ("http", "https"))
        if self.notify_secret:
            shortest, longest = SIGNING_SECRET_LENGTH
            if not shortest <= len(self.notify_secret) <= longest:
                raise ConfigError("NOTIFY_SECRET", f"must be {shortest} to {longest} characters long")
            try:
                secret_bytes(self.notify_secret)
            except ValueError as exc:
                raise ConfigError("NOTIFY_SECRET", str(exc)) from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _attempt_log(env: Mapping[str, str], kwargs: dict[str, object]) -> None:
    """``ATTEMPT_LOG`` (true/false), ``ATTEMPT_LOG_SAMPLE_SUCCESS`` (0 to 1),
    ``ATTEMPT_LOG_MAX_AGE`` (seconds, or with s/m/h/d: ``7d``), ``ATTEMPT_LOG_MAX_PER_CONSUMER``."""
    flag = env.get("ATTEMPT_LOG", "").strip().lower()
    if flag:
        if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError("ATTEMPT_LOG", f"must be true or false, got {flag!r}")
        kwargs["attempt_log"] = flag in ("1", "true", "yes", "on")
    raw = env.get("ATTEMPT_LOG_SAMPLE_SUCCESS", "").strip()
    if raw:
        try:
            share = float(raw)
        except ValueError:
            raise ConfigError(
                "ATTEMPT_LOG_SAMPLE_SUCCESS", f"must be a number from 0 to 1, got {raw!r}"
            ) from None
        if not 0.0 <= share <= 1.0:
            raise ConfigError("ATTEMPT_LOG_SAMPLE_SUCCESS", f"must be from 0 to 1, got {raw!r}")
        kwargs["attempt_log_sample_success"] = share
    raw = env.get("ATTEMPT_LOG_MAX_AGE", "").strip().lower()
    if raw:
        unit = _DURATION_UNITS.get(raw[-1])
        number = raw[:-1] if unit else raw
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            raise ConfigError(
                "ATTEMPT_LOG_MAX_AGE", f"must be seconds or e.g. 7d, 12h, got {raw!r}"
            ) from None
        if not 60 <= seconds <= 10 * 365 * 86400:
            raise ConfigError("ATTEMPT_LOG_MAX_AGE", f"must be from 1 minute to 10 years, got {raw!r}")
        kwargs["attempt_log_max_age"] = seconds
    raw = env.get("ATTEMPT_LOG_MAX_PER_CONSUMER", "").strip()
    if raw:
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 100_000_000:
            raise ConfigError(
                "ATTEMPT_LOG_MAX_PER_CONSUMER", f"must be a whole number from 1 to 100000000, got {raw!r}"
            )
        kwargs["attempt_log_max_per_consumer"] = int(raw)


def _check_file(var: str, path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(var, f"names no readable file: {path!r}")


def _check_tls_files(var: str, url: str) -> None:
    """The ``cafile``, ``certfile`` and ``keyfile`` of an amqps URL must exist."""
    for name, values in parse_qs(urlsplit(url).query).items():
        if name in ("cafile", "certfile", "keyfile") and not Path(values[-1]).is_file():
            raise ConfigError(var, f"{name} names no readable file: {values[-1]!r}")


def _networks(var: str, value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks, such as ``10.0.0.5, 10.1.0.0/16, ::1``."""
    networks = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(var, f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _check_bind(var: str, bind: str, *, allow_zero: bool) -> None:
    host, sep, port = bind.rpartition(":")
    lowest = 0 if allow_zero else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ConfigError(var, f"must be HOST:PORT, got {bind!r}")


def _check_url(var: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(var, f"is not a valid URL ({exc})") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(var, f"must be a {' or '.join(schemes)} URL with a host, got {redact_url(url)!r}")
