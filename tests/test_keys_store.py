"""API keys in the store and over /api/v1/keys, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import text

from workerrmq.api import create_app
from workerrmq.errors import Conflict, InvalidInput, NotFound
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.keys import TOKEN_PREFIX, KeyStore


@pytest.fixture
def store(db: Database) -> KeyStore:
    return KeyStore(db)


@pytest.fixture
def db_app(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Callable[..., Flask]]:
    """Apps over the parametrized database; closed after the test."""
    apps: list[Flask] = []

    def make(**overrides: object) -> Flask:
        app = create_app(make_settings(database_url=database_url, **overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["workerrmq"].close()


def stored_rows(db: Database) -> list[dict[str, object]]:
    with db.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(text("SELECT * FROM api_keys"))]


def test_create_list_revoke(store):
    info, token = store.create("ci", "publish")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert (info.name, info.scope, info.revoked_at) == ("ci", "publish", None)
    assert info.prefix == token[:12]
    assert store.authenticate(token) == info
    assert [k.name for k in store.list()] == ["ci"]

    revoked = store.revoke(info.id)
    assert revoked.revoked_at is not None
    assert store.authenticate(token) is None
    assert store.list()[0].revoked_at is not None
    assert store.revoke(info.id).revoked_at == revoked.revoked_at  # revoking twice is harmless


def test_tokens_are_unique_and_random(store):
    tokens = {store.create(f"k{i}", "read")[1] for i in range(5)}
    assert len(tokens) == 5


def test_token_is_never_stored_only_its_digest(db, store):
    _, token = store.create("secretive", "admin")
    rows = stored_rows(db)
    assert len(rows) == 1
    row = rows[0]
    assert row["digest"] == hashlib.sha256(token.encode()).hexdigest()
    secret_part = token[12:]
    for column, value in row.items():
        assert token not in str(value), column
        assert secret_part not in str(value), column


def test_duplicate_name_conflicts(store):
    store.create("same", "read")
    with pytest.raises(Conflict):
        store.create("same", "admin")


def test_invalid_scope_and_unknown_id(store):
    with pytest.raises(InvalidInput) as info:
        store.create("bad", "superuser")
    assert info.value.field == "scope"
    with pytest.raises(NotFound):
        store.revoke(424242)


def test_unknown_token_does_not_authenticate(store):
    store.create("real", "read")
    assert store.authenticate("wrmq_made-up") is None
    assert store.authenticate("") is None


def test_bootstrap_creates_one_admin_key_once(store):
    token = store.bootstrap()
    assert token is not None
    key = store.authenticate(token)
    assert key is not None and key.scope == "admin"
    assert store.bootstrap() is None
    assert len(store.list()) == 1


def test_bootstrap_does_nothing_when_keys_exist(store):
    store.create("existing", "read")
    assert store.bootstrap() is None
    assert [k.name for k in store.list()] == ["existing"]


def test_bootstrap_registers_the_configured_token(db, store):
    configured = "wrmq_configured-by-operator-0123456789"
    assert store.bootstrap(configured) is None
    key = store.authenticate(configured)
    assert key is not None and key.scope == "admin" and key.name == "bootstrap"
    store.bootstrap(configured)  # again: not registered twice
    assert len(store.list()) == 1
    assert configured not in str(stored_rows(db))


def test_a_changed_configured_token_replaces_the_old_one(store):
    store.bootstrap("wrmq_first-configured-token-0123456789")
    store.revoke(store.authenticate("wrmq_first-configured-token-0123456789").id)
    store.bootstrap("wrmq_second-configured-token-012345678")
    assert store.authenticate("wrmq_first-configured-token-0123456789") is None
    key = store.authenticate("wrmq_second-configured-token-012345678")
    assert key is not None and key.name == "bootstrap" and key.scope == "admin"
    assert [k.name for k in store.list()] == ["bootstrap"]


def test_app_start_prints_bootstrap_key_once(db_app, capsys):
    app = db_app()
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if line.strip().startswith(TOKEN_PREFIX)]
    assert len(lines) == 1
    token = lines[0]
    client = app.test_client()
    response = client.get("/api/v1/keys", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200

    db_app()  # a restart over the same database: no new key, nothing printed
    assert TOKEN_PREFIX not in capsys.readouterr().err
    assert len(app.extensions["workerrmq"].keys.list()) == 1


def test_app_registers_workerrmq_api_key(db_app, capsys):
    configured = "wrmq_from-the-environment-abcdefghijklmnop"
    app = db_app(bootstrap_api_key=configured)
    assert TOKEN_PREFIX not in capsys.readouterr().err  # nothing generated, nothing printed
    client = app.test_client()
    response = client.get("/api/v1/keys", headers={"Authorization": f"Bearer {configured}"})
    assert response.status_code == 200
    assert [(k["name"], k["scope"]) for k in response.json] == [("bootstrap", "admin")]


def test_keys_api(db_app):
    app = db_app(bootstrap_api_key="wrmq_admin-token-for-the-keys-api-test")
    client = app.test_client()
    admin = {"Authorization": "Bearer wrmq_admin-token-for-the-keys-api-test"}

    created = client.post("/api/v1/keys", json={"name": "reader", "scope": "read"}, headers=admin)
    assert created.status_code == 201
    new = created.json
    assert new["name"] == "reader" and new["scope"] == "read"
    assert new["key"].startswith(TOKEN_PREFIX) and new["prefix"] == new["key"][:12]
    reader = {"Authorization": f"Bearer {new['key']}"}
    assert client.get("/api/v1/consumers", headers=reader).status_code == 200

    listed = client.get("/api/v1/keys", headers=admin).json
    assert [k["name"] for k in listed] == ["bootstrap", "reader"]
    for k in listed:
        assert "key" not in k and "digest" not in k
        assert set(k) >= {"id", "name", "scope", "prefix", "created_at", "revoked_at"}
        # Timestamps carry their zone on every database (SQLite stores them naive).
        assert dt.datetime.fromisoformat(k["created_at"]).utcoffset() == dt.timedelta(0)
    assert new["key"] not in str(listed)

    revoked = client.delete(f"/api/v1/keys/{new['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json["revoked_at"] is not None
    listed = client.get("/api/v1/keys", headers=admin).json
    revoked_at = dt.datetime.fromisoformat(listed[1]["revoked_at"])
    assert revoked_at.utcoffset() == dt.timedelta(0)
    assert client.get("/api/v1/consumers", headers=reader).status_code == 401

    duplicate = client.post("/api/v1/keys", json={"name": "reader", "scope": "read"}, headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.json["error"]["code"] == "conflict"
    assert client.delete("/api/v1/keys/99999", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scope": "root"}, "scope"),
        ({"scope": "read"}, "name"),
        ({"name": "", "scope": "read"}, "name"),
        ({"name": "x" * 101, "scope": "read"}, "name"),
        ({"name": "x"}, "scope"),
        ({"name": 5, "scope": "read"}, "name"),
    ],
)
def test_keys_api_validation(client, admin, body, field):
    response = client.post("/api/v1/keys", json=body, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_a_revocation_elsewhere_takes_effect_within_the_cache_time(db, store):
    from tests.support import wait_for
    from workerrmq.store.keys import CACHE_SECONDS

    info, token = store.create("cached", "read")
    assert store.authenticate(token) is not None  # now remembered by this process
    other_process = KeyStore(db)
    other_process.revoke(info.id)
    assert other_process.authenticate(token) is None  # where it was revoked: at once
    wait_for(
        lambda: store.authenticate(token) is None,
        timeout=CACHE_SECONDS + 2,
        what="the revocation to reach the other store",
    )
