"""Client addresses behind reverse proxies: X-Forwarded-For counts only from TRUSTED_PROXIES.

Failed sign-ins are limited per client. These tests check who "the client" is: with
the Flask test client's REMOTE_ADDR, and over real HTTP, where the TCP peer is real.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from workerrmq.errors import ConfigError
from workerrmq.settings import Settings

PROXY = "10.0.0.5"
BAD = {"Authorization": "Bearer wrmq_not-a-real-key"}
LIMIT = 5


def networks(*items: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(i) for i in items)


@pytest.fixture
def limited(make_settings, make_app) -> Callable[..., tuple]:
    def make(*trusted: str):
        return make_app(make_settings(auth_failure_limit=LIMIT, trusted_proxies=networks(*trusted)))

    return make


def statuses(client, n: int, *, peer: str, forwarded_for: str | None = None) -> list[int]:
    headers = dict(BAD)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return [
        client.get("/api/v1/queues", headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code
        for _ in range(n)
    ]


def test_behind_a_trusted_proxy_clients_are_counted_apart(limited):
    client, admin = limited("10.0.0.0/24")
    assert statuses(client, LIMIT + 1, peer=PROXY, forwarded_for="198.51.100.1") == [401] * LIMIT + [429]
    # Another client behind the same proxy has a count of its own.
    assert statuses(client, LIMIT, peer=PROXY, forwarded_for="198.51.100.2") == [401] * LIMIT
    # Whatever a client writes in front of the proxy's entry is not believed.
    assert statuses(client, 1, peer=PROXY, forwarded_for="1.2.3.4, 198.51.100.1") == [429]


def test_from_an_untrusted_peer_forwarded_for_is_ignored(limited):
    client, _ = limited("10.0.0.0/24")
    peer = "198.51.100.50"
    # A fresh X-Forwarded-For for every attempt does not dodge the limit.
    got = [statuses(client, 1, peer=peer, forwarded_for=f"192.0.2.{i}")[0] for i in range(20)]
    assert got == [401] * LIMIT + [429] * (20 - LIMIT)


def test_without_trusted_proxies_forwarded_for_is_ignored(limited):
    client, _ = limited()
    got = [statuses(client, 1, peer=PROXY, forwarded_for=f"192.0.2.{i}")[0] for i in range(8)]
    assert got == [401] * LIMIT + [429] * 3


def test_a_chain_of_trusted_proxies_is_followed_to_the_client(limited):
    client, _ = limited("10.0.0.0/24", "fd00::/8")
    # client -> 10.0.0.7 (trusted, adds the client) -> fd00::1 (trusted) -> peer 10.0.0.5
    chain = "192.0.2.99, 198.51.100.7, 10.0.0.7, fd00::1"
    assert statuses(client, LIMIT + 1, peer=PROXY, forwarded_for=chain)[-1] == 429
    # 198.51.100.7 is the client: the spoofed 192.0.2.99 in front of it made no difference.
    assert statuses(client, 1, peer=PROXY, forwarded_for="198.51.100.7")[0] == 429
    assert statuses(client, 1, peer=PROXY, forwarded_for="198.51.100.8")[0] == 401


def test_an_ipv4_mapped_peer_is_trusted_like_its_ipv4_address(limited):
    client, _ = limited("10.0.0.0/24")
    assert statuses(client, LIMIT + 1, peer="::ffff:10.0.0.5", forwarded_for="198.51.100.3")[-1] == 429
    assert statuses(client, 1, peer="::ffff:10.0.0.5", forwarded_for="198.51.100.4") == [401]


# -- over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    servers = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _over_http(base: str, n: int, forwarded_for: str, headers: dict[str, str] = BAD) -> list[int]:
    with requests.Session() as session:
        return [
            session.get(
                f"{base}/api/v1/keys", timeout=10, headers={**headers, "X-Forwarded-For": forwarded_for}
            ).status_code
            for _ in range(n)
        ]


def test_over_http_a_trusted_local_proxy_keeps_clients_apart(limited, serve):
    client, admin = limited("127.0.0.1")
    base = serve(client.application)
    assert _over_http(base, LIMIT + 1, "198.51.100.1") == [401] * LIMIT + [429]
    assert _over_http(base, 1, "198.51.100.2") == [401]
    assert _over_http(base, 1, "198.51.100.1", admin) == [200]  # a valid key from the same client


def test_over_http_an_untrusted_peer_cannot_dodge_the_limit(limited, serve):
    client, admin = limited("10.0.0.0/8")  # not the peer, 127.0.0.1
    base = serve(client.application)
    got = [_over_http(base, 1, f"192.0.2.{i}")[0] for i in range(LIMIT + 3)]
    assert got == [401] * LIMIT + [429] * 3
    assert _over_http(base, 1, "192.0.2.200", admin) == [200]


# -- the setting --------------------------------------------------------------------------------


def test_trusted_proxies_setting():
    assert Settings.from_env({}, env_file=None).trusted_proxies == ()
    parsed = Settings.from_env(
        {"TRUSTED_PROXIES": " 10.0.0.5, 10.1.0.0/16 ,::1,"}, env_file=None
    ).trusted_proxies
    assert parsed == networks("10.0.0.5/32", "10.1.0.0/16", "::1/128")
    with pytest.raises(ConfigError) as bad:
        Settings.from_env({"TRUSTED_PROXIES": "10.0.0.5, proxy.internal"}, env_file=None)
    assert "TRUSTED_PROXIES" in str(bad.value) and "proxy.internal" in str(bad.value)
