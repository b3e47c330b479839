"""The operator commands (``workerrmq queues``, ``publish``, ``consumers``, ``dlq``, ``messages``,
``keys``) against the real API served over real HTTP, over the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from werkzeug.serving import make_server

from tests.support import free_port, put_dead_letters, wait_for
from workerrmq.cli import main

TARGET = "http://127.0.0.1:9/hook"


@dataclass
class Api:
    url: str
    token: str


@pytest.fixture
def api(app: Flask, admin: dict[str, str]) -> Iterator[Api]:
    """The app served over HTTP on a free port, with an admin token."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Api(f"http://127.0.0.1:{server.server_port}", admin["Authorization"].split()[1])
    server.shutdown()
    thread.join(10)


@pytest.fixture
def isolated(tmp_path) -> dict[str, str | None]:
    """No operator settings from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": None,
        "WORKERRMQ_URL": None,
        "WORKERRMQ_KEY": None,
        "WORKERRMQ_CONFIG": None,
        "WORKERRMQ_TIMEOUT": None,
    }


Cli = Callable[..., Result]


@pytest.fixture
def cli(api: Api, isolated: dict[str, str | None]) -> Cli:
    """Run ``workerrmq ARGS`` with the URL and key in the environment (or *env*)."""

    def run(
        *args: str, env: dict[str, str | None] | None = None, input: str | bytes | None = None, code: int = 0
    ) -> Result:
        environ = {**isolated, "WORKERRMQ_URL": api.url, "WORKERRMQ_KEY": api.token, **(env or {})}
        result = CliRunner().invoke(main, list(args), env=environ, input=input, catch_exceptions=False)
        assert result.exit_code == code, (result.exit_code, result.output)
        assert api.token not in result.output  # never the operator's key
        assert "Traceback" not in result.output
        return result

    return run


def depth(amqp, queue: str) -> int:
    return amqp.queue_declare(queue, passive=True).method.message_count


def body_of(amqp, queue: str) -> bytes:
    method, _, body = amqp.basic_get(queue, auto_ack=True)
    assert method is not None, f"{queue} is empty"
    return body


# -- queues and publishing ---------------------------------------------------------------


def test_queues_create_ls_purge_rm(cli, queue_name, amqp):
    queue = queue_name("ops")
    created = cli("queues", "create", queue, "--max-length", "1000")
    assert queue in created.stdout and "ready" in created.stdout
    cli("queues", "create", queue, "--max-length", "1000")  # identical: fine
    conflict = cli("queues", "create", queue, "--max-length", "5", code=5)
    assert "409" in conflict.stderr

    listed = cli("queues", "ls", "--name", queue)
    assert queue in listed.stdout and "messages" in listed.stdout
    as_json = json.loads(cli("queues", "ls", "--name", queue, "--json").stdout)
    [item] = as_json["items"]
    assert item["name"] == queue and item["arguments"] == {"max_length": 1000}

    cli("publish", queue, "to be purged")
    wait_for(lambda: depth(amqp, queue) == 1, timeout=5, what="published message")
    assert "purged" in cli("queues", "purge", queue).stdout
    assert depth(amqp, queue) == 0

    assert queue in cli("queues", "rm", queue).stdout
    assert "no queues" in cli("queues", "ls", "--name", queue).stderr
    assert "not found" in cli("queues", "rm", queue, code=4).stderr
    assert "not found" in cli("queues", "purge", queue, code=4).stderr
    bad = cli("queues", "create", "no spaces allowed", code=2)
    assert "name" in bad.stderr and "400" in bad.stderr


def test_publish_from_argument_stdin_and_file(cli, queue_name, amqp, tmp_path):
    queue = queue_name("pub")
    cli("queues", "create", queue)
    one = json.loads(cli("publish", queue, "from an argument", "--json").stdout)
    assert one["status"] == "published" and one["message_id"]
    cli("publish", queue, "-", "--content-type", "application/json", input=b'{"from": "stdin"}\n')
    assert body_of(amqp, queue) == b"from an argument"
    method, properties, body = amqp.basic_get(queue, auto_ack=True)
    assert body == b'{"from": "stdin"}\n'  # all of stdin, byte for byte
    assert properties.content_type == "application/json"

    lines = tmp_path / "messages.txt"
    lines.write_text("".join(f"message {n}\n" for n in range(250)))
    bulk = cli("publish", queue, "--file", str(lines), "--batch-size", "100", "-H", "tenant=acme")
    assert f"published 250 of 250 messages to '{queue}'" in bulk.stdout
    assert "250/250" in bulk.stderr  # the progress bar's last state
    assert depth(amqp, queue) == 250
    _, properties, body = amqp.basic_get(queue, auto_ack=True)
    assert body == b"message 0" and properties.headers == {"tenant": "acme"}

    # ls shows them once the management API's statistics caught up.
    def listed() -> bool:
        [item] = json.loads(cli("queues", "ls", "--name", queue, "--json").stdout)["items"]
        return item["messages"] == 249

    wait_for(listed, timeout=30, interval=0.5, what="queue depth in queues ls")
    table = cli("queues", "ls", "--name", queue).stdout
    row = next(line for line in table.splitlines() if queue in line)
    assert "249" in row

    # Lines from stdin with --file -, blank lines skipped, --json summary.
    summary = json.loads(cli("publish", queue, "--file", "-", "--json", input="a\n\nb\r\nc").stdout)
    assert summary | {"failures": []} == {
        "queue": queue,
        "published": 3,
        "failed": 0,
        "skipped": 1,
        "interrupted": False,
        "failures": [],
    }
    assert depth(amqp, queue) == 252


def test_publish_errors(cli, queue_name, tmp_path):
    missing = queue_name("missing")
    assert "not found" in cli("publish", missing, "x", code=4).stderr
    lines = tmp_path / "two.txt"
    lines.write_text("a\nb\n")
    failed = cli("publish", missing, "--file", str(lines), code=4)
    assert "after 0 messages were published" in failed.stderr
    assert "MESSAGE" in cli("publish", missing, code=1).stderr  # usage: exit 1, not 2
    assert "NAME=VALUE" in cli("publish", missing, "x", "-H", "novalue", code=1).stderr
    assert "No such command" in cli("queues", "frobnicate", code=1).stderr


def interrupted(
    api: Api, isolated: dict[str, str | None], args: list[str], started: Callable[[], bool]
) -> tuple[dict, str]:
    """Run ``workerrmq ARGS --json`` in a process, Ctrl-C it once *started*; its JSON and stderr."""
    env = {k: v for k, v in {**os.environ, **isolated}.items() if v is not None}
    env |= {"WORKERRMQ_URL": api.url, "WORKERRMQ_KEY": api.token}
    process = subprocess.Popen(
        [sys.executable, "-m", "workerrmq.cli", *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(started, timeout=30, what="the first batches")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert api.token not in stdout + stderr and "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    return summary, stderr


def test_ctrl_c_stops_a_bulk_publish_between_batches(api, isolated, queue_name, amqp, tmp_path):
    queue = queue_name("sigint")
    amqp.queue_declare(queue, durable=True)
    lines = tmp_path / "many.txt"
    lines.write_text("".join(f"m{n}\n" for n in range(50_000)))
    summary, stderr = interrupted(
        api,
        isolated,
        ["publish", queue, "--file", str(lines), "--batch-size", "5"],
        lambda: depth(amqp, queue) > 0,
    )
    assert 0 < summary["published"] < 50_000 and summary["published"] % 5 == 0
    assert f"interrupted: published {summary['published']} of 50000" in stderr
    assert depth(amqp, queue) == summary["published"]  # each batch whole, none half-sent


# -- consumers and dead letters --------------------------------------------------------------


def test_consumers_create_show_pause_resume_rm(cli, queue_name):
    queue = queue_name("cons")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    created = cli(
        "consumers",
        "create",
        queue,
        "--name",
        name,
        "--target-url",
        TARGET,
        "--concurrency",
        "4",
        "-H",
        "X-Tenant=acme",
    )
    assert f"created consumer '{name}' (running)" in created.stdout

    shown = cli("consumers", "show", name).stdout
    assert TARGET in shown and "X-Tenant: acme" in shown and f"{queue}.dlq" in shown
    details = json.loads(cli("consumers", "show", name, "--json").stdout)
    assert (details["queue"], details["concurrency"], details["state"]) == (queue, 4, "running")
    assert details["headers"] == {"X-Tenant": "acme"}
    by_id = json.loads(cli("consumers", "show", details["id"], "--json").stdout)
    assert by_id["name"] == name

    row = next(line for line in cli("consumers", "ls").stdout.splitlines() if name in line)
    assert queue in row and "running" in row
    assert name in [c["name"] for c in json.loads(cli("consumers", "ls", "--json").stdout)["items"]]

    assert "paused" in cli("consumers", "pause", name).stdout
    assert json.loads(cli("consumers", "show", name, "--json").stdout)["state"] == "paused"
    resumed = json.loads(cli("consumers", "resume", name, "--json").stdout)
    assert resumed["state"] == "running"

    cli("consumers", "create", queue, "--name", name, "--target-url", TARGET, code=5)
    bad = cli("consumers", "create", queue, "--target-url", "ftp://x", code=2)
    assert "target_url" in bad.stderr
    cli("consumers", "create", queue_name("nope"), "--target-url", TARGET, code=4)

    assert name in cli("consumers", "rm", name).stdout
    assert "not found" in cli("consumers", "show", name, code=4).stderr
    cli("consumers", "pause", name, code=4)


def test_consumer_credentials_never_show(cli, queue_name):
    queue = queue_name("credcli")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    cli(
        "consumers",
        "create",
        queue,
        "--name",
        name,
        "--target-url",
        "http://relay:pw-Tb4Wq@127.0.0.1:9/hook?token=tok-Mk2Rv",
        "-H",
        "X-Api-Key=key-Ns8Hz",
        "--signing-secret",
        "a-signing-secret-Pq7Lc",
    )
    outputs = [
        cli("consumers", "show", name).stdout,
        cli("consumers", "ls").stdout,
        cli("consumers", "ls", "--json").stdout,
        cli("consumers", "show", name, "--json").stdout,
    ]
    for output in outputs:
        for secret in ("pw-Tb4Wq", "tok-Mk2Rv", "key-Ns8Hz", "a-signing-secret-Pq7Lc"):
            assert secret not in output
    shown = json.loads(outputs[3])
    assert shown["target_url"] == "http://relay:***@127.0.0.1:9/hook?token=***"
    assert shown["headers"] == {"X-Api-Key": "***"} and shown["signing"] is True


def test_dlq_ls_and_replay(cli, queue_name, amqp):
    queue = queue_name("dlq")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    # Paused: no worker runs here, but the replayed messages should stay where we look.
    cli("consumers", "create", queue, "--name", name, "--target-url", TARGET, "--paused")
    assert "no dead letters" in cli("dlq", "ls", name).stderr
    put_dead_letters(amqp, f"{queue}.dlq", queue, 7)

    # At once: the count is read from the broker, not the management API's sample of a few seconds ago.
    assert json.loads(cli("dlq", "ls", name, "--limit", "1", "--json").stdout)["total"] == 7
    table = cli("dlq", "ls", name, "--limit", "3")
    rows = [line for line in table.stdout.splitlines() if "m-" in line]
    assert len(rows) == 3 and "m-1" in rows[0] and "503" in rows[0]
    assert "HTTP 503: down 1" in rows[0] and '{"n": 1}' in rows[0]
    assert "3 shown of 7" in table.stderr
    page = json.loads(cli("dlq", "ls", name, "--json", "--offset", "5").stdout)
    assert page.keys() == {"items", "total"}
    assert page["total"] == 7 and [m["message_id"] for m in page["items"]] == ["m-6", "m-7"]

    some = cli("dlq", "replay", name, "--count", "3", "--batch-size", "2")
    assert f"replayed 3 dead letters of '{name}'" in some.stdout
    assert "3/3" in some.stderr
    assert (depth(amqp, queue), depth(amqp, f"{queue}.dlq")) == (3, 4)
    rest = json.loads(cli("dlq", "replay", name, "--json").stdout)
    assert {
        "consumer": name,
        "replayed": 4,
        "moved": 4,
        "remaining": 0,
        "interrupted": False,
    }.items() <= rest.items()
    assert (depth(amqp, queue), depth(amqp, f"{queue}.dlq")) == (7, 0)
    assert [json.loads(body_of(amqp, queue))["n"] for _ in range(7)] == [1, 2, 3, 4, 5, 6, 7]
    assert "replayed 0 dead letters" in cli("dlq", "replay", name).stdout
    assert "5 asked; no more" in cli("dlq", "replay", name, "--count", "5").stdout
    cli("dlq", "ls", "no-such-consumer", code=4)
    cli("dlq", "replay", name, "--count", "0", code=1)


def test_ctrl_c_stops_a_replay_between_batches(api, isolated, cli, queue_name, amqp):
    queue = queue_name("replay")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    cli("consumers", "create", queue, "--name", name, "--target-url", TARGET, "--paused")
    dlq = f"{queue}.dlq"
    amqp.queue_declare(dlq, durable=True)
    for n in range(3000):
        amqp.basic_publish("", dlq, f"dead {n}".encode())
    wait_for(lambda: depth(amqp, dlq) == 3000, timeout=10, what="dead letters queued")
    summary, stderr = interrupted(
        api, isolated, ["dlq", "replay", name, "--batch-size", "2"], lambda: depth(amqp, queue) > 0
    )
    assert 0 < summary["replayed"] < 3000 and summary["replayed"] % 2 == 0
    assert f"interrupted: replayed {summary['replayed']} dead letters" in stderr
    assert depth(amqp, queue) == summary["replayed"]
    assert depth(amqp, dlq) == 3000 - summary["replayed"]  # nothing lost, nothing doubled


# -- keys, exit codes, configuration --------------------------------------------------------


def test_keys_create_ls_revoke(cli, api):
    created = cli("keys", "create", "ops-publisher", "--scope", "publish")
    token = created.stdout.strip()
    assert token.startswith("wrmq_") and "\n" not in token
    assert "ops-publisher" in created.stderr and "only this once" in created.stderr

    as_new = {"WORKERRMQ_KEY": token}
    cli("consumers", "ls", env=as_new)  # publish includes read
    forbidden = cli("keys", "ls", env=as_new, code=3)
    assert "admin" in forbidden.stderr and "403" in forbidden.stderr

    keys = json.loads(cli("keys", "list", "--json").stdout)
    assert keys["total"] == len(keys["items"]) >= 2  # the listing shape of every --json
    [mine] = [k for k in keys["items"] if k["name"] == "ops-publisher"]
    assert mine["revoked_at"] is None and "key" not in mine
    row = next(line for line in cli("keys", "ls").stdout.splitlines() if "ops-publisher" in line)
    assert "publish" in row and "active" in row and token[:12] in row
    assert token not in cli("keys", "ls").output

    revoked = cli("keys", "revoke", str(mine["id"]))
    assert "ops-publisher" in revoked.stdout
    assert "unknown or revoked" in cli("consumers", "ls", env=as_new, code=3).stderr
    row = next(line for line in cli("keys", "ls").stdout.splitlines() if "ops-publisher" in line)
    assert "revoked" in row
    cli("keys", "revoke", "424242", code=4)
    cli("keys", "create", "x", "--scope", "root", code=1)
    new = json.loads(cli("keys", "create", "scripted", "--json").stdout)
    assert new["key"].startswith("wrmq_") and new["scope"] == "read"


def test_exit_codes_say_what_failed(cli, api):
    bad_key = "wrmq_not-a-real-key-but-long-enough-1234"
    denied = cli("queues", "ls", env={"WORKERRMQ_KEY": bad_key}, code=3)
    assert "unknown or revoked API key" in denied.stderr and "401" in denied.stderr
    assert bad_key not in denied.output
    no_key = cli("queues", "ls", env={"WORKERRMQ_KEY": None}, code=3)
    assert "no API key" in no_key.stderr

    nowhere = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens
    down = cli("queues", "ls", "--url", nowhere, code=6)
    assert "cannot connect" in down.stderr and nowhere in down.stderr
    cli("publish", "q", "x", "--url", nowhere, code=6)
    assert "not an http" in cli("queues", "ls", "--url", "ftp://x", code=1).stderr

    cli("consumers", "show", "no-such-consumer", code=4)  # 404
    cli("queues", "create", "x" * 300, code=2)  # 400
    for group in ("queues", "consumers", "dlq", "keys", "messages"):
        assert "Example" in cli(group, "--help").stdout
        for command, sub in main.commands[group].commands.items():  # type: ignore[attr-defined]
            if isinstance(sub, click.Group):  # keys db: straight to the database, no --json
                continue
            help_text = cli(group, command, "--help").stdout
            assert "Example" in help_text and "--json" in help_text, (group, command)
    assert "Example" in cli("publish", "--help").stdout


def test_config_file_env_and_flag_precedence(cli, api, isolated, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    bad_key = "wrmq_wrong-key-from-somewhere-else-0000"
    no_env = {"WORKERRMQ_URL": None, "WORKERRMQ_KEY": None}

    # The default file, in ~/.config/workerrmq/config.toml.
    default = Path(isolated["HOME"]) / ".config" / "workerrmq" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text(f'url = "{api.url}"\nkey = "{api.token}"\n')
    cli("keys", "ls", env=no_env)

    # Environment over the file, for the URL and for the key.
    cli("keys", "ls", env={**no_env, "WORKERRMQ_URL": nowhere}, code=6)
    cli("keys", "ls", env={**no_env, "WORKERRMQ_KEY": bad_key}, code=3)
    # Flags over the environment.
    cli("keys", "ls", "--url", api.url, env={**no_env, "WORKERRMQ_URL": nowhere})
    cli("keys", "ls", "--key", api.token, env={**no_env, "WORKERRMQ_KEY": bad_key})
    cli("keys", "ls", "--key", bad_key, env={**no_env, "WORKERRMQ_KEY": api.token}, code=3)

    # WORKERRMQ_CONFIG and --config name another file; --config wins.
    other = tmp_path / "other.toml"
    other.write_text(f'url = "{nowhere}"\nkey = "{api.token}"\n')
    cli("keys", "ls", env={**no_env, "WORKERRMQ_CONFIG": str(other)}, code=6)
    cli("keys", "ls", "--config", str(default), env={**no_env, "WORKERRMQ_CONFIG": str(other)})
    # The file only fills what flags and environment left open.
    cli("keys", "ls", env={**no_env, "WORKERRMQ_CONFIG": str(other), "WORKERRMQ_URL": api.url})

    missing = cli("keys", "ls", "--config", str(tmp_path / "nope.toml"), env=no_env, code=1)
    assert "does not exist" in missing.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text(f'key = "{api.token}"\nurl = \n')
    unreadable = cli("keys", "ls", "--config", str(broken), env=no_env, code=1)
    assert "cannot read config file" in unreadable.stderr


def test_dlq_show_and_selective_replay_and_discard(cli, queue_name, amqp):
    queue = queue_name("sel")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    cli("consumers", "create", queue, "--name", name, "--target-url", TARGET, "--paused")
    put_dead_letters(amqp, f"{queue}.dlq", queue, 6)

    oldest = cli("dlq", "show", name).stdout  # no id: the oldest, in full
    assert "m-1" in oldest and "tenant" in oldest and "acme" in oldest and '{"n": 1}' in oldest
    shown = json.loads(cli("dlq", "show", name, "m-4", "--json").stdout)
    assert shown["dead_letter"]["message_id"] == "m-4" and shown["dead_letter"]["last_status"] == 503
    assert shown["attempts"] == []  # written by hand: no worker tried it
    assert "no dead letter 'm-9'" in cli("dlq", "show", name, "m-9", code=4).stderr

    moved = json.loads(cli("dlq", "replay", name, "--id", "m-2", "--id", "m-5", "--json").stdout)
    assert (moved["matched"], moved["moved"], moved["remaining"]) == (2, 2, 4)
    assert sorted(json.loads(body_of(amqp, queue))["n"] for _ in range(2)) == [2, 5]
    none = cli("dlq", "replay", name, "--since", "2h", "--status", "503")  # all of them are older
    assert "replayed 0 of 0 matching" in none.stdout and "4 remain" in none.stdout
    cli("dlq", "replay", name, "--since", "yesterday", code=1)  # neither a time nor an age

    refused = cli("dlq", "discard", name, "--yes", code=1)
    assert "--all" in refused.stderr  # no selector: never everything by accident
    gone = cli("dlq", "discard", name, "--error-contains", "down 3", "--yes")
    assert "discarded 1 of 1 matching" in gone.stdout and "3 remain" in gone.stdout
    cli("dlq", "discard", name, "--status", "503", input="n\n", code=1)  # declined: nothing goes
    left = json.loads(cli("dlq", "ls", name, "--json").stdout)
    assert [m["message_id"] for m in left["items"]] == ["m-1", "m-4", "m-6"]  # in their order
    everything = json.loads(cli("dlq", "discard", name, "--all", "--yes", "--json").stdout)
    assert (everything["discarded"], everything["remaining"]) == (3, 0)


def test_what_happened_to_message_x(cli, api, settings, start_engine, endpoint, queue_name):
    """A message the endpoint refused: its attempts in one command, then replayed by id."""
    endpoint.respond = lambda r: (503, {}, b"upstream down for maintenance")
    queue = queue_name("x")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    consumer = json.loads(
        cli(
            "consumers",
            "create",
            queue,
            "--name",
            name,
            "--target-url",
            endpoint.url,
            "--max-attempts",
            "2",
            "--initial-delay",
            "0.05",
            "--json",
        ).stdout
    )
    worker = start_engine(settings)
    worker.runner(consumer["id"])
    message_id = json.loads(cli("publish", queue, "order 42", "--json").stdout)["message_id"]

    def attempts() -> list[dict]:
        return json.loads(cli("messages", "attempts", message_id, "--json").stdout)["items"]

    found = wait_for(
        lambda: len(attempts()) == 2 and attempts(), timeout=30, interval=0.3, what="2 attempts logged"
    )
    assert [a["attempt"] for a in found] == [2, 1]  # newest first
    assert {a["status"] for a in found} == {503} and found[0]["outcome"] == "dead_lettered"
    table = cli("messages", "attempts", message_id)
    assert name in table.stdout and "dead_lettered" in table.stdout and "upstream down" in table.stdout
    by_consumer = json.loads(
        cli("messages", "attempts", "--consumer", name, "--status", "503", "--json").stdout
    )
    assert [a["message_id"] for a in by_consumer["items"]] == [message_id] * 2 and by_consumer["total"] == 2
    newest = json.loads(
        cli("messages", "attempts", message_id, "--consumer", name, "--limit", "1", "--json").stdout
    )
    assert [a["attempt"] for a in newest["items"]] == [2] and newest["total"] == 2
    assert "MESSAGE_ID" in cli("messages", "attempts", code=1).stderr
    shown = cli("dlq", "show", name, message_id)
    assert "order 42" in shown.stdout and "dead_lettered" in shown.stdout

    cli("consumers", "pause", name)
    endpoint.respond = lambda r: (200, {})
    moved = json.loads(cli("dlq", "replay", name, "--id", message_id, "--json").stdout)
    assert moved["moved"] == 1
    cli("consumers", "resume", name)
    wait_for(lambda: message_id in endpoint.delivered_ids(), timeout=30, what="the replayed message")


def test_consumers_update(cli, queue_name):
    queue = queue_name("upd")
    cli("queues", "create", queue)
    name = f"{queue}-relay"
    cli("consumers", "create", queue, "--name", name, "--target-url", TARGET, "--paused", "--ordered")
    updated = json.loads(
        cli("consumers", "update", name, "--concurrency", "3", "--unordered", "-H", "X-A=1", "--json").stdout
    )
    assert (updated["concurrency"], updated["ordered"], updated["headers"]) == (3, False, {"X-A": "1"})
    assert updated["target_url"] == TARGET and updated["state"] == "paused"  # the rest kept
    assert f"updated consumer '{name}'" in cli("consumers", "update", name, "--max-attempts", "4").stdout
    assert json.loads(cli("consumers", "show", name, "--json").stdout)["max_attempts"] == 4
    assert "max_attempts" in cli("consumers", "update", name, "--max-attempts", "0", code=2).stderr
    assert "nothing to change" in cli("consumers", "update", name, code=1).stderr
    cli("consumers", "update", "no-such-consumer", "--concurrency", "2", code=4)


def test_a_wrong_url_says_what_was_expected(cli, api, endpoint):
    for wrong in (f"{api.url}/api", f"{api.url}/api/v1/"):
        said = cli("queues", "ls", "--url", wrong, code=1).stderr
        assert "base URL" in said and "without /api/v1" in said and "http://127.0.0.1:5000" in said
    endpoint.respond = lambda r: (404, {}, b"<html>Not Found</html>")  # some other web server
    elsewhere = cli("queues", "ls", "--url", f"http://127.0.0.1:{endpoint.port}", code=1).stderr
    assert "not the WorkerRMQ API" in elsewhere and "base URL" in elsewhere
    endpoint.respond = lambda r: (200, {"Content-Type": "application/json"}, b"[]")
    odd = cli("consumers", "ls", "--url", f"http://127.0.0.1:{endpoint.port}", code=1).stderr
    assert "without a list of items" in odd and "base URL" in odd


def test_listings_share_one_json_shape_and_queues_ls_says_how_fresh(cli, queue_name, amqp):
    queue = queue_name("shape")
    cli("queues", "create", queue)
    cli("publish", queue, "one")
    for args in (["queues", "ls", "--name", queue], ["consumers", "list"], ["keys", "ls"]):
        listing = json.loads(cli(*args, "--json").stdout)
        assert listing.keys() == {"items", "total"} and listing["total"] == len(listing["items"]), args
    [item] = json.loads(cli("queues", "list", "--name", queue, "--json").stdout)["items"]
    assert (item["messages_ready"], item["stats_age_seconds"]) == (1, 0)  # read live, not 5 s old
    assert "read live" in cli("queues", "ls", "--name", queue).stderr
