"""One HTTP delivery attempt: the request an endpoint receives, and what came back.

The worker's engine sends through a :class:`~workerrmq.worker.transport.Transport`
(pyreqwest, with aiohttp for what pyreqwest cannot do: see that module); an
``aiohttp.ClientSession`` given instead sends everything through aiohttp. Both
classify failures alike: no answer within the consumer's ``timeout`` is ``timeout``,
no connection (or one lost before the answer) is ``connection``, an address the
guard refuses is ``blocked``, anything else the client refuses is ``client``.
"""

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
from pyreqwest.exceptions import NetworkError, PyreqwestError, RequestTimeoutError
from pyreqwest.http import Url
from pyreqwest.response import Response, ResponseBodyReader

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
from workerrmq.worker.transport import Transport

__all__ = [
    "REPLY_MAX",
    "Attempt",
    "DeliveryRequest",
    "DeliveryResult",
    "Http",
    "Target",
    "definition_problem",
]

USER_AGENT = f"WorkerRMQ/{__version__}"
#: What a delivery is sent with: the engine's transport, or an aiohttp session alone.
Http = Transport | aiohttp.ClientSession


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

    With *guard*, an IP-literal target in a non-public range is refused; named hosts are
    checked where they are resolved (by the transport, or the aiohttp session's
    :class:`~workerrmq.guard.GuardedResolver`).
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
        self._guard = guard
        self._blocked: str | None = None
        if guard:
            try:
                check_literal(urlsplit(spec.target_url).hostname or "")
            except TargetBlocked as exc:
                self._blocked = str(exc)
        self._routed(spec.target_url, guard)

    def _routed(self, target_url: str, guard: bool) -> None:
        """How a transport sends to the endpoint: with which client, or through its session."""
        self._deadline = dt.timedelta(seconds=self.spec.timeout)
        self._identity = self._auth.identity if self._auth is not None else None
        #: The named host (and port) whose checked address a guarded request goes to.
        self._pin: tuple[str, int] | None = None
        try:
            url = Url(target_url)
        except ValueError:  # not a URL reqwest takes: aiohttp makes of it what it did before
            self._reqwest_url: str | None = None
            return
        # reqwest's own reading of the host: "http://2130706433/" is 127.0.0.1 to it.
        self._reqwest_url = str(url)
        if url.domain is not None:
            self._pin = (url.domain, url.port_or_known_default or 0)
        elif guard and self._blocked is None:
            try:
                check_literal(url.host_str or "")
            except TargetBlocked as exc:
                self._blocked = str(exc)
        if self._auth is not None and self._auth.ca_pem is not None:
            self._reqwest_url = None  # only aiohttp can trust that CA alone

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

    async def send(self, http: Http, attempt: Attempt) -> DeliveryResult:
        """POST (or PUT) *attempt* to the endpoint once. Never raises for HTTP trouble."""
        if isinstance(http, Transport):
            if http.reqwest and self._reqwest_url is not None:
                via = http
                return await self.authorized(via, lambda headers: self._send_reqwest(via, attempt, headers))
            http = http.session
        session = http
        return await self.authorized(session, lambda credentials: self._send(session, attempt, credentials))

    async def authorized(
        self,
        http: Http,
        request: Callable[[Mapping[str, str]], Awaitable[DeliveryResult]],
    ) -> DeliveryResult:
        """*request* made with the headers that authenticate it (the consumer's ``auth``);
        it sends them, and :attr:`ssl` as its TLS context.

        With OAuth2, a 401 drops the token the request carried, and *request* is made once
        more with a new one. No token to be had is an ``auth`` failure, which is retried.
        """
        if self._auth is None:
            return await request({})
        session = http.session if isinstance(http, Transport) else http
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

    async def _send_reqwest(
        self, transport: Transport, attempt: Attempt, credentials: Mapping[str, str]
    ) -> DeliveryResult:
        started = time.perf_counter()
        if self._blocked is not None:
            return _failed("blocked", self._blocked, started)
        assert self._reqwest_url is not None
        rendered = self._renderer.render(attempt)
        headers = self.headers(attempt, int(time.time()), rendered)
        if credentials:
            headers.update(credentials)
        try:
            if self._pin is not None and (self._guard or transport.guard):
                client = await transport.pinned(*self._pin, self._identity)
            else:
                client = transport.client(self._identity)
            request = (
                client.request(self.spec.method, self._reqwest_url)
                .headers(headers)
                .body_bytes(rendered.body)
                .timeout(self._deadline)
                .build_streamed()
            )
            async with request as response:
                status = response.status
                if 200 <= status < 300:
                    if self.spec.reply:
                        answered = await _with_answer(
                            status,
                            _content_length(response),
                            response.get_header("Content-Type"),
                            _reader(response.body_reader),
                            started,
                        )
                        return self._replied(answered, credentials)
                    return DeliveryResult(status, None, "", None, time.perf_counter() - started)
                chunk = await response.body_reader.read(self._error_bytes(credentials))
                body = chunk.to_bytes() if chunk is not None else b""
                return self._refused(status, body, response.get_header("Retry-After"), credentials, started)
        except TargetBlocked as exc:
            return _failed("blocked", str(exc), started)
        except RequestTimeoutError:
            return _failed("timeout", f"no answer within {self.spec.timeout}s", started)
        except (NetworkError, OSError) as exc:
            return _failed("connection", _described(exc), started)
        except PyreqwestError as exc:
            return _failed("client", _described(exc), started)

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
                        answered = await _with_answer(
                            status,
                            response.content_length,
                            response.headers.get("Content-Type"),
                            response.content.read,
                            started,
                        )
                        return self._replied(answered, credentials)
                    return DeliveryResult(status, None, "", None, time.perf_counter() - started)
                body = await response.content.read(self._error_bytes(credentials))
                return self._refused(status, body, response.headers.get("Retry-After"), credentials, started)
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

    def _error_bytes(self, credentials: Mapping[str, str]) -> int:
        """How much of an error answer to read: past the cut by the longest credential, so
        that the cut is made after redacting, never through one."""
        return _ERROR_TEXT_MAX + max(map(len, (*self._secrets, *credentials.values())), default=0)

    def _refused(
        self,
        status: int,
        body: bytes,
        retry_after: str | None,
        credentials: Mapping[str, str],
        started: float,
    ) -> DeliveryResult:
        """The result of a non-2xx answer, whose first bytes were *body*."""
        detail = _redacted(body.decode("utf-8", "replace"), self._secrets, credentials)[:_ERROR_TEXT_MAX]
        return DeliveryResult(
            status=status,
            error=f"HTTP {status}" if status >= 300 else None,
            detail=detail,
            retry_after=parse_retry_after(retry_after),
            seconds=time.perf_counter() - started,
        )

    def _replied(self, answered: DeliveryResult, credentials: Mapping[str, str]) -> DeliveryResult:
        if answered.answer:
            # The reply goes to whoever published the message: no credential in it.
            answer = _redacted_bytes(answered.answer, self._secrets, credentials)
            answered = dataclasses.replace(answered, answer=answer)
        return answered


