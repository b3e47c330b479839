"""One HTTP delivery attempt: the request an endpoint receives, and what came back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
import orjson
import yarl
from aiormq.abc import DeliveredMessage
from multidict import istr
from pamqp.commands import Basic

from workerrmq import __version__
from workerrmq.core import protocol
from workerrmq.core.consumer import AUTH_SECRETS, ConsumerSpec
from workerrmq.core.credentials import PLACEHOLDER, auth_conflict, looks_secret, secret_headers
from workerrmq.core.endpoint_auth import AuthInvalid, check_auth, target_conflict
from workerrmq.core.filter import FilterError, compile_filter
from workerrmq.core.headers import first_refused
from workerrmq.core.policy import parse_retry_after
from workerrmq.core.signing import secret_bytes, signature_headers
from workerrmq.guard import TargetBlocked, check_literal
from workerrmq.worker import formats
from workerrmq.worker.auth import AuthFailed, endpoint_auth

__all__ = ["REPLY_MAX", "Attempt", "DeliveryRequest", "DeliveryResult", "Target", "definition_problem"]

USER_AGENT = f"WorkerRMQ/{__version__}"


class DeliveryRequest(aiohttp.ClientRequest):
    """aiohttp's request without its default ``Accept`` and ``Accept-Encoding``, which an
    endpoint has no use for (WorkerRMQ reads no answer body but an error's first bytes or
    a reply). The worker's session makes its requests of this class: leaving the headers
    out here costs nothing per request, where ``skip_auto_headers`` sorts, builds and
    merges a multidict for every one (7.3 -> 5.6 µs per request built)."""

    DEFAULT_HEADERS: dict[istr, str] = {}  # noqa: RUF012 - aiohttp's class attribute, read only


_ERROR_TEXT_MAX = 1024  # characters of an error answer kept: the attempt log shows them
#: The largest answer body a consumer with ``reply`` publishes (1 MiB).
REPLY_MAX = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A message as one delivery attempt sees it."""

    message_id: str
    number: int  # 1-based
    body: bytes
    content_type: str | None
    headers: Mapping[str, Any]
    correlation_id: str | None
    routing_key: str
    redelivered: bool
    timestamp: dt.datetime | None = None  # the AMQP timestamp: a CloudEvent's time
    message_type: str | None = None  # the AMQP type property

    @classmethod
    def of(cls, message: DeliveredMessage) -> Attempt:
        properties = message.header.properties
        headers = dict(properties.headers or {})
        return cls(
            # A message published without an id gets one here; retries carry it on.
            message_id=str(properties.message_id or uuid.uuid4().hex),
            number=protocol.attempts_made(headers) + 1,
            body=message.body,
            content_type=properties.content_type,
            headers=headers,
            correlation_id=properties.correlation_id,
            routing_key=message.routing_key or "",
            redelivered=isinstance(message.delivery, Basic.Deliver) and bool(message.delivery.redelivered),
            timestamp=properties.timestamp,
            message_type=properties.message_type,
        )


def definition_problem(spec: ConsumerSpec) -> str | None:
    """Why no request to *spec*'s endpoint could be sent as configured, or None.

    The API refuses such definitions when they are saved; this catches ones stored
    before it did, so that the worker does not send broken requests with them.
    """
    problem = first_refused(spec.headers)
    if problem is None and spec.filter:
        try:
            compile_filter(spec.filter)
        except FilterError as exc:
            problem = f"filter: {exc}"
    if problem is None and auth_conflict(spec.target_url, spec.headers):
        problem = "an Authorization header cannot go with credentials in target_url"
    if problem is None and spec.auth is not None:
        try:
            check_auth(spec.auth)
        except AuthInvalid as exc:
            problem = exc.message
        if problem is None and (conflict := target_conflict(spec.auth, spec.target_url, spec.headers)):
            problem = conflict[1]
    return problem


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    status: int | None  # HTTP status, or None when no response came
    error: str | None  # "connection", "timeout", "blocked", "client", or the HTTP reason
    detail: str  # text for the operator: start of the response body or the exception
    retry_after: float | None
    seconds: float
    # With ``reply``: the 2xx answer's body and Content-Type, to publish to the message's reply_to.
    answer: bytes | None = None
    answer_type: str | None = None


