"""A ``***`` sent back for an auth secret keeps the stored one only where it is safe: not for
an OAuth2 client secret whose ``token_url`` moved to another scheme, host or port (the
stored secret would be posted to the new server by whoever may edit but not read it)."""

from __future__ import annotations

import pytest

from workerrmq.core.consumer import restore_auth
from workerrmq.core.credentials import PlaceholderUnmatched

STORED = {
    "type": "oauth2",
    "token_url": "https://idp.example.com/oauth/token",
    "client_id": "relay",
    "client_secret": "s3cret-stored",
}


@pytest.mark.parametrize(
    "token_url",
    [
        "https://attacker.example.net/oauth/token",
        "http://idp.example.com/oauth/token",
        "https://idp.example.com:8443/oauth/token",
    ],
)
def test_a_placeholder_does_not_carry_the_client_secret_to_another_token_url(token_url: str) -> None:
    with pytest.raises(PlaceholderUnmatched) as caught:
        restore_auth({**STORED, "token_url": token_url, "client_secret": "***"}, STORED)
    assert caught.value.field == "auth.client_secret"


@pytest.mark.parametrize(
    "token_url",
    ["https://idp.example.com/oauth/token", "https://IDP.example.com:443/v2/token?x=1"],
)
def test_a_placeholder_keeps_the_client_secret_on_the_same_origin(token_url: str) -> None:
    restored = restore_auth({**STORED, "token_url": token_url, "client_secret": "***", "scope": "a"}, STORED)
    assert restored is not None and restored["client_secret"] == "s3cret-stored"
    # A new secret sent with the new URL is taken as it is.
    moved = {**STORED, "token_url": "https://other.example.org/token", "client_secret": "new"}
    assert restore_auth(moved, STORED) == moved
