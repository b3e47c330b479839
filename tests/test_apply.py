"""``workerrmq apply`` and ``export`` (configuration as code), and the exchange and managed-object
routes they use: the real CLI against the real API over HTTP, over the real broker."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator

import jsonschema
import pytest
import requests
import yaml

from tests.test_ops_cli import Api
from workerrmq.client.declared import consumer_defaults
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.errors import NotFound

# The api, isolated and cli fixtures: the CLI against the app served over HTTP.
pytest_plugins = ["tests.test_ops_cli"]

TARGET = "http://127.0.0.1:9/hook"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"T_SIGNING": SECRET, "T_TOKEN": "tok-123456", "T_PASSWORD": "hunter2-pw"}


@pytest.fixture
def exchange_name(mgmt) -> Iterator[Callable[[], str]]:
    """Unique exchange names, deleted from the broker after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"t-ex-{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    for name in names:
        with contextlib.suppress(NotFound):
            mgmt.delete_exchange(name, if_unused=False)


@dataclasses.dataclass
class Names:
    exchange: str
    orders: str
    audit: str


@pytest.fixture
def names(queue_name, exchange_name) -> Names:
    return Names(exchange_name(), queue_name("orders"), queue_name("audit"))


def config(
    n: Names,
    *,
    concurrency: int | None = None,
    audit: bool = True,
    consumer: bool = True,
    keys: tuple[tuple[str, str], ...] = (("ci", "publish"),),
) -> str:
    doc: dict = {
        "version": 1,
        "exchanges": [{"name": n.exchange, "type": "topic"}],
        "queues": [
            {
                "name": n.orders,
                "type": "quorum",
                "arguments": {"max_length": 1000, "overflow": "reject-publish"},
                "bindings": [{"exchange": n.exchange, "routing_key": "orders.*"}],
            }
        ],
        "consumers": [],
        "api_keys": [{"name": name, "scope": scope} for name, scope in keys],
    }
    if audit:
        doc["queues"].append({"name": n.audit, "arguments": {"message_ttl": 60000}})
    if consumer:
        relay = {
            "name": f"{n.orders}-relay",
            "queue": n.orders,
            "target_url": "http://hooks:${T_PASSWORD}@127.0.0.1:9/orders",
            "signing_secret": "${T_SIGNING}",
            "headers": {"X-Api-Key": "${T_TOKEN}", "X-Tenant": "acme"},
            "max_attempts": 3,
            "retry_on": ["5xx", "429"],
            "state": "paused",
        }
        if concurrency is not None:
            relay["concurrency"] = concurrency
        doc["consumers"].append(relay)
    return yaml.safe_dump(doc, sort_keys=False)


def write(tmp_path, text: str) -> str:
    path = tmp_path / f"wrmq-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    return str(path)


def consumers_of(api: Api) -> dict[str, dict]:
    answer = requests.get(
        f"{api.url}/api/v1/consumers", timeout=10, headers={"Authorization": f"Bearer {api.token}"}
    ).json()
    items = answer if isinstance(answer, list) else answer["items"]
    return {c["name"]: c for c in items}


def active_keys(cli) -> dict[str, dict]:
    return {
        k["name"]: k for k in json.loads(cli("keys", "ls", "--json").stdout)["items"] if not k["revoked_at"]
    }


# -- the routes apply uses -----------------------------------------------------------------


