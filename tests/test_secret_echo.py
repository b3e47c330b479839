"""An endpoint that echoes the request it got (a gateway's error page, a debugging endpoint)
must not put the consumer's credentials into its error text: that text is kept as the
attempt log's ``response`` and the consumer's ``last_error``, shown to every reader.

Real parts: a local HTTP endpoint (tests/endpoint.py) that answers with the request's
headers and line, and the worker's :class:`Target` sending to it through each of the
worker's HTTP clients (aiohttp, reqwest).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.endpoint import Endpoint, Received
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.worker.auth import AuthFailed, OAuth2ClientCredentials
from workerrmq.worker.delivery import Attempt, DeliveryResult, Target
from workerrmq.worker.transport import Transport

TOKEN = "tok-3b1f9c2e7d"
PASSWORD = "pw-8e2a71c4"
CLIENT_SECRET = "cs-5d0b6a91f3"
ACCESS_TOKEN = "at-19c7e0d24b"
API_KEY = "key-4f1e8a7c"
URL_PASSWORD = "up-6c3d2b19"
QUERY_TOKEN = "qt-2e9f4a61"


def echo(received: Received) -> tuple[int, dict[str, str], bytes]:
    if received.path == "/token":
        answer = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
    # What a debugging endpoint answers: everything it was sent (the query arrives in the path
    # here only as the endpoint saw it, so the test appends the secret query value too).
    seen = {"headers": dict(received.headers), "query": QUERY_TOKEN}
    return 401, {"Content-Type": "application/json"}, json.dumps(seen).encode()


def attempt() -> Attempt:
    return Attempt(
        message_id="m-1",
        number=1,
        body=b"{}",
        content_type="application/json",
        headers={},
        correlation_id=None,
        routing_key="rk",
        redelivered=False,
        timestamp=dt.datetime(2026, 1, 1),
    )


@pytest.fixture(params=["aiohttp", "reqwest"])
def reqwest(request: pytest.FixtureRequest) -> bool:
    """Each test that takes this sends through aiohttp, then through pyreqwest."""
    return request.param == "reqwest"


def deliver(spec: ConsumerSpec, *, reqwest: bool) -> DeliveryResult:
    """One attempt at *spec*'s endpoint, as a worker's engine makes it."""

    async def go() -> DeliveryResult:
        async with aiohttp.ClientSession() as session:
            transport = Transport(session, reqwest=reqwest)
            try:
                return await Target(spec, "q").send(transport, attempt())
            finally:
                await transport.aclose()

    return asyncio.run(go())


def send(url: str, *, reqwest: bool, **fields) -> str:
    spec = ConsumerSpec(id="c1", name="c1", queue="q", target_url=url, **fields)
    result = deliver(spec, reqwest=reqwest)
    assert result.status in (401, 500)
    return result.detail


@pytest.mark.parametrize(
    ("fields", "secrets"),
    [
        ({"auth": {"type": "bearer", "token": TOKEN}}, [TOKEN]),
        (
            {"auth": {"type": "basic", "username": "u", "password": PASSWORD}},
            [PASSWORD, base64.b64encode(f"u:{PASSWORD}".encode()).decode()],
        ),
        (
            {
                "auth": {
                    "type": "oauth2",
                    "token_url": "TOKEN_URL",
                    "client_id": "c",
                    "client_secret": CLIENT_SECRET,
                }
            },
            [CLIENT_SECRET, ACCESS_TOKEN],
        ),
        ({"headers": {"X-Api-Key": API_KEY}}, [API_KEY]),
        ({"url_password": True}, [URL_PASSWORD, QUERY_TOKEN]),
    ],
)
def test_an_echoed_request_keeps_no_credential_in_the_error_text(
    fields: dict, secrets: list[str], reqwest: bool
) -> None:
    fields = copy.deepcopy(fields)  # the parameters are shared by each client's run
    with Endpoint() as endpoint:
        endpoint.respond = echo
        url = endpoint.url
        if fields.pop("url_password", False):
            url = f"http://user:{URL_PASSWORD}@127.0.0.1:{endpoint.port}/hook?token={QUERY_TOKEN}"
        auth = fields.get("auth")
        if auth and auth.get("token_url") == "TOKEN_URL":
            auth["token_url"] = f"http://127.0.0.1:{endpoint.port}/token"
        detail = send(url, reqwest=reqwest, **fields)
    assert "***" in detail
    for secret in secrets:
        assert secret not in detail
    # Everything else the endpoint said is kept (the name as that client spelled it).
    assert '"x-workerrmq-message-id": "m-1"' in detail.lower()


def test_a_token_endpoint_that_echoes_its_request_leaves_no_credential_in_the_error() -> None:
    def refuse(received: Received) -> tuple[int, dict[str, str], bytes]:
        # The form first, the secret across the point where the error text is cut (200).
        seen = {"form": "x" * 127 + received.body.decode(), "headers": dict(received.headers)}
        return 400, {"Content-Type": "application/json"}, json.dumps(seen).encode()

    with Endpoint() as endpoint:
        endpoint.respond = refuse
        auth = OAuth2ClientCredentials(endpoint.url, "cid", CLIENT_SECRET, timeout=5)

        async def go() -> str:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(AuthFailed) as caught:
                    await auth.headers(session)
            return str(caught.value)

        text = asyncio.run(go())
    assert "***" in text
    assert CLIENT_SECRET not in text
    assert base64.b64encode(f"cid:{CLIENT_SECRET}".encode()).decode() not in text


def test_a_credential_across_the_cut_of_the_error_text_leaves_no_part(reqwest: bool) -> None:
    with Endpoint() as endpoint:
        # The token straddles the 1,024th byte, where the kept error text ends.
        endpoint.respond = lambda _r: (500, {}, b"x" * 1018 + TOKEN.encode() + b" tail")
        detail = send(endpoint.url, reqwest=reqwest, auth={"type": "bearer", "token": TOKEN})
    assert TOKEN[:6] not in detail
    assert "***" in detail


def test_a_reply_that_echoes_the_request_carries_no_credential(reqwest: bool) -> None:
    """With ``reply``, the answer goes to whoever published the message (a publish key is
    enough): an echoing endpoint would hand them the consumer's token."""

    def answer(received: Received) -> tuple[int, dict[str, str], bytes]:
        seen = {"seen": dict(received.headers)}
        return 200, {"Content-Type": "application/json"}, json.dumps(seen).encode()

    with Endpoint() as endpoint:
        endpoint.respond = answer
        spec = ConsumerSpec(
            id="c1",
            name="c1",
            queue="q",
            target_url=endpoint.url,
            reply=True,
            auth={"type": "bearer", "token": TOKEN},
            headers={"X-Api-Key": API_KEY},
        )
        result = deliver(spec, reqwest=reqwest)
    assert result.status == 200 and result.answer is not None
    seen = CIMultiDict(json.loads(result.answer)["seen"])
    assert seen["Authorization"] == "Bearer ***" and seen["X-Api-Key"] == "***"
    assert seen["X-WorkerRMQ-Message-Id"] == "m-1"  # the rest as the endpoint said it
