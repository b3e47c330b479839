"""Where the operator commands find the API: flags, then environment, then a config file.

The file is TOML with ``url`` and ``key``; it lives at ``~/.config/workerrmq/config.toml``
(under ``$XDG_CONFIG_HOME`` when that is set) unless ``--config`` or ``WORKERRMQ_CONFIG``
names another one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workerrmq.core.credentials import redact_url

__all__ = ["DEFAULT_URL", "ApiAccess", "ConfigProblem", "default_config_path", "resolve"]

DEFAULT_URL = "http://127.0.0.1:5000"


class ConfigProblem(Exception):
    """The configuration cannot be used; the message says why (never with the key)."""


@dataclass(frozen=True)
class ApiAccess:
    """Where the API is, and the key to send it."""

    url: str
    key: str | None


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "workerrmq" / "config.toml"


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigProblem(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigProblem(f"cannot read config file {path}: {exc}") from None
    for name in ("url", "key"):
        if name in data and not isinstance(data[name], str):
            raise ConfigProblem(f"config file {path}: {name!r} must be a string")
    return data


def resolve(url: str | None, key: str | None, config: str | None) -> ApiAccess:
    """The URL and key to use. *url*, *key* and *config* are what the flags or the
    environment gave (click has already put the flag before the environment)."""
    path = Path(config).expanduser() if config else default_config_path()
    data = _read_file(path, explicit=bool(config)) if not (url and key) else {}
    chosen_url = (url or data.get("url") or DEFAULT_URL).strip().rstrip("/")
    parts = urlsplit(chosen_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigProblem(f"API URL {redact_url(chosen_url)!r} is not an http(s) URL")
    if parts.path.rstrip("/").endswith(("/api", "/api/v1")):
        raise ConfigProblem(
            f"API URL {redact_url(chosen_url)!r} ends in {parts.path!r}: give the API's base URL "
            f"without /api/v1, such as {DEFAULT_URL} (the commands add the /api/v1/... paths)"
        )
    chosen_key = (key or data.get("key") or "").strip() or None
    return ApiAccess(chosen_url, chosen_key)