async def _with_answer(
    status: int,
    declared: int | None,
    content_type: str | None,
    read: Callable[[int], Awaitable[bytes]],
    started: float,
) -> DeliveryResult:
    """A 2xx answer with its body read by *read* (at most n bytes; b"" at its end), for a
    consumer that replies. A body over :data:`REPLY_MAX` (*declared* by Content-Length,
    or found so reading) fails the attempt as ``reply_too_large``, which no ``retry_on``
    lists: the message is dead-lettered (saying so) rather than sent again to an endpoint
    that would answer the same, or answered with a cut body."""
    if declared is not None and declared > REPLY_MAX:
        return _failed("reply_too_large", _too_large(status, declared), started)
    body = bytearray()
    while chunk := await read(REPLY_MAX + 1 - len(body)):
        body += chunk
        if len(body) > REPLY_MAX:
            return _failed("reply_too_large", _too_large(status, None), started)
    return DeliveryResult(
        status=status,
        error=None,
        detail="",
        retry_after=None,
        seconds=time.perf_counter() - started,
        answer=bytes(body),
        answer_type=content_type,
    )


def _content_length(response: Response) -> int | None:
    value = response.get_header("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reader(reader: ResponseBodyReader) -> Callable[[int], Awaitable[bytes]]:
    """*reader*'s ``read`` as :func:`_with_answer` takes it."""

    async def read(size: int) -> bytes:
        chunk = await reader.read(size)
        return chunk.to_bytes() if chunk is not None else b""

    return read


def _described(exc: BaseException) -> str:
    """*exc* for the operator: a pyreqwest error with its chain of causes, leaving out the
    ones that quote the URL (its credentials)."""
    if not isinstance(exc, PyreqwestError):
        return f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX]
    details = getattr(exc, "details", None) or {}
    causes = [str(c.get("message", "")) for c in details.get("causes") or ()]
    told = [exc.message, *(c for c in causes if "url (" not in c)]
    return f"{type(exc).__name__}: {': '.join(told)}"[:_ERROR_TEXT_MAX]


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
