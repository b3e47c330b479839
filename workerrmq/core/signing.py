"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
Signed over the raw body bytes, so bodies that are not UTF-8 sign correctly too.

While a secret is being rotated, a request is signed with the new and the previous
secret: the header then holds both signatures, separated by a space
(``v1,<new> v1,<old>``), and a receiver that knows either secret accepts it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = [
    "ROTATION_GRACE",
    "ROTATION_GRACE_MAX",
    "SIGNATURE_HEADERS",
    "new_secret",
    "secret_bytes",
    "sign",
    "signature_headers",
]

_PREFIX = "whsec_"
#: The headers of a signed request: the message id, the time, the signature.
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: How long, in seconds, a rotated secret still signs by default (a day), and at most (a week).
ROTATION_GRACE = 86_400
ROTATION_GRACE_MAX = 7 * 86_400


@functools.lru_cache(maxsize=4096)  # decoded once per consumer, not once per message
def secret_bytes(secret: str) -> bytes:
    """The HMAC key: ``whsec_<base64>`` secrets are decoded, any other string is used as UTF-8."""
    if secret.startswith(_PREFIX):
        encoded = secret[len(_PREFIX) :]
        try:
            # Padding is optional, as in the Standard Webhooks reference libraries.
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    return secret.encode()


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    key: bytes | Sequence[bytes], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The :data:`SIGNATURE_HEADERS` of a request carrying *body*, signed with *key*, or
    with each of several keys (newest first) while a secret is rotated."""
    keys = (key,) if isinstance(key, bytes) else key
    signatures = " ".join(sign(k, message_id, timestamp, body) for k in keys)
    return dict(zip(SIGNATURE_HEADERS, (message_id, str(timestamp), signatures), strict=True))


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
