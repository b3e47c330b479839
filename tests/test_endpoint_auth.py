"""Endpoint authentication (a consumer's ``auth``) against real local servers that demand it:
Bearer, Basic, the OAuth2 client-credentials grant with a small token endpoint, and mTLS
with certificates made at test time by ``trustme``."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pika
import pytest
import trustme
from aiohttp import web

from tests.endpoint import Endpoint, Received
from tests.support import json_error, wait_for
from workerrmq.api import create_app
from workerrmq.core.endpoint_auth import AuthInvalid, check_auth
from workerrmq.core.policy import Verdict, classify
from workerrmq.worker.auth import AuthFailed, OAuth2ClientCredentials, client_tls, endpoint_auth

SECRET = "s3cr3t-client-Secret/+="


# -- servers ---------------------------------------------------------------------------------


class TlsEndpoint(Endpoint):
    """The test endpoint over HTTPS; it asks for (and with *require* demands) a client certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.url = f"https://localhost:{self.port}/hook"

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context).start()


class TokenEndpoint(Endpoint):
    """An OAuth2 token endpoint: hands out ``token-1``, ``token-2``, ... to the client it knows.

    *accepts* says where it reads the client's credentials (``basic``, ``body`` or both);
    ``answer`` can replace the whole answer (status, body) to simulate trouble.
    """

    def __init__(self, client_id: str = "client-a", *, accepts: tuple[str, ...] = ("basic", "body")) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/oauth/token"
        self.client_id = client_id
        self.accepts = accepts
        self.expires_in: float | None = 3600
        self.issued = 0
        self.answer: Callable[[Received], tuple[int, bytes]] | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        received = Received(
            request.method, request.path, dict(request.headers), json.dumps(form).encode(), time.monotonic()
        )
        with self._lock:
            self.received.append(received)
        if self.answer is not None:
            status, body = self.answer(received)
            return web.Response(status=status, body=body, content_type="application/json")
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if not self._client_ok(request.headers.get("Authorization", ""), form):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        answer: dict[str, Any] = {"access_token": f"token-{self.issued}", "token_type": "Bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)

    def _client_ok(self, authorization: str, form: dict[str, Any]) -> bool:
        if "basic" in self.accepts and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return (unquote_plus(user), unquote_plus(password)) == (self.client_id, SECRET)
        if "body" in self.accepts and not authorization:
            return (form.get("client_id"), form.get("client_secret")) == (self.client_id, SECRET)
        return False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro_fn: Callable[[aiohttp.ClientSession], Any]) -> Any:
    """Run *coro_fn* with a client session like the worker's."""

    async def main() -> Any:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            return await coro_fn(session)

    return asyncio.run(main())


def oauth2(
    token: TokenEndpoint, clock: Callable[[], float] = time.monotonic, **kw: Any
) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        token.url, token.client_id, SECRET, kw.pop("scope", None), timeout=5, clock=clock, **kw
    )


@pytest.fixture
def token_endpoint():
    with TokenEndpoint() as ep:
        yield ep


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client@workerrmq.test")