def test_exchanges_api(client, admin, exchange_name, mgmt):
    name = exchange_name()
    created = client.post("/api/v1/exchanges", json={"name": name, "type": "topic"}, headers=admin)
    assert created.status_code == 201 and created.json["type"] == "topic"
    assert mgmt.get_exchange(name)["type"] == "topic"  # on the broker, not just in the answer
    again = client.post("/api/v1/exchanges", json={"name": name, "type": "topic"}, headers=admin)
    assert again.status_code == 200
    other = client.post("/api/v1/exchanges", json={"name": name, "type": "fanout"}, headers=admin)
    assert other.status_code == 409
    assert name in [e["name"] for e in client.get("/api/v1/exchanges", headers=admin).json]
    for reserved in ("amq.mine", "workerrmq.control"):
        refused = client.post("/api/v1/exchanges", json={"name": reserved}, headers=admin)
        assert refused.status_code == 400 and refused.json["error"]["field"] == "name"
        assert client.delete(f"/api/v1/exchanges/{reserved}", headers=admin).status_code == 400
    bad = client.post("/api/v1/exchanges", json={"name": name, "type": "nope"}, headers=admin)
    assert bad.status_code == 400 and bad.json["error"]["field"] == "type"
    assert client.delete(f"/api/v1/exchanges/{name}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/exchanges/{name}", headers=admin).status_code == 404


def test_managed_api(client, admin, queue_name, exchange_name):
    queue, exchange = queue_name("m"), exchange_name()
    assert client.put(f"/api/v1/managed/queues/{queue}", headers=admin).status_code == 404
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    client.post("/api/v1/exchanges", json={"name": exchange}, headers=admin)
    assert client.put(f"/api/v1/managed/queues/{queue}", headers=admin).status_code == 200
    assert client.put(f"/api/v1/managed/exchanges/{exchange}", headers=admin).status_code == 200
    listed = {(m["kind"], m["name"]) for m in client.get("/api/v1/managed", headers=admin).json}
    assert listed == {("queue", queue), ("exchange", exchange)}
    assert client.delete(f"/api/v1/managed/queues/{queue}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/queues/{queue}", headers=admin).status_code == 200  # still there
    assert len(client.get("/api/v1/managed", headers=admin).json) == 1


# -- apply -----------------------------------------------------------------------------------


def test_apply_creates_then_second_apply_changes_nothing(cli, names, tmp_path, mgmt, api):
    path = write(tmp_path, config(names))
    first = cli("apply", "-f", path, env=ENV)
    assert f"+ create queue {names.orders!r}" in first.stdout
    assert "applied" in first.stdout
    for secret in ENV.values():
        assert secret not in first.output  # secrets are never printed
    # What reached the broker.
    assert mgmt.get_exchange(names.exchange)["type"] == "topic"
    orders = mgmt.get_queue(names.orders)
    assert orders["arguments"]["x-queue-type"] == "quorum"
    assert orders["arguments"]["x-max-length"] == 1000
    assert mgmt.get_queue(names.audit)["arguments"]["x-message-ttl"] == 60000
    assert [(b["source"], b["routing_key"]) for b in mgmt.queue_bindings(names.orders) if b["source"]] == [
        (names.exchange, "orders.*")
    ]
    # The consumer, with its secrets.
    relay = consumers_of(api)[f"{names.orders}-relay"]
    assert relay["signing"] is True and relay["max_attempts"] == 3 and relay["state"] == "paused"
    assert relay["headers"]["X-Tenant"] == "acme" and relay["retry_on"] == ["5xx", "429"]
    # The key: created, its token printed once, and it works.
    line = next(x for x in first.stdout.splitlines() if x.startswith("ci: "))
    token = line.split(": ", 1)[1]
    assert active_keys(cli)["ci"]["scope"] == "publish"
    cli("queues", "ls", "--name", names.orders, env={"WORKERRMQ_KEY": token})

    second = cli("apply", "-f", path, env=ENV)
    assert second.stdout.strip() == "no changes"
    assert "wrmq_" not in second.output  # no key made again
    assert len(active_keys(cli)) == 3  # the test's admin key, the bootstrap key and ci