def _header_value(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = orjson.dumps(value, default=str).decode()
    if not value.isascii() or not value.isprintable():
        value = json.dumps(value)  # escapes to printable ASCII
    return value


class Target:
    """A consumer's endpoint (its ``target_url``), with what every request to it shares
    worked out once; :meth:`send` makes one attempt.

    With *guard*, an IP-literal target in a non-public range is refused; named
    hosts are checked by the session's :class:`~workerrmq.guard.GuardedResolver`.
    """

    def __init__(self, spec: ConsumerSpec, queue: str, *, guard: bool = False) -> None:
        self.spec = spec
        self._url = yarl.URL(spec.target_url)
        self._fixed = {"User-Agent": USER_AGENT}
        self._fixed.update({str(k): _header_value(v) for k, v in spec.headers.items()})
        self._fixed[protocol.HTTP_QUEUE] = queue
        # While a secret is rotated, requests are signed with the new and the previous one.
        secrets = (spec.signing_secret, spec.signing_secret_previous) if spec.signing_secret else ()
        self._keys = tuple(secret_bytes(secret) for secret in secrets if secret)
        until = spec.signing_secret_previous_until
        self._previous_until = until.timestamp() if until is not None and len(self._keys) > 1 else 0.0
        self._auth = endpoint_auth(spec.auth, timeout=spec.timeout, guard=guard)
        self._secrets = _secrets_of(spec)
        #: What ``session.request(ssl=...)`` takes: the mTLS context, or True (verified as usual).
        self.ssl: ssl.SSLContext | bool = self._auth.ssl if self._auth is not None else True
        self._timeout = aiohttp.ClientTimeout(total=spec.timeout)
        self._renderer = formats.renderer_for(spec.format, ce_source=spec.ce_source, queue=queue)
        self._blocked: str | None = None
        if guard:
            try:
                check_literal(urlsplit(spec.target_url).hostname or "")
            except TargetBlocked as exc:
                self._blocked = str(exc)

    def headers(self, attempt: Attempt, now: int, rendered: formats.Rendered | None = None) -> dict[str, str]:
        """The headers of *attempt*'s request, whose body and format headers are *rendered*."""
        if rendered is None:
            rendered = self._renderer.render(attempt)
        headers = self._fixed.copy()
        headers["Content-Type"] = rendered.content_type
        headers[protocol.HTTP_MESSAGE_ID] = attempt.message_id
        headers[protocol.HTTP_ROUTING_KEY] = attempt.routing_key
        headers[protocol.HTTP_ATTEMPT] = str(attempt.number)
        headers[protocol.HTTP_REDELIVERED] = "true" if attempt.redelivered else "false"
        if attempt.correlation_id:
            headers[protocol.HTTP_CORRELATION_ID] = attempt.correlation_id
        for name, value in attempt.headers.items():
            if protocol.is_internal(name) or not self._renderer.forwards(name):
                continue
            headers[protocol.forwarded_header_name(name)] = _header_value(value)[:4096]
        headers.update(rendered.headers)
        if self._keys:
            keys = self._keys if now < self._previous_until else self._keys[:1]
            headers.update(signature_headers(keys, attempt.message_id, now, rendered.body))
        return headers

    async def send(self, session: aiohttp.ClientSession, attempt: Attempt) -> DeliveryResult:
        """POST (or PUT) *attempt* to the endpoint once. Never raises for HTTP trouble."""
        return await self.authorized(session, lambda credentials: self._send(session, attempt, credentials))

    async def authorized(
        self,
        session: aiohttp.ClientSession,
        request: Callable[[Mapping[str, str]], Awaitable[DeliveryResult]],
    ) -> DeliveryResult:
        """*request* made with the headers that authenticate it (the consumer's ``auth``);
        it sends them, and :attr:`ssl` as its TLS context.

        With OAuth2, a 401 drops the token the request carried, and *request* is made once
        more with a new one. No token to be had is an ``auth`` failure, which is retried.
        """
        if self._auth is None:
            return await request({})
        started = time.perf_counter()
        for tries_left in (1, 0):
            try:
                credentials = await self._auth.headers(session)
            except AuthFailed as exc:
                return _failed("auth", str(exc), started)
            result = await request(credentials)
            if result.status != 401 or not tries_left or not self._auth.reject(credentials):
                break
        return result

    async def _send(
        self, session: aiohttp.ClientSession, attempt: Attempt, credentials: Mapping[str, str]
    ) -> DeliveryResult:
        started = time.perf_counter()
        if self._blocked is not None:
            return _failed("blocked", self._blocked, started)
        rendered = self._renderer.render(attempt)
        try:
            async with session.request(
                self.spec.method,
                self._url,
                data=rendered.body,
                headers={**self.headers(attempt, int(time.time()), rendered), **credentials},
                ssl=self.ssl,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    if self.spec.reply:
                        answered = await _with_answer(response, started)
                        if answered.answer:
                            # The reply goes to whoever published the message: no credential in it.
                            answer = _redacted_bytes(answered.answer, self._secrets, credentials)
                            answered = dataclasses.replace(answered, answer=answer)
                        return answered
                    return DeliveryResult(status, None, "", None, time.perf_counter() - started)
                # Read past the cut by the longest credential: cut after redacting, never through one.
                longest = max(map(len, (*self._secrets, *credentials.values())), default=0)
                detail = (await response.content.read(_ERROR_TEXT_MAX + longest)).decode("utf-8", "replace")
                detail = _redacted(detail, self._secrets, credentials)[:_ERROR_TEXT_MAX]
                return DeliveryResult(
                    status=status,
                    error=f"HTTP {status}" if status >= 300 else None,
                    detail=detail,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    seconds=time.perf_counter() - started,
                )
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetBlocked):
                return _failed("blocked", str(exc.os_error), started)
            return _failed("connection", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return _failed("timeout", f"no answer within {self.spec.timeout}s", started)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return _failed("connection", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)
        except aiohttp.ClientError as exc:
            return _failed("client", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX], started)


async def _with_answer(response: aiohttp.ClientResponse, started: float) -> DeliveryResult:
    """A 2xx *response* with its body read, for a consumer that replies. A body over
    :data:`REPLY_MAX` fails the attempt as ``reply_too_large``, which no ``retry_on`` lists:
    the message is dead-lettered (saying so) rather than sent again to an endpoint that
    would answer the same, or answered with a cut body."""
    declared = response.content_length
    if declared is not None and declared > REPLY_MAX:
        return _failed("reply_too_large", _too_large(response.status, declared), started)
    body = bytearray()
    while chunk := await response.content.read(REPLY_MAX + 1 - len(body)):
        body += chunk
        if len(body) > REPLY_MAX:
            return _failed("reply_too_large", _too_large(response.status, None), started)
    return DeliveryResult(
        status=response.status,
        error=None,
        detail="",
        retry_after=None,
        seconds=time.perf_counter() - started,
        answer=bytes(body),
        answer_type=response.headers.get("Content-Type"),
    )


def _too_large(status: int, size: int | None) -> str:
    told = f"{size} bytes" if size is not None else "more"
    return f"HTTP {status} with an answer of {told}; a reply takes at most {REPLY_MAX} bytes"


def _secrets_of(spec: ConsumerSpec) -> tuple[str, ...]:
    """The credentials a request to *spec*'s endpoint carries, as an answer could echo them:
    ``auth``'s secrets, the credential headers and the target URL's password and secret
    query values."""
    found: list[str] = [str(v) for k, v in (spec.auth or {}).items() if k in AUTH_SECRETS and v]
    found += [_header_value(v) for v in secret_headers(spec.headers).values()]
    parts = urlsplit(spec.target_url)
    found += [unquote(v) for v in (parts.password, parts.username if parts.password is None else None) if v]
    found += [v for k, v in parse_qsl(parts.query) if v and looks_secret(k)]
    return tuple(found)


def _redacted(text: str, secrets: tuple[str, ...], credentials: Mapping[str, str]) -> str:
    """*text* (an endpoint's error answer, kept in the attempt log and ``last_error``) with
    every credential the request carried replaced by ``***``: a gateway or a debugging
    endpoint that echoes the request's headers must not publish them to every reader of
    the consumer's errors."""
    for secret in (*secrets, *credentials.values()):
        # The whole header value, then its token alone ("Bearer <token>", "Basic <b64>").
        for form in (secret, secret.rpartition(" ")[2]):
            if len(form) >= 4 and form in text:
                text = text.replace(form, PLACEHOLDER)
    return text


def _redacted_bytes(body: bytes, secrets: tuple[str, ...], credentials: Mapping[str, str]) -> bytes:
    """*body* (an answer published as a reply) with the credentials :func:`_redacted` cuts out."""
    for secret in (*secrets, *credentials.values()):
        for form in (secret, secret.rpartition(" ")[2]):
            encoded = form.encode()
            if len(encoded) >= 4 and encoded in body:
                body = body.replace(encoded, PLACEHOLDER.encode())
    return body


def _failed(error: str, detail: str, started: float) -> DeliveryResult:
    return DeliveryResult(None, error, detail, None, time.perf_counter() - started)