def _server_context(ca: trustme.CA, *, require_client: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.configure_trust(context)  # client certificates must chain to this CA
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    return context


def _mtls(cert: trustme.LeafCert, ca: trustme.CA | None = None) -> dict[str, str]:
    auth = {
        "type": "mtls",
        "cert_pem": b"".join(blob.bytes() for blob in cert.cert_chain_pems).decode(),
        "key_pem": cert.private_key_pem.bytes().decode(),
    }
    if ca is not None:
        auth["ca_pem"] = ca.cert_pem.bytes().decode()
    return auth


# -- checking a definition's auth ----------------------------------------------------------


def test_check_auth_accepts_each_type(client_cert: trustme.LeafCert, ca: trustme.CA):
    assert check_auth({"type": "bearer", "token": "abc.def-ghi"}) == {
        "type": "bearer",
        "token": "abc.def-ghi",
    }
    assert check_auth({"type": "basic", "username": "ü-user", "password": "p: w"})["password"] == "p: w"
    assert check_auth(
        {
            "type": "oauth2",
            "token_url": "https://id.example/t",
            "client_id": "c",
            "client_secret": "s",
            "scope": None,
        }
    ) == {"type": "oauth2", "token_url": "https://id.example/t", "client_id": "c", "client_secret": "s"}
    assert set(check_auth(_mtls(client_cert, ca))) == {"type", "cert_pem", "key_pem", "ca_pem"}


@pytest.mark.parametrize(
    ("auth", "field", "words"),
    [
        ("bearer", "auth", "must be an object"),
        ({"token": "x"}, "auth.type", "must be one of bearer, basic, oauth2, mtls"),
        ({"type": "jwt"}, "auth.type", "must be one of"),
        ({"type": "bearer"}, "auth.token", "is required for bearer auth"),
        ({"type": "bearer", "token": "a\r\nX-Evil: 1"}, "auth.token", "control characters"),
        ({"type": "bearer", "token": "two words"}, "auth.token", "visible ASCII"),
        ({"type": "bearer", "token": "x" * 8193}, "auth.token", "longer than 8192"),
        ({"type": "bearer", "token": 7}, "auth.token", "must be a string"),
        ({"type": "bearer", "token": ""}, "auth.token", "must not be empty"),
        ({"type": "bearer", "token": "t", "password": "p"}, "auth.password", "is not a field of bearer"),
        ({"type": "basic", "username": "a:b", "password": "p"}, "auth.username", "must not contain ':'"),
        ({"type": "basic", "username": "a", "password": "p\n"}, "auth.password", "control characters"),
        (
            {"type": "oauth2", "token_url": "ftp://h/t", "client_id": "c", "client_secret": "s"},
            "auth.token_url",
            "http or https",
        ),
        (
            {"type": "oauth2", "token_url": "https://u:p@h/t", "client_id": "c", "client_secret": "s"},
            "auth.token_url",
            "must not carry credentials",
        ),
        (
            {
                "type": "oauth2",
                "token_url": "https://h/t",
                "client_id": "c",
                "client_secret": "s",
                "scope": "a\tb",
            },
            "auth.scope",
            "control characters",
        ),
        ({"type": "oauth2", "token_url": "https://h/t", "client_id": "c"}, "auth.client_secret", "required"),
    ],
)
def test_check_auth_refuses_naming_the_field(auth: Any, field: str, words: str):
    with pytest.raises(AuthInvalid) as caught:
        check_auth(auth)
    assert caught.value.field == field
    assert caught.value.message.startswith(field) and words in caught.value.message


def test_check_auth_refuses_pems_tls_could_not_use(client_cert: trustme.LeafCert, ca: trustme.CA):
    good = _mtls(client_cert, ca)
    other_key = trustme.CA().issue_cert("x.test").private_key_pem.bytes().decode()
    cases = [
        ({"cert_pem": "not a certificate"}, "auth.cert_pem is not a PEM certificate"),
        ({"cert_pem": good["key_pem"]}, "auth.cert_pem is not a PEM certificate"),
        ({"key_pem": good["cert_pem"]}, "auth.key_pem is not a PEM private key"),
        ({"key_pem": other_key}, "auth.key_pem does not match the certificate in auth.cert_pem"),
        ({"ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "auth.ca_pem is not"),
        ({"cert_pem": "é" + good["cert_pem"]}, "auth.cert_pem must be PEM text"),
    ]
    for change, message in cases:
        with pytest.raises(AuthInvalid) as caught:
            check_auth({**good, **change})
        assert caught.value.message.startswith(message), (change, caught.value.message)


# -- bearer and basic ----------------------------------------------------------------------


def test_bearer_and_basic_headers_are_made_once():
    bearer = endpoint_auth({"type": "bearer", "token": "tok-1"}, timeout=5)
    basic = endpoint_auth({"type": "basic", "username": "ü", "password": "p:w"}, timeout=5)
    assert bearer is not None and basic is not None
    assert run(bearer.headers) == {"Authorization": "Bearer tok-1"}
    expected = "Basic " + base64.b64encode("ü:p:w".encode()).decode()
    first = run(basic.headers)
    assert first == {"Authorization": expected} and run(basic.headers) is first
    assert basic.reject(first) is False  # a 401 with fixed credentials is not retried
    assert endpoint_auth(None, timeout=5) is None


# -- OAuth2 client credentials --------------------------------------------------------------


def test_oauth2_token_is_cached_and_fetched_once_for_concurrent_requests(token_endpoint: TokenEndpoint):
    auth = oauth2(token_endpoint, scope="events:write")

    async def many(session: aiohttp.ClientSession) -> list[Any]:
        return await asyncio.gather(*(auth.headers(session) for _ in range(20)))

    assert run(many) == [{"Authorization": "Bearer token-1"}] * 20
    assert run(auth.headers) == {"Authorization": "Bearer token-1"}
    assert token_endpoint.count() == 1 and auth.fetches == 1
    sent = token_endpoint.received[0]
    assert json.loads(sent.body) == {"grant_type": "client_credentials", "scope": "events:write"}
    assert sent.headers["Authorization"].startswith("Basic ")  # Basic first (RFC 6749 2.3.1)
    assert SECRET not in sent.body.decode()


def test_oauth2_token_is_fetched_again_shortly_before_it_expires(token_endpoint: TokenEndpoint):
    clock = Clock()
    token_endpoint.expires_in = 100  # renewed 10% (10 s) early
    auth = oauth2(token_endpoint, clock)
    assert run(auth.headers)["Authorization"] == "Bearer token-1"
    clock.now += 89
    assert run(auth.headers)["Authorization"] == "Bearer token-1"
    clock.now += 1
    assert run(auth.headers)["Authorization"] == "Bearer token-2"
    token_endpoint.expires_in = 3600  # renewed 30 s early (10% would be 6 minutes)
    clock.now += 1000
    assert run(auth.headers)["Authorization"] == "Bearer token-3"
    clock.now += 3569
    assert run(auth.headers)["Authorization"] == "Bearer token-3"
    clock.now += 1
    assert run(auth.headers)["Authorization"] == "Bearer token-4"


def test_oauth2_a_401_drops_the_token_once_for_all_requests_that_had_it(token_endpoint: TokenEndpoint):
    auth = oauth2(token_endpoint)

    async def flow(session: aiohttp.ClientSession) -> list[Any]:
        stale = await auth.headers(session)
        assert all(auth.reject(stale) for _ in range(5))  # five requests came back 401
        return await asyncio.gather(*(auth.headers(session) for _ in range(5)))

    assert run(flow) == [{"Authorization": "Bearer token-2"}] * 5
    assert token_endpoint.count() == 2


def test_oauth2_client_credentials_in_the_body_when_basic_is_refused():
    with TokenEndpoint(accepts=("body",)) as token:
        auth = oauth2(token)
        assert run(auth.headers)["Authorization"] == "Bearer token-1"
        assert token.count() == 2  # Basic refused with 401, then the form body
        first, second = token.received
        assert "Authorization" in first.headers and "Authorization" not in second.headers
        assert json.loads(second.body)["client_secret"] == SECRET
        auth.reject({"Authorization": "Bearer token-1"})
        assert run(auth.headers)["Authorization"] == "Bearer token-2"
        assert token.count() == 3  # remembered: straight to the body


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, b'{"error": "server_error", "echo": "' + SECRET.encode() + b'"}', "HTTP 500"),
        (200, b"<html>not json</html>", "the answer is not JSON"),
        (200, b'{"token_type": "Bearer"}', "no usable access_token"),
        (200, b'{"access_token": "a\\r\\nb"}', "no usable access_token"),
        (200, b'{"access_token": "t", "token_type": "mac"}', "token_type 'mac' is not Bearer"),
    ],
)
def test_oauth2_token_endpoint_trouble_fails_without_the_secret(
    token_endpoint: TokenEndpoint, status: int, body: bytes, words: str
):
    token_endpoint.answer = lambda _r: (status, body)
    with pytest.raises(AuthFailed) as caught:
        run(oauth2(token_endpoint).headers)
    text = str(caught.value)
    assert text.startswith("oauth2 token endpoint: ") and words in text
    assert SECRET not in text