def test_dry_run_prints_the_diff_and_changes_nothing(cli, names, tmp_path, mgmt, api):
    cli("apply", "-f", write(tmp_path, config(names, audit=False)), env=ENV)
    changed = write(tmp_path, config(names, concurrency=16, keys=(("ci", "publish"), ("ro", "read"))))
    dry = cli("apply", "-f", changed, "--dry-run", env=ENV)
    assert f"+ create queue {names.audit!r}" in dry.stdout
    assert f"~ update consumer '{names.orders}-relay': concurrency 32 → 16" in dry.stdout
    assert "+ create api key 'ro'" in dry.stdout and "none made" in dry.stdout
    with pytest.raises(NotFound):
        mgmt.get_queue(names.audit)
    assert consumers_of(api)[f"{names.orders}-relay"]["concurrency"] == 32
    assert "ro" not in active_keys(cli)
    as_json = json.loads(cli("apply", "-f", changed, "--dry-run", "--json", env=ENV).stdout)
    assert {(c["action"], c["kind"]) for c in as_json["changes"]} == {
        ("create", "queue"),
        ("update", "consumer"),
        ("create", "api key"),
    }
    cli("apply", "-f", changed, env=ENV)
    assert consumers_of(api)[f"{names.orders}-relay"]["concurrency"] == 16


def test_prune_deletes_only_managed_objects(cli, names, tmp_path, mgmt, queue_name, api):
    foreign = queue_name("foreign")  # another application's queue, made without apply
    cli("queues", "create", foreign)
    cli("keys", "create", "stray", "--scope", "read")
    cli("apply", "-f", write(tmp_path, config(names)), env=ENV)
    # Without --prune nothing goes; with it, what the file dropped.
    smaller = write(tmp_path, config(names, audit=False, consumer=False, keys=()))
    kept = cli("apply", "-f", smaller, env=ENV)
    assert kept.stdout.strip() == "no changes"
    pruned = cli("apply", "-f", smaller, "--prune", env=ENV)
    assert f"- delete queue {names.audit!r}" in pruned.stdout
    assert f"- delete consumer '{names.orders}-relay'" in pruned.stdout
    assert "- delete api key 'stray'" in pruned.stdout and "- delete api key 'ci'" in pruned.stdout
    assert "apply is using it" in pruned.stderr
    with pytest.raises(NotFound):
        mgmt.get_queue(names.audit)
    mgmt.get_queue(foreign)  # not WorkerRMQ's: kept
    mgmt.get_queue(names.orders)
    mgmt.get_exchange("workerrmq.control")
    assert consumers_of(api) == {}
    assert list(active_keys(cli)) == [k for k in active_keys(cli) if k.startswith("admin")]
    assert cli("apply", "-f", smaller, "--prune", env=ENV).stdout.strip() == "no changes"

    # A managed queue that a declared consumer still reads from is kept.
    cli("apply", "-f", write(tmp_path, config(names, keys=())), env=ENV)
    relay_only = yaml.safe_load(config(names, audit=False, keys=()))
    relay_only["queues"] = []
    relay_only["exchanges"] = []
    result = cli("apply", "-f", write(tmp_path, yaml.safe_dump(relay_only)), "--prune", env=ENV, code=5)
    assert f"kept queue {names.orders!r}: consumer" in result.stderr
    # The kept queue is still bound to the exchange: an exchange in use is not deleted.
    assert f"- delete exchange {names.exchange!r}" in result.stdout and "in use" in result.stderr
    mgmt.get_queue(names.orders)
    mgmt.get_exchange(names.exchange)


def test_export_then_apply_is_a_no_op(cli, names, tmp_path):
    cli("apply", "-f", write(tmp_path, config(names)), env=ENV)
    exported = cli("export", env=ENV)
    for secret in ENV.values():
        assert secret not in exported.output
    doc = yaml.safe_load(exported.stdout)
    relay = doc["consumers"][0]
    assert relay["signing_secret"].startswith("${WORKERRMQ_")
    assert relay["headers"]["X-Api-Key"].startswith("${") and relay["headers"]["X-Tenant"] == "acme"
    assert ":${WORKERRMQ_" in relay["target_url"]
    assert {q["name"] for q in doc["queues"]} == {names.orders, names.audit}
    assert "concurrency" not in relay  # defaults are left out
    variables = {line.split()[1] for line in exported.stderr.splitlines() if line.startswith("set ")}
    assert variables == {
        relay["signing_secret"][2:-1],
        relay["headers"]["X-Api-Key"][2:-1],
        relay["target_url"].split("${")[1].split("}")[0],
    }
    env = {
        relay["signing_secret"][2:-1]: SECRET,
        relay["headers"]["X-Api-Key"][2:-1]: "tok-123456",
        relay["target_url"].split("${")[1].split("}")[0]: ENV["T_PASSWORD"],
    }
    out = tmp_path / "exported.yaml"
    cli("export", "-o", str(out))
    assert cli("apply", "-f", str(out), env=env).stdout.strip() == "no changes"


