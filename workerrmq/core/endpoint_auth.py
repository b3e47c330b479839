"""How a consumer authenticates to its endpoint (its ``auth``): the shapes it takes,
checked without I/O when a definition is saved, and which of its values are secrets.

One of ``{"type": "bearer", "token"}``, ``{"type": "basic", "username", "password"}``,
``{"type": "oauth2", "token_url", "client_id", "client_secret", "scope"?}`` (the
client-credentials grant) or ``{"type": "mtls", "cert_pem", "key_pem", "ca_pem"?}``
(a client certificate, and the one CA the endpoint's certificate must chain to).

Every value ends up in a request header, a token request or a TLS handshake, so each is
checked here for what would make that impossible (CR/LF, a colon in a Basic user name, a
key that is not the certificate's), and the API answers a 400 naming ``auth.<field>``
instead of the worker failing every delivery later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = ["AUTH_TYPES", "SECRET_FIELDS", "AuthInvalid", "check_auth", "check_pems", "target_conflict"]

#: Each type's fields: (required, optional).
_SHAPES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bearer": (("token",), ()),
    "basic": (("username", "password"), ()),
    "oauth2": (("token_url", "client_id", "client_secret"), ("scope",)),
    "mtls": (("cert_pem", "key_pem"), ("ca_pem",)),
}
AUTH_TYPES = tuple(_SHAPES)
#: The values that are credentials: write-only, shown as ``***``.
SECRET_FIELDS = frozenset({"token", "password", "client_secret", "key_pem"})

#: Longest value of each field, in characters (a PEM may hold a chain).
_MAX_LENGTH = {
    "token": 8192,
    "username": 1024,
    "password": 1024,
    "token_url": 2048,
    "client_id": 1024,
    "client_secret": 4096,
    "scope": 1024,
    "cert_pem": 100_000,
    "key_pem": 100_000,
    "ca_pem": 100_000,
}
_PEMS = ("cert_pem", "key_pem", "ca_pem")
_TLS_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


class AuthInvalid(ValueError):
    """An ``auth`` value no request could be made with; *field* names it (``auth.token``)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = f"auth.{field}" if field else "auth"
        self.message = f"{self.field} {problem}"
        super().__init__(self.message)


def check_auth(value: Any) -> dict[str, str]:
    """*value* as a valid ``auth`` object, or :class:`AuthInvalid` naming the first bad field."""
    if not isinstance(value, Mapping):
        raise AuthInvalid("", "must be an object with a type")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _SHAPES:
        raise AuthInvalid("type", f"must be one of {', '.join(AUTH_TYPES)}")
    required, optional = _SHAPES[kind]
    for name in value:
        if name != "type" and name not in required and name not in optional:
            raise AuthInvalid(str(name)[:100], f"is not a field of {kind} auth")
    checked: dict[str, str] = {"type": kind}
    for name in required + optional:
        if name not in value or (name in optional and value[name] is None):
            if name in required:
                raise AuthInvalid(name, f"is required for {kind} auth")
            continue
        checked[name] = _text(name, value[name])
    if kind == "bearer":
        _visible(checked, "token")
    elif kind == "basic":
        if ":" in checked["username"]:
            raise AuthInvalid("username", "must not contain ':' (Basic auth separates the password with it)")
    elif kind == "oauth2":
        _check_token_url(checked["token_url"])
        if "scope" in checked and any(not (c == " " or _visible_char(c)) for c in checked["scope"]):
            raise AuthInvalid("scope", "must be scope tokens of visible ASCII separated by spaces")
    else:
        check_pems(checked["cert_pem"], checked["key_pem"], checked.get("ca_pem"))
    return checked


def check_pems(cert_pem: str, key_pem: str, ca_pem: str | None) -> None:
    """Refuse a client certificate, key or CA that TLS could not use: not PEM, an encrypted
    or unusable key, or a key that is not the certificate's."""
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise AuthInvalid("cert_pem", "is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise AuthInvalid("key_pem", "is an encrypted key; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise AuthInvalid("key_pem", "is not a PEM private key") from None
    if not isinstance(key, _TLS_KEYS):
        raise AuthInvalid("key_pem", "is a kind of key TLS client certificates do not use")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificates[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise AuthInvalid("key_pem", "does not match the certificate in auth.cert_pem")
    if ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(ca_pem.encode())
        except ValueError:
            raise AuthInvalid("ca_pem", "is not a PEM certificate") from None


def target_conflict(
    auth: Mapping[str, Any], target_url: str, headers: Mapping[str, str]
) -> tuple[str, str] | None:
    """Why *auth* cannot go with this *target_url* and *headers*, as (the field at fault,
    the message), or None.

    Bearer, Basic and OAuth2 set the Authorization header, so an Authorization in *headers*
    or credentials in *target_url* (which the HTTP client turns into one) would compete
    with it. A client certificate is presented in a TLS handshake: mTLS needs https.
    """
    if auth.get("type") == "mtls":
        if urlsplit(target_url).scheme != "https":
            return (
                "target_url",
                "target_url: mtls auth needs an https target_url (the certificate goes in TLS)",
            )
        return None
    if any(name.lower() == "authorization" for name in headers):
        return (
            "headers",
            f"auth: {auth.get('type')} auth sets the Authorization header; remove it from headers",
        )
    if "@" in urlsplit(target_url).netloc:
        return (
            "target_url",
            f"auth: {auth.get('type')} auth sets the Authorization header; it cannot go with "
            "credentials in target_url (user:password@)",
        )
    return None


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise AuthInvalid(name, "must be a string")
    if not value:
        raise AuthInvalid(name, "must not be empty")
    if len(value) > _MAX_LENGTH[name]:
        raise AuthInvalid(name, f"is longer than {_MAX_LENGTH[name]} characters")
    if name in _PEMS:
        if not value.isascii() or any(c < " " and c not in "\r\n\t" for c in value):
            raise AuthInvalid(name, "must be PEM text (ASCII)")
    elif not value.isprintable():
        raise AuthInvalid(name, "must not contain control characters (CR, LF, ...)")
    return value


def _visible_char(char: str) -> bool:
    return "!" <= char <= "~"


def _visible(checked: Mapping[str, str], name: str) -> None:
    if not all(_visible_char(c) for c in checked[name]):
        raise AuthInvalid(name, "must be visible ASCII without spaces")


def _check_token_url(url: str) -> None:
    if any(not _visible_char(c) for c in url):
        raise AuthInvalid("token_url", "must be a URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AuthInvalid("token_url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuthInvalid("token_url", "must be an http or https URL with a host")
    if "@" in parts.netloc:
        raise AuthInvalid("token_url", "must not carry credentials (they go in client_id and client_secret)")
    if port == 0:
        raise AuthInvalid("token_url", "has no valid port")