def test_oauth2_token_endpoint_down_or_blocked():
    with TokenEndpoint() as token:
        url = token.url
    auth = OAuth2ClientCredentials(url, "c", SECRET, timeout=2)
    with pytest.raises(AuthFailed, match="^oauth2 token endpoint: ClientConnectorError"):
        run(auth.headers)
    blocked = OAuth2ClientCredentials(url, "c", SECRET, timeout=2, guard=True)
    with pytest.raises(AuthFailed, match="non-public address"):
        run(blocked.headers)
    assert blocked.fetches == 0


# -- mTLS ---------------------------------------------------------------------------------


def _post(url: str, tls: ssl.SSLContext | bool) -> Any:
    async def post(session: aiohttp.ClientSession) -> int:
        async with session.post(url, data=b"x", ssl=tls) as response:
            return response.status

    return run(post)


def test_mtls_presents_the_client_certificate_and_trusts_only_ca_pem(ca: trustme.CA, client_cert):
    with TlsEndpoint(_server_context(ca)) as server:
        auth = endpoint_auth(_mtls(client_cert, ca), timeout=5)
        assert auth is not None and isinstance(auth.ssl, ssl.SSLContext)
        assert _post(server.url, auth.ssl) == 200
        assert server.count() == 1
        # Without the client certificate the server refuses the handshake.
        with pytest.raises(aiohttp.ClientError):
            _post(server.url, client_tls_without_cert(ca))
        # Not in the system store: without ca_pem the server's certificate is not trusted.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            _post(server.url, client_tls(*_pems(client_cert)))
        # ca_pem is the only trust root: another CA's server certificate fails.
        elsewhere = trustme.CA()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            _post(server.url, client_tls(*_pems(client_cert), elsewhere.cert_pem.bytes().decode()))
        assert server.count() == 1