def test_secrets_come_only_from_the_environment(cli, names, tmp_path, api):
    unset = cli("apply", "-f", write(tmp_path, config(names)), env={**ENV, "T_TOKEN": None}, code=2)
    assert "consumers[0].headers.X-Api-Key: environment variable T_TOKEN is not set" in unset.stderr
    doc = yaml.safe_load(config(names))
    relay = doc["consumers"][0]
    for field, inline, where in (
        ("signing_secret", SECRET, "consumers[0].signing_secret"),
        ("headers", {"Authorization": "Bearer abc"}, "consumers[0].headers.Authorization"),
        ("headers", {"X-Api-Key": "abc"}, "consumers[0].headers.X-Api-Key"),
        ("target_url", "http://u:pw@127.0.0.1:9/x", "consumers[0].target_url"),
    ):
        bad = {**doc, "consumers": [{**relay, field: inline}]}
        refused = cli("apply", "-f", write(tmp_path, yaml.safe_dump(bad)), env=ENV, code=2)
        assert where in refused.stderr and "${ENV_NAME}" in refused.stderr
    assert consumers_of(api) == {}  # nothing was sent
    # A changed secret is not seen (the API never shows it) until --update-secrets.
    path = write(tmp_path, config(names))
    cli("apply", "-f", path, env=ENV)
    other = {**ENV, "T_SIGNING": "whsec_" + "A" * 32}
    assert cli("apply", "-f", path, env=other).stdout.strip() == "no changes"
    resent = cli("apply", "-f", path, "--update-secrets", env=other)
    assert "signing_secret (resent)" in resent.stdout
    # $$ writes one $.
    dollars = yaml.safe_load(config(names))
    dollars["consumers"][0]["headers"]["X-Price"] = "$$5"
    cli("apply", "-f", write(tmp_path, yaml.safe_dump(dollars)), env=ENV)
    assert consumers_of(api)[f"{names.orders}-relay"]["headers"]["X-Price"] == "$5"


def test_schema_errors_name_the_place_in_the_file(cli, names, tmp_path):
    doc = yaml.safe_load(config(names))
    doc["consumers"][0]["concurrency"] = 0
    doc["queues"][0]["type"] = "stream"
    doc["queues"][1]["colour"] = "red"
    refused = cli("apply", "-f", write(tmp_path, yaml.safe_dump(doc)), env=ENV, code=2)
    assert "consumers[0].concurrency: 0 is less than the minimum of 1" in refused.stderr
    assert "queues[0].type:" in refused.stderr
    assert "queues[1]: Additional properties are not allowed ('colour'" in refused.stderr
    twice = yaml.safe_load(config(names))
    twice["queues"].append(twice["queues"][0])
    assert (
        "queues[2].name:"
        in cli("apply", "-f", write(tmp_path, yaml.safe_dump(twice)), env=ENV, code=2).stderr
    )
    assert "not valid YAML" in cli("apply", "-f", write(tmp_path, "version: [1"), code=2).stderr
    assert "version" in cli("apply", "-f", write(tmp_path, "queues: []"), code=2).stderr
    assert json.loads(cli("queues", "ls", "--json", "--name", names.orders).stdout)["items"] == []
    cli("apply", "-f", write(tmp_path, config(names)), env=ENV)
    scope = cli("apply", "-f", write(tmp_path, config(names, keys=(("ci", "admin"),))), env=ENV, code=5)
    assert "api key 'ci' has scope 'publish' (file: 'admin')" in scope.stderr


