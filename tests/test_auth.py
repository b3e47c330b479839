"""Auth: bearer keys, scopes, and a check of every route the app serves."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.support import wait_for

# The only routes open without a key: health, the API's description, and the dashboard
# page with its static files (the page asks for a key before it calls the API).
PUBLIC_PATHS = {
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/docs/assets/<path:filename>",
    "/",
    "/favicon.ico",
    "/static/<path:filename>",
}
PUBLISH_ENDPOINTS = {
    "messages.publish_to_queue",
    "messages.publish_to_exchange",
    "seed.message_publish",
}
ADMIN_READ_ENDPOINTS = {"keys.list_keys"}
SCOPES = ("read", "publish", "admin")
SAMPLE_ARGS = {
    "name": "auth-check-missing",
    "key_id": "987654",
    "ref": "auth-check-missing",
    "message_id": "auth-check-missing",
}


def expected_scope(endpoint: str, method: str) -> str:
    """What the issue asks of each route: GET is read, publishing is publish, else admin."""
    if endpoint in ADMIN_READ_ENDPOINTS:
        return "admin"
    if method in ("GET", "HEAD"):
        return "read"
    if endpoint in PUBLISH_ENDPOINTS:
        return "publish"
    return "admin"


def protected_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(method, url, endpoint) for every rule and method, public ones left out."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC_PATHS:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", SAMPLE_ARGS[arg])
            url = url.replace(f"<int:{arg}>", SAMPLE_ARGS[arg])
            url = url.replace(f"<path:{arg}>", SAMPLE_ARGS[arg])
        assert "<" not in url, f"no sample argument for {rule.rule}"
        for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
            routes.append((method, url, rule.endpoint))
    return routes


def test_route_table_is_not_empty(app):
    routes = protected_routes(app)
    endpoints = {endpoint for _, _, endpoint in routes}
    # The generated check below must really cover the API, not an empty list.
    assert {
        "queues.create_queue",
        "keys.create_key",
        "seed.get_queues",
        "messages.publish_to_queue",
        "connections.close_connection",
    } <= endpoints
    assert len(routes) >= 22


def test_every_protected_route_requires_a_key(app, client):
    failures = []
    for method, url, _ in protected_routes(app):
        response = client.open(url, method=method)
        if response.status_code != 401 or response.json["error"]["code"] != "unauthorized":
            failures.append((method, url, response.status_code))
    assert failures == []


def test_every_protected_route_rejects_too_small_a_scope(app, client, make_key):
    headers = {scope: make_key(scope) for scope in SCOPES}
    failures = []
    for method, url, endpoint in protected_routes(app):
        needed = expected_scope(endpoint, method)
        for scope in SCOPES[: SCOPES.index(needed)]:
            response = client.open(url, method=method, headers=headers[scope])
            if response.status_code != 403 or response.json["error"]["code"] != "forbidden":
                failures.append((method, url, scope, response.status_code))
        # The scope that is enough gets past auth (into validation or a 404 for the sample name).
        response = client.open(url, method=method, headers=headers[needed])
        if response.status_code in (401, 403):
            failures.append((method, url, needed, response.status_code))
    assert failures == []


def test_read_key_cannot_change_anything(app, client, make_key):
    read = make_key("read")
    changing = [(m, u) for m, u, _ in protected_routes(app) if m not in ("GET", "HEAD")]
    assert {"POST", "DELETE"} <= {m for m, _ in changing}
    for method, url in changing:
        assert client.open(url, method=method, headers=read).status_code == 403, (method, url)


def test_publish_key_cannot_manage_keys_or_queues(client, make_key, queue_name):
    publish = make_key("publish")
    name = queue_name()
    assert client.post("/api/v1/queues", json={"name": name}, headers=publish).status_code == 403
    assert client.post("/createQueue", json={"queueName": name}, headers=publish).status_code == 403
    assert client.delete(f"/api/v1/queues/{name}", headers=publish).status_code == 403
    assert client.post(f"/api/v1/queues/{name}/purge", headers=publish).status_code == 403
    assert client.get("/api/v1/keys", headers=publish).status_code == 403
    created = client.post("/api/v1/keys", json={"name": "x", "scope": "admin"}, headers=publish)
    assert created.status_code == 403
    assert client.get(f"/api/v1/queues/{name}", headers=publish).status_code == 404  # read is fine


def test_publish_key_can_publish(client, admin, make_key, queue_name, amqp):
    name = queue_name()
    assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
    publish = make_key("publish")
    response = client.post(f"/api/v1/queues/{name}/messages", json={"body": "hi"}, headers=publish)
    assert response.status_code == 201
    method, _, body = amqp.basic_get(name, auto_ack=True)
    assert body == b"hi"


def test_read_key_cannot_publish(client, make_key):
    read = make_key("read")
    response = client.post("/api/v1/queues/x/messages", json={"body": "hi"}, headers=read)
    assert response.status_code == 403
    assert "publish" in response.json["error"]["message"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic Z3Vlc3Q6Z3Vlc3Q=",
        "Bearer wrmq_not-a-real-key",
        "wrmq_no-scheme",
    ],
)
def test_missing_or_unknown_key_is_401(client, header):
    headers = {} if header is None else {"Authorization": header}
    response = client.get("/api/v1/queues", headers=headers)
    assert response.status_code == 401
    assert response.is_json
    assert response.json["error"]["code"] == "unauthorized"


def test_revoked_key_is_401_at_once(app, client, admin):
    services = app.extensions["workerrmq"]
    info, token = services.keys.create("soon-revoked", "admin")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/keys", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/keys/{info.id}", headers=admin).status_code == 200
    response = client.get("/api/v1/keys", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json["error"]["message"]


def test_bearer_scheme_is_case_insensitive(client, admin):
    token = admin["Authorization"].split(" ", 1)[1]
    response = client.get("/api/v1/keys", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/openapi.json", "/docs", "/favicon.ico", "/docs/assets/swagger-ui-bundle.js"]
)
def test_public_routes_need_no_key(client, path):
    response = client.get(path)
    assert response.status_code == 200


def test_healthz_and_readyz_answer_without_key(client, broker):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz").json
    assert ready == {
        "status": "ready",
        "warnings": [],
        "checks": {"broker": "ok", "management": "ok", "database": "ok"},
    }


def test_key_check_is_fast(app):
    """The issue asks for well under a millisecond per check: no bcrypt per request."""
    import time

    keys = app.extensions["workerrmq"].keys
    _, token = keys.create("speed", "read")
    keys.authenticate(token)
    started = time.perf_counter()
    for _ in range(200):
        assert keys.authenticate(token) is not None
    per_check = (time.perf_counter() - started) / 200
    # A database round trip on a busy machine; bcrypt alone would be ~100 ms.
    assert per_check < 0.01


# -- the failed-authentication limit ------------------------------------------------------------

BAD = {"Authorization": "Bearer wrmq_not-a-real-key"}


def test_a_valid_key_is_never_refused_for_failures_from_its_address(make_settings, make_app):
    """40 bad keys from one address used to lock out every request from it, the admin's
    included; behind a reverse proxy, that is every client."""
    client, admin = make_app(make_settings(auth_failure_limit=40))
    shared = {"REMOTE_ADDR": "203.0.113.9"}
    statuses = [client.get("/api/v1/keys", headers=BAD, environ_base=shared).status_code for _ in range(1000)]
    assert statuses[:40] == [401] * 40
    assert set(statuses[40:]) == {429}  # failures stay limited
    response = client.get("/api/v1/keys", headers=admin, environ_base=shared)
    assert response.status_code == 200, response.json
    # ... and right after it, the bad key is still refused.
    assert client.get("/api/v1/keys", headers=BAD, environ_base=shared).status_code == 429


def test_missing_keys_count_as_failures(make_settings, make_app):
    client, admin = make_app(make_settings(auth_failure_limit=3))
    peer = {"REMOTE_ADDR": "203.0.113.10"}
    assert [client.get("/api/v1/queues", environ_base=peer).status_code for _ in range(4)] == [
        401,
        401,
        401,
        429,
    ]
    assert client.get("/api/v1/keys", headers=admin, environ_base=peer).status_code == 200
    assert client.get("/healthz", environ_base=peer).status_code == 200  # public: no key, no count


def test_a_forbidden_scope_is_not_a_failed_authentication(make_settings, make_app):
    client, admin = make_app(make_settings(auth_failure_limit=2))
    _, token = client.application.extensions["workerrmq"].keys.create("reader", "read")
    read = {"Authorization": f"Bearer {token}"}
    peer = {"REMOTE_ADDR": "203.0.113.11"}
    for _ in range(5):
        assert client.get("/api/v1/keys", headers=read, environ_base=peer).status_code == 403
    assert client.get("/api/v1/queues", headers=BAD, environ_base=peer).status_code == 401


def test_the_limit_frees_up_as_the_window_passes():
    from workerrmq.api.auth import FailureLimiter
    from workerrmq.errors import TooManyRequests

    limiter = FailureLimiter(limit=2, window=0.2)
    limiter.fail("a")
    limiter.fail("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.fail("a")
    assert refused.value.retry_after >= 1
    limiter.fail("b")  # another client has its own count
    wait_for(lambda: _accepted(limiter, "a"), timeout=5, what="the window to pass")


def _accepted(limiter, client: str) -> bool:
    from workerrmq.errors import TooManyRequests

    try:
        limiter.fail(client)
    except TooManyRequests:
        return False
    return True