def client_tls_without_cert(ca: trustme.CA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())


def _pems(cert: trustme.LeafCert) -> tuple[str, str]:
    return b"".join(b.bytes() for b in cert.cert_chain_pems).decode(), cert.private_key_pem.bytes().decode()


def test_mtls_leaves_no_key_file_behind(client_cert: trustme.LeafCert, ca: trustme.CA):
    key = client_cert.private_key_pem.bytes()
    before = set(os.listdir(tempfile.gettempdir()))
    threads_before = threading.active_count()
    for _ in range(3):
        client_tls(*_pems(client_cert), ca.cert_pem.bytes().decode())
    new = set(os.listdir(tempfile.gettempdir())) - before
    leftovers = [name for name in new if name.startswith("workerrmq-")]
    assert leftovers == []
    fds = os.listdir("/proc/self/fd")
    for fd in fds:  # no descriptor still open on the key
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.islink(f"/proc/self/fd/{fd}") else ""
        assert "workerrmq-client-key" not in target
    assert key and threading.active_count() == threads_before


# -- end to end: through the API, the worker and the broker ---------------------------------

FAST_RETRY = {"initial_delay": 0.05, "max_delay": 0.25}


def publish(amqp, queue: str, *bodies: bytes) -> None:
    amqp.confirm_delivery()
    for body in bodies:
        amqp.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def demanding(authorization: Callable[[], str]) -> Callable[[Received], tuple[int, dict[str, str]]]:
    """An endpoint's answer: 200 only for a request with the Authorization it demands."""
    return lambda r: (200, {}) if r.headers.get("Authorization") == authorization() else (401, {})


