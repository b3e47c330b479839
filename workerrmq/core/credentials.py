"""Which parts of a consumer's definition are credentials, and how they are shown.

Credentials are write-only. They are the password of ``target_url`` (or its user
name when it has no password: tokens often travel that way), every query value
whose name looks like a credential (``token``, ``api_key``, ``sig``, ...), every
header whose name looks like one (``Authorization``, ``Cookie``, ``X-Api-Key``,
``*Token*``, ...), and the signing secret. Wherever a definition is shown, each
of these values is replaced by :data:`PLACEHOLDER` (``***``); the signing secret
shows only as ``"signing": true``.

A client that reads a consumer and sends it back unchanged sends the placeholders:
:func:`restore_url` and :func:`restore_headers` put the stored values back in their
place, so such a round trip keeps every secret. A URL keeps its stored credentials
only while its scheme, host and port stay the same: a placeholder cannot carry a
password to another host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "PLACEHOLDER",
    "PlaceholderUnmatched",
    "auth_conflict",
    "looks_secret",
    "redact_headers",
    "redact_url",
    "restore_headers",
    "restore_url",
    "secret_headers",
]

PLACEHOLDER = "***"


class PlaceholderUnmatched(ValueError):
    """A placeholder was sent where no stored credential can take its place; *field*
    names the field (``target_url`` or ``headers``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


_SECRET_NAME = re.compile(
    r"auth|token|secret|passw|pwd|key|signature|credential|session|cookie|hmac|jwt"
    r"|(?:^|[-_.])(?:sig|pass)(?:$|[-_.])",
    re.IGNORECASE,
)

_Query = list[tuple[str, str | None]]  # raw (still percent-encoded) names and values


def looks_secret(name: str) -> bool:
    """True for a header or query parameter name that looks like it holds a credential."""
    return _SECRET_NAME.search(name) is not None


def secret_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of *headers* whose values are credentials."""
    return {name: value for name, value in headers.items() if looks_secret(name)}


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """*headers* with every credential's value replaced by the placeholder."""
    return {name: PLACEHOLDER if looks_secret(name) else value for name, value in headers.items()}


def redact_url(url: str) -> str:
    """*url* with its credentials replaced by the placeholder; safe to show and log."""
    parts = urlsplit(url)
    userinfo, host = _userinfo(parts)
    query = _split_query(parts.query)
    if userinfo is None and not any(_secret_param(name, value) for name, value in query):
        return url
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{PLACEHOLDER}" if colon else PLACEHOLDER
    shown = [(n, PLACEHOLDER if _secret_param(n, v) else v) for n, v in query]
    return _build(parts, userinfo, host, shown)


def restore_url(new: str, old: str | None) -> str:
    """*new* with each placeholder where a credential goes replaced by *old*'s value there.

    Raises :class:`PlaceholderUnmatched` (field ``target_url``) when a placeholder stands for
    nothing stored, or when the URL moved to another scheme, host or port.
    """
    parts = urlsplit(new)
    userinfo, host = _userinfo(parts)
    query = _split_query(parts.query)
    user, colon, password = (userinfo or "").partition(":")
    placeholders = (
        userinfo is not None and (password == PLACEHOLDER if colon else user == PLACEHOLDER)
    ) or any(_secret_param(n, v) and v == PLACEHOLDER for n, v in query)
    if not placeholders:
        return new
    stored = urlsplit(old) if old else None
    if stored is None or (parts.scheme, host.lower()) != (stored.scheme, _userinfo(stored)[1].lower()):
        raise PlaceholderUnmatched(
            f"target_url: {PLACEHOLDER!r} stands for a stored credential, and this consumer has "
            "none for that scheme, host and port; send the credential itself",
            field="target_url",
        )
    old_userinfo, _ = _userinfo(stored)
    old_user, _, old_password = (old_userinfo or "").partition(":")
    if userinfo is not None:
        if colon and password == PLACEHOLDER:
            password = _stored(old_password if old_userinfo and ":" in old_userinfo else None)
        elif not colon and user == PLACEHOLDER:
            user = _stored(old_user if old_userinfo and ":" not in old_userinfo else None)
        userinfo = f"{user}{colon}{password}"
    old_query = _split_query(stored.query)
    restored = []
    seen: dict[str, int] = {}
    for name, value in query:
        nth = seen.get(name, 0)
        seen[name] = nth + 1
        if _secret_param(name, value) and value == PLACEHOLDER:
            values = [v for n, v in old_query if n == name]
            value = _stored(values[nth] if nth < len(values) else None)
        restored.append((name, value))
    return _build(parts, userinfo, host, restored)


def restore_headers(new: Mapping[str, str], old: Mapping[str, str]) -> dict[str, str]:
    """*new* with each credential header sent as the placeholder given its stored value.

    Raises :class:`PlaceholderUnmatched` (field ``headers``) for a placeholder with no stored value.
    """
    stored = {name.lower(): value for name, value in old.items()}
    restored = {}
    for name, value in new.items():
        if value == PLACEHOLDER and looks_secret(name):
            if name.lower() not in stored:
                raise PlaceholderUnmatched(
                    f"headers: {PLACEHOLDER!r} stands for a stored value of {name!r}, and this "
                    "consumer has none; send the value itself",
                    field="headers",
                )
            value = stored[name.lower()]
        restored[name] = value
    return restored


def auth_conflict(target_url: str, headers: Mapping[str, str]) -> bool:
    """True when *target_url* carries credentials and *headers* an ``Authorization``:
    the HTTP client cannot send both, so no delivery could succeed."""
    userinfo, _ = _userinfo(urlsplit(target_url))
    return userinfo is not None and any(name.lower() == "authorization" for name in headers)


def _stored(value: str | None) -> str:
    if value is None or value == PLACEHOLDER:
        raise PlaceholderUnmatched(
            f"target_url: {PLACEHOLDER!r} stands for a stored credential, and this consumer has "
            "none in that place; send the credential itself",
            field="target_url",
        )
    return value


def _secret_param(name: str, value: str | None) -> bool:
    return value is not None and value != "" and looks_secret(unquote_plus(name))


def _userinfo(parts: SplitResult) -> tuple[str | None, str]:
    """The raw user information (None if absent) and ``host[:port]`` of a URL."""
    userinfo, at, host = parts.netloc.rpartition("@")
    return (userinfo if at else None), host


def _split_query(query: str) -> _Query:
    pairs: _Query = []
    for piece in query.split("&") if query else []:
        name, equals, value = piece.partition("=")
        pairs.append((name, value if equals else None))
    return pairs


def _build(parts: SplitResult, userinfo: str | None, host: str, query: _Query) -> str:
    netloc = host if userinfo is None else f"{userinfo}@{host}"
    text = "&".join(name if value is None else f"{name}={value}" for name, value in query)
    return urlunsplit(parts._replace(netloc=netloc, query=text))
