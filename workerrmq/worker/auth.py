"""What a request needs to authenticate to a consumer's endpoint (the consumer's ``auth``).

Built once per :class:`~workerrmq.worker.delivery.Target`: a Bearer or Basic header is
computed once, an mTLS context is loaded once, and an OAuth2 access token is fetched once
and shared by every delivery until shortly before it expires.

OAuth2 (the client-credentials grant, RFC 6749 4.4): the client authenticates to the token
endpoint with HTTP Basic first, which every authorization server must support (2.3.1);
if the endpoint refuses that with 400 or 401, the same fetch tries the credentials in the
form body, and the way that worked is kept for the next fetches. One fetch runs at a time
per consumer: deliveries that need a token meanwhile wait for that one. A 401 from the
endpoint drops the token it was sent with, so the request is tried once more with a new one.
A failing token endpoint is an :class:`AuthFailed`, whose text names what failed and never
holds the client secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import orjson

from workerrmq.guard import TargetBlocked, check_literal

__all__ = ["AuthFailed", "EndpointAuth", "OAuth2ClientCredentials", "client_tls", "endpoint_auth"]

_AUTHORIZATION = "Authorization"
_TOKEN_ANSWER_MAX = 64 * 1024  # bytes of a token answer read at most
_DETAIL_MAX = 200


class AuthFailed(Exception):
    """No credentials could be had for a request: the delivery fails, and is retried."""


class EndpointAuth:
    """Credentials that do not change: fixed headers and/or a TLS context for the connection."""

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        *,
        identity: bytes | None = None,
        ca_pem: bytes | None = None,
    ) -> None:
        self._headers = dict(headers or {})
        #: What ``session.request(ssl=...)`` takes: the client certificate's context, or
        #: True for aiohttp's default (verified against the system CA store).
        self.ssl: ssl.SSLContext | bool = tls if tls is not None else True
        #: The client certificate and its key as one PEM (what reqwest's ``identity_pem``
        #: takes, in memory), and the CA that alone verifies the endpoint; None without mTLS.
        self.identity = identity
        self.ca_pem = ca_pem

    async def headers(self, session: aiohttp.ClientSession) -> Mapping[str, str]:
        """The headers that authenticate one request; raises :class:`AuthFailed`."""
        return self._headers

    def reject(self, sent: Mapping[str, str]) -> bool:
        """The endpoint answered 401 to a request that carried *sent*: True when trying it
        once more with fresh credentials can help."""
        return False


class OAuth2ClientCredentials(EndpointAuth):
    """An access token from *token_url*, cached until *margin* before it expires: 10% of its
    lifetime, at most 30 s. A token that comes without ``expires_in`` is kept until a 401."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        timeout: float,
        guard: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._url = token_url
        self._client = (client_id, client_secret)
        self._scope = scope
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._in_body = False  # client credentials in the form, once the endpoint refused Basic
        self._blocked: str | None = None
        self.fetches = 0  # token requests made (for statistics and tests)
        if guard:
            try:
                check_literal(urlsplit(token_url).hostname or "")
            except TargetBlocked as exc:
                self._blocked = str(exc)

    async def headers(self, session: aiohttp.ClientSession) -> Mapping[str, str]:
        token = self._token
        if token is None or self._clock() >= self._expires:
            token = await self._renew(session, token)
        return {_AUTHORIZATION: f"Bearer {token}"}

    def reject(self, sent: Mapping[str, str]) -> bool:
        if self._token is not None and sent.get(_AUTHORIZATION) == f"Bearer {self._token}":
            self._token = None  # the next request fetches a new one (once, however many ask)
        return True

    async def _renew(self, session: aiohttp.ClientSession, stale: str | None) -> str:
        async with self._lock:
            token = self._token
            if token is not None and token != stale and self._clock() < self._expires:
                return token  # fetched by another delivery while this one waited
            token, lifetime = await self._fetch(session)
            self._token = token
            if lifetime is None:
                self._expires = float("inf")
            else:
                self._expires = self._clock() + lifetime - min(30.0, lifetime * 0.1)
            return token

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[str, float | None]:
        if self._blocked is not None:
            raise self._failed(self._blocked)
        status, body = await self._post(session, in_body=self._in_body)
        if status in (400, 401) and not self._in_body:
            # The endpoint may read the client's credentials only from the form body.
            retry_status, retry_body = await self._post(session, in_body=True)
            if 200 <= retry_status < 300:
                self._in_body = True
            status, body = retry_status, retry_body
        if not 200 <= status < 300:
            # Cut after the secret is cut out: a cut through it would leave its start.
            text = self._redact(body.decode("utf-8", "replace"))[:_DETAIL_MAX]
            raise self._failed(f"HTTP {status} {text}".strip())
        return self._parse(body)

    async def _post(self, session: aiohttp.ClientSession, *, in_body: bool) -> tuple[int, bytes]:
        client_id, client_secret = self._client
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers = {"Accept": "application/json"}
        if in_body:
            form.update(client_id=client_id, client_secret=client_secret)
        else:  # RFC 6749 2.3.1: both are form-encoded before they go into Basic
            headers[_AUTHORIZATION] = aiohttp.encode_basic_auth(
                quote_plus(client_id), quote_plus(client_secret)
            )
        self.fetches += 1
        try:
            async with session.post(
                self._url,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                return response.status, await response.content.read(_TOKEN_ANSWER_MAX)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetBlocked):
                raise self._failed(str(exc.os_error)) from None
            raise self._failed(f"{type(exc).__name__}: {exc}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._failed(f"no answer within {self._timeout.total}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failed(f"{type(exc).__name__}: {exc}") from None

    def _parse(self, body: bytes) -> tuple[str, float | None]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._failed("the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise self._failed("the answer is not a JSON object")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token or not all("!" <= c <= "~" for c in token):
            raise self._failed("the answer has no usable access_token")
        token_type = answer.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise self._failed(f"token_type {str(token_type)[:40]!r} is not Bearer")
        lifetime = answer.get("expires_in")
        try:
            seconds = float(lifetime) if lifetime is not None else None
        except (TypeError, ValueError):
            seconds = None  # an unreadable lifetime: keep the token until a 401
        if seconds is not None and not seconds > 0:
            seconds = 0.0  # already expired: good for this request only
        return token, seconds

    def _failed(self, detail: str) -> AuthFailed:
        """The error for *detail*, with the client secret cut out wherever it was echoed."""
        return AuthFailed(f"oauth2 token endpoint: {self._redact(detail)}"[:300])

    def _redact(self, detail: str) -> str:
        client_id, secret = self._client
        # Also the Basic credentials as sent, in case the endpoint echoes its request's headers.
        basic = aiohttp.encode_basic_auth(quote_plus(client_id), quote_plus(secret)).partition(" ")[2]
        for form in {secret, quote_plus(secret), basic}:
            detail = detail.replace(form, "***")
        return detail


def endpoint_auth(
    auth: Mapping[str, Any] | None, *, timeout: float, guard: bool = False
) -> EndpointAuth | None:
    """What requests need for *auth* (a consumer's checked ``auth`` object), or None."""
    if not auth:
        return None
    kind = auth["type"]
    if kind == "bearer":
        return EndpointAuth({_AUTHORIZATION: f"Bearer {auth['token']}"})
    if kind == "basic":
        return EndpointAuth({_AUTHORIZATION: aiohttp.encode_basic_auth(auth["username"], auth["password"])})
    if kind == "oauth2":
        return OAuth2ClientCredentials(
            auth["token_url"],
            auth["client_id"],
            auth["client_secret"],
            auth.get("scope"),
            timeout=timeout,
            guard=guard,
        )
    if kind == "mtls":
        ca_pem = auth.get("ca_pem")
        return EndpointAuth(
            tls=client_tls(auth["cert_pem"], auth["key_pem"], ca_pem),
            identity=_identity(auth["cert_pem"], auth["key_pem"]),
            ca_pem=ca_pem.encode() if ca_pem else None,
        )
    raise ValueError(f"unknown auth type {kind!r}")


def client_tls(cert_pem: str, key_pem: str, ca_pem: str | None = None) -> ssl.SSLContext:
    """A TLS context that presents *cert_pem* with *key_pem*, and verifies the endpoint
    against *ca_pem* alone when given, else against the system CA store."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    with _key_file(_identity(cert_pem, key_pem)) as path:
        context.load_cert_chain(path)
    return context


def _identity(cert_pem: str, key_pem: str) -> bytes:
    """The certificate (chain) and its private key as one PEM document."""
    return f"{cert_pem.strip()}\n{key_pem.strip()}\n".encode()


@contextlib.contextmanager
def _key_file(data: bytes) -> Iterator[str]:
    """A path to *data* for OpenSSL, which loads a certificate and key only from files.

    On Linux the file lives in memory only (``memfd_create``) and is gone once closed;
    elsewhere it is a private (0600) temporary file, removed right after loading.
    """
    in_memory = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
    if in_memory:
        fd = os.memfd_create("workerrmq-client-key", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
    else:
        fd, path = tempfile.mkstemp(prefix="workerrmq-", suffix=".pem")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield path
    finally:
        os.close(fd)
        if not in_memory:
            os.unlink(path)