def stored_bytes(settings) -> bytes:
    """Everything the SQLite store holds on disk (database and write-ahead log)."""
    path = settings.database_url.removeprefix("sqlite:///")
    return b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))


def _stats(client, admin, consumer_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).json["stats"]


@pytest.mark.parametrize(
    ("auth", "expected", "secret"),
    [
        ({"type": "bearer", "token": "tok-Zx81"}, "Bearer tok-Zx81", "tok-Zx81"),
        (
            {"type": "basic", "username": "relay", "password": "pw-Qy72"},
            "Basic " + base64.b64encode(b"relay:pw-Qy72").decode(),
            "pw-Qy72",
        ),
    ],
    ids=["bearer", "basic"],
)
def test_bearer_and_basic_reach_an_endpoint_that_demands_them(
    settings, start_engine, endpoint, make_consumer, client, admin, amqp, caplog, auth, expected, secret
):
    caplog.set_level(logging.DEBUG)
    endpoint.respond = demanding(lambda: expected)
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, auth=auth)
    assert consumer["auth"] == {**auth, ("token" if "token" in auth else "password"): "***"}
    worker.runner(consumer["id"])
    publish(amqp, queue, b"one", b"two")
    wait_for(lambda: sorted(endpoint.bodies()) == [b"one", b"two"], what="two deliveries")
    assert [r.status for r in endpoint.received] == [200, 200]
    shown = json.dumps(
        [
            client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json,
            client.get("/api/v1/consumers", headers=admin).json,
        ]
    )
    assert secret not in shown
    assert secret.encode() not in stored_bytes(settings)
    assert secret not in caplog.text and secret not in worker.log_text()


def test_oauth2_token_is_fetched_cached_renewed_on_401_and_failures_retry(
    settings, start_engine, endpoint, make_consumer, client, admin, amqp, caplog
):
    caplog.set_level(logging.DEBUG)
    with TokenEndpoint() as token:
        valid = ["token-1"]
        endpoint.respond = demanding(lambda: f"Bearer {valid[0]}")
        worker = start_engine(settings)
        auth = {
            "type": "oauth2",
            "token_url": token.url,
            "client_id": token.client_id,
            "client_secret": SECRET,
        }
        consumer, queue = make_consumer(endpoint.url, auth={**auth, "scope": "hooks"}, **FAST_RETRY)
        assert consumer["auth"]["client_secret"] == "***" and consumer["auth"]["scope"] == "hooks"
        worker.runner(consumer["id"])

        publish(amqp, queue, b"1", b"2", b"3")
        wait_for(lambda: len(endpoint.delivered_ids()) == 3, what="three deliveries")
        assert token.count() == 1  # one token for all three

        valid[0] = "token-2"  # the endpoint no longer takes token-1: one 401, a new token, one retry
        publish(amqp, queue, b"4")
        wait_for(lambda: len(endpoint.delivered_ids()) == 4, what="the fourth delivery")
        assert token.count() == 2
        assert [r.status for r in endpoint.received[3:]] == [401, 200]
        assert _stats(client, admin, consumer["id"])["retried"] == 0  # retried in place, not re-queued

        # The token endpoint fails (and echoes the secret): the delivery fails as "auth" and is retried.
        token.answer = lambda _r: (500, json.dumps({"error": "down", "echo": SECRET}).encode())
        valid[0] = "token-3"
        publish(amqp, queue, b"5")
        stats = wait_for(
            lambda: (s := _stats(client, admin, consumer["id"]))["retried"] >= 1 and s, what="a retry"
        )
        assert stats["last_error"].startswith("auth: oauth2 token endpoint: HTTP 500")
        assert SECRET not in stats["last_error"]
        token.answer = None  # back up: the retry gets a token and is delivered
        wait_for(lambda: b"5" in [r.body for r in endpoint.received if r.status == 200], what="delivery of 5")
        assert SECRET not in caplog.text and SECRET not in worker.log_text()
        assert SECRET.encode() not in stored_bytes(settings)