def test_published_schema_is_valid_and_its_defaults_are_the_api_s():
    from click.testing import CliRunner

    from workerrmq.cli import main

    printed = json.loads(CliRunner().invoke(main, ["apply", "--schema"]).output)
    jsonschema.Draft202012Validator.check_schema(printed)
    store = {
        f.name: f.default for f in dataclasses.fields(ConsumerSpec) if f.default is not dataclasses.MISSING
    }
    for field, default in consumer_defaults().items():
        if field in store:
            expected = list(store[field]) if isinstance(store[field], tuple) else store[field]
            assert default == expected, field
    assert consumer_defaults()["retry_on"] == list(
        ConsumerSpec(id="x", name="x", queue="q", target_url=TARGET).retry_on
    )
    assert consumer_defaults()["headers"] == {}


def test_readme_example_is_a_valid_file():
    from pathlib import Path

    from workerrmq.client.declared import load

    readme = Path(__file__).parent.parent.joinpath("README.md").read_text()
    section = readme.split("## Configuration as code", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    env = {"SHOP_API_KEY": "k", "ORDERS_SIGNING_SECRET": SECRET, "AUDIT_PASSWORD": "pw"}
    declared = load(example, env)
    assert list(declared.consumers) == ["orders-relay", "audit-relay"]
    assert declared.consumers["audit-relay"]["target_url"] == "https://audit:pw@audit.example/in"
    assert set(declared.consumers["orders-relay"]) == set(consumer_defaults()) - {"create_queue"} | {
        "name",
        "queue",
        "target_url",
        "dead_letter_queue",
    }


# -- subscriptions: source consumers and the subscription fields --------------------------------


def subscriptions(n: Names, *, consumers: bool = True) -> str:
    """A topic exchange and two consumers of it with a source, between them every
    subscription field, their secrets from ENV."""
    doc: dict = {"version": 1, "exchanges": [{"name": n.exchange, "type": "topic"}], "consumers": []}
    if consumers:
        doc["consumers"] = [
            {
                "name": f"{n.orders}-events",
                "source": {"exchange": n.exchange, "binding_keys": ["orders.*", "refunds.#"]},
                "target_url": TARGET,
                "filter": 'routing_key != "orders.test" && headers["tenant"] == "acme"',
                "format": "cloudevents-binary",
                "ce_source": "/shop/orders",
                "auth": {"type": "bearer", "token": "${T_TOKEN}"},
                "reply": True,
                "degraded_after": 60,
                "state": "paused",
            },
            {
                "name": f"{n.orders}-batches",
                "source": {"exchange": n.exchange, "binding_keys": ["#"]},
                "target_url": TARGET,
                "auth": {"type": "basic", "username": "shop", "password": "${T_PASSWORD}"},
                "batch": {"max_messages": 10},  # the other batch keys at their defaults
                "state": "paused",
            },
        ]
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def source_queues(names, mgmt) -> Iterator[None]:
    """The queues the API makes for the source consumers of :func:`subscriptions`, deleted after."""
    yield
    for consumer in (f"{names.orders}-events", f"{names.orders}-batches"):
        for queue in (f"wrmq.{consumer}", f"wrmq.{consumer}.dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(queue, if_empty=False, if_unused=False)


def test_apply_source_consumers_with_every_subscription_field(cli, names, tmp_path, mgmt, api, source_queues):
    events, batches = f"{names.orders}-events", f"{names.orders}-batches"
    path = write(tmp_path, subscriptions(names))
    first = cli("apply", "-f", path, env=ENV)
    assert f"+ create exchange {names.exchange!r}" in first.stdout
    assert f"+ create consumer {events!r}: source exchange {names.exchange!r}, queue 'wrmq.{events}'" in (
        first.stdout
    )
    assert "create queue" not in first.stdout  # the API makes a source consumer's queue
    for secret in ENV.values():
        assert secret not in first.output
    # The consumers' own queues, declared and bound by the API.
    assert mgmt.get_queue(f"wrmq.{events}")["type"] == "quorum"
    assert {
        (b["source"], b["routing_key"]) for b in mgmt.queue_bindings(f"wrmq.{events}") if b["source"]
    } == {
        (names.exchange, "orders.*"),
        (names.exchange, "refunds.#"),
    }
    have = consumers_of(api)
    assert have[events]["queue"] == f"wrmq.{events}"
    assert have[events]["auth"] == {"type": "bearer", "token": "***"}
    assert have[events]["format"] == "cloudevents-binary" and have[events]["reply"] is True
    assert have[events]["filter"].startswith("routing_key") and have[events]["degraded_after"] == 60
    assert have[batches]["batch"]["max_messages"] == 10

    # Again: nothing differs, the hidden secrets included, and the queues are nobody's to prune.
    assert cli("apply", "-f", path, env=ENV).stdout.strip() == "no changes"
    pruning = cli("apply", "-f", path, "--prune", "--dry-run", env=ENV).stdout
    assert "wrmq." not in pruning and "consumer" not in pruning
    # A secret cannot be compared: a changed one is no change until --update-secrets resends it.
    other = {**ENV, "T_TOKEN": "tok-rotated-987"}
    assert cli("apply", "-f", path, env=other).stdout.strip() == "no changes"
    resent = cli("apply", "-f", path, "--update-secrets", env=other)
    assert f"~ update consumer {events!r}: auth (resent)" in resent.stdout
    assert "tok-rotated-987" not in resent.output
    # A change beside a secret is shown with the secret masked.
    changed = yaml.safe_load(subscriptions(names))
    changed["consumers"][1]["auth"]["username"] = "shop2"
    changed["consumers"][0]["source"]["binding_keys"] = ["orders.*"]
    shown = cli("apply", "-f", write(tmp_path, yaml.safe_dump(changed)), env=ENV).stdout
    assert "'username': 'shop2'" in shown and "'password': '***'" in shown
    assert ENV["T_PASSWORD"] not in shown
    assert {
        (b["source"], b["routing_key"]) for b in mgmt.queue_bindings(f"wrmq.{events}") if b["source"]
    } == {(names.exchange, "orders.*")}


def test_export_of_source_consumers_round_trips(cli, names, tmp_path, mgmt, api, source_queues):
    events, batches = f"{names.orders}-events", f"{names.orders}-batches"
    cli("apply", "-f", write(tmp_path, subscriptions(names)), env=ENV)
    exported = cli("export")
    assert "***" not in exported.stdout and "wrmq." not in exported.stdout
    doc = yaml.safe_load(exported.stdout)
    items = {c["name"]: c for c in doc["consumers"]}
    assert "queue" not in items[events] and "dead_letter_queue" not in items[events]
    assert items[events]["source"] == {"exchange": names.exchange, "binding_keys": ["orders.*", "refunds.#"]}
    assert items[events]["auth"] == {"type": "bearer", "token": f"${{WORKERRMQ_{_env(events)}_AUTH_TOKEN}}"}
    assert items[batches]["auth"]["password"] == f"${{WORKERRMQ_{_env(batches)}_AUTH_PASSWORD}}"
    assert items[batches]["auth"]["username"] == "shop"
    assert items[events]["format"] == "cloudevents-binary" and items[events]["ce_source"] == "/shop/orders"
    assert items[batches]["batch"]["max_messages"] == 10
    variables = {line.split()[1] for line in exported.stderr.splitlines() if line.startswith("set ")}
    assert variables == {f"WORKERRMQ_{_env(events)}_AUTH_TOKEN", f"WORKERRMQ_{_env(batches)}_AUTH_PASSWORD"}
    env = {
        f"WORKERRMQ_{_env(events)}_AUTH_TOKEN": ENV["T_TOKEN"],
        f"WORKERRMQ_{_env(batches)}_AUTH_PASSWORD": ENV["T_PASSWORD"],
    }
    out = tmp_path / "exported.yaml"
    out.write_text(exported.stdout)
    assert cli("apply", "-f", str(out), env=env).stdout.strip() == "no changes"

    # Pruned, a source consumer goes with its own queue (no one would take its messages).
    pruned = cli("apply", "-f", write(tmp_path, subscriptions(names, consumers=False)), "--prune", env=ENV)
    assert f"- delete consumer {events!r}: and its own queue 'wrmq.{events}'" in pruned.stdout
    with pytest.raises(NotFound):
        mgmt.get_queue(f"wrmq.{events}")
    assert consumers_of(api) == {}


def bound(mgmt, queue: str) -> set[tuple[str, str]]:
    return {(b["source"], b["routing_key"]) for b in mgmt.queue_bindings(queue) if b["source"]}


def _env(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.upper())


def test_a_source_consumer_s_file_problems(names):
    from workerrmq.client.declared import FileProblem, load

    doc = yaml.safe_load(subscriptions(names))
    inline = yaml.safe_load(subscriptions(names))
    inline["consumers"][1]["auth"]["password"] = "hunter2"
    with pytest.raises(FileProblem, match=r"consumers\[1\]\.auth\.password: a secret must not be written"):
        load(yaml.safe_dump(inline), ENV)
    doc["queues"] = [{"name": f"wrmq.{names.orders}-events"}]
    with pytest.raises(FileProblem, match=r"queues\[0\]\.name: .*the wrmq\. prefix is reserved"):
        load(yaml.safe_dump(doc), ENV)


def test_a_consumer_cannot_change_between_a_queue_and_a_source(names):
    from workerrmq.client.declared import load
    from workerrmq.client.plan import State, plan

    want = load(subscriptions(names), ENV)
    events = f"{names.orders}-events"
    have = State(
        exchanges={names.exchange: {"name": names.exchange, "type": "topic", "durable": True}},
        queues={},
        managed={("exchange", names.exchange)},
        consumers={events: {"name": events, "queue": names.orders, "source": None}},
        keys=[],
    )
    todo = plan(want, have)
    assert todo.conflicts == [
        f"consumer {events!r} exists with queue {names.orders!r}, the file gives source exchange "
        f"{names.exchange!r}, queue 'wrmq.{events}'; a consumer cannot change between a queue and a "
        f"source: delete it (workerrmq consumers rm {events}) and apply again, or give the new one "
        "another name"
    ]


def test_what_a_file_leaves_to_its_default_in_a_subscription_is_no_change(names):
    from workerrmq.client.declared import load
    from workerrmq.client.plan import State, plan

    doc = yaml.safe_load(subscriptions(names))
    events = doc["consumers"][0]
    events["source"] = {"exchange": names.exchange, "headers": {"tenant": "acme"}}  # match: all
    events["auth"] = {
        "type": "oauth2",
        "token_url": TARGET,
        "client_id": "shop",
        "client_secret": "${T_TOKEN}",
    }
    want = load(yaml.safe_dump(doc), ENV)
    # What the API answers for the file's consumers: defaults filled in, secrets hidden.
    shown = {name: {**consumer_defaults(), **copy.deepcopy(spec)} for name, spec in want.consumers.items()}
    for name, consumer in shown.items():
        consumer.update(queue=f"wrmq.{name}", dead_letter_queue=f"wrmq.{name}.dlq")
    events_shown = shown[f"{names.orders}-events"]
    events_shown["source"] = {**events["source"], "match": "all"}
    events_shown["auth"] = {**events["auth"], "client_secret": "***", "scope": None}
    batches_shown = shown[f"{names.orders}-batches"]
    batches_shown["batch"] = {"max_messages": 10, "max_wait_ms": 50, "encoding": "json-array"}
    batches_shown["auth"]["password"] = "***"
    have = State(
        exchanges={names.exchange: {"name": names.exchange, "type": "topic", "durable": True}},
        queues={},
        managed={("exchange", names.exchange)},
        consumers=shown,
        keys=[],
    )
    assert plan(want, have).changes == []
    events_shown["source"]["match"] = "any"
    (change,) = plan(want, have).changes
    assert change.body == {"source": {"exchange": names.exchange, "headers": {"tenant": "acme"}}}