def test_oauth2_token_url_must_be_allowed_by_the_guard(make_settings, make_queue, admin):
    app = create_app(make_settings(block_private_targets=True))
    try:
        response = app.test_client().post(
            "/api/v1/consumers",
            json={
                "queue": make_queue("g"),
                "target_url": "http://93.184.215.14/hook",
                "auth": {
                    "type": "oauth2",
                    "token_url": "http://127.0.0.1:9/t",
                    "client_id": "c",
                    "client_secret": "s",
                },
            },
            headers=admin,
        )
    finally:
        app.extensions["workerrmq"].close()
    assert "non-public" in json_error(response, 400, field="auth.token_url")["message"]


def test_mtls_reaches_an_endpoint_that_demands_a_client_certificate(
    settings, start_engine, make_consumer, client, admin, amqp, ca, client_cert
):
    worker = start_engine(settings)
    with TlsEndpoint(_server_context(ca)) as server:
        consumer, queue = make_consumer(server.url, auth=_mtls(client_cert, ca), **FAST_RETRY)
        assert consumer["auth"]["key_pem"] == "***"
        assert consumer["auth"]["cert_pem"].startswith("-----BEGIN CERTIFICATE-----")
        # The same endpoint, with a certificate from a CA the server does not trust: refused.
        stranger = _mtls(trustme.CA().issue_cert("client@elsewhere.test"), ca)
        refused, refused_queue = make_consumer(server.url, auth=stranger, **FAST_RETRY)
        worker.runner(consumer["id"]), worker.runner(refused["id"])
        publish(amqp, queue, b"over mtls")
        publish(amqp, refused_queue, b"no entry")
        wait_for(lambda: server.bodies() == [b"over mtls"], what="the mTLS delivery")
        stats = wait_for(
            lambda: (s := _stats(client, admin, refused["id"]))["failed"] >= 1 and s, what="the refusal"
        )
        assert stats["last_error"].startswith("connection: ")
        assert server.bodies() == [b"over mtls"]
    key = client_cert.private_key_pem.bytes().decode().splitlines()[1]
    assert key.encode() not in stored_bytes(settings)


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"type": "mtls", "cert_pem": "nope", "key_pem": "nope"}, "auth.cert_pem"),
        ({"type": "bearer", "token": "a\nb"}, "auth.token"),
        ({"type": "basic", "username": "a:b", "password": "p"}, "auth.username"),
    ],
)
def test_api_refuses_bad_auth_naming_the_field(make_queue, client, admin, auth, field):
    response = client.post(
        "/api/v1/consumers",
        json={"queue": make_queue("b"), "target_url": "https://h.test/", "auth": auth},
        headers=admin,
    )
    json_error(response, 400, field=field)


def test_api_refuses_auth_with_another_authorization(make_queue, client, admin):
    queue = make_queue("x")
    bearer = {"type": "bearer", "token": "t"}
    for body in (
        {"target_url": "https://h.test/", "headers": {"authorization": "Bearer other"}, "auth": bearer},
        {"target_url": "https://u:p@h.test/", "auth": bearer},
    ):
        response = client.post("/api/v1/consumers", json={"queue": queue, **body}, headers=admin)
        message = json_error(response, 400)["message"]
        assert message.startswith("auth: bearer auth sets the Authorization header"), message


def test_api_refuses_mtls_to_a_plain_http_target(make_queue, client, admin, ca, client_cert):
    response = client.post(
        "/api/v1/consumers",
        json={"queue": make_queue("m"), "target_url": "http://h.test/", "auth": _mtls(client_cert, ca)},
        headers=admin,
    )
    assert "https" in json_error(response, 400, field="target_url")["message"]


def test_an_auth_failure_is_retried_whatever_retry_on_lists():
    assert classify(None, "auth", ()) is Verdict.RETRY  # the endpoint never saw the message
    assert classify(None, "connection", ()) is Verdict.DEAD_LETTER
