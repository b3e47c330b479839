"""The ``workerrmq`` command: ``api``, ``keys db``, and (with the engine) ``worker`` and ``run``;
the commands that talk to the API come from :mod:`workerrmq.client`."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from workerrmq import client
from workerrmq.core.credentials import redact_url
from workerrmq.core.scopes import SCOPES
from workerrmq.errors import ConfigError, WorkerRMQError
from workerrmq.logs import configure_logging
from workerrmq.settings import Settings

if TYPE_CHECKING:
    from workerrmq.store import Database
    from workerrmq.store.keys import KeyStore

__all__ = ["main"]


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc.message}") from None


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """Exit with one clear line when no RabbitMQ of ``RABBITMQ_URL`` answers on its AMQP port."""
    problems = []
    for url in settings.rabbitmq_urls:
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return
        except OSError as exc:
            problems.append(f"{redact_url(url)} ({exc.strerror or exc})")
    raise click.ClickException(
        f"cannot reach RabbitMQ at {', '.join(problems)}; "
        "start a broker (e.g. 'rabbitmq-server -detached') or set RABBITMQ_URL"
    )


@click.group(context_settings={"show_default": True})
def main() -> None:
    """WorkerRMQ: manage RabbitMQ queues and relay their messages to HTTP endpoints.

    \b
    Examples:
      workerrmq run                  # the API and one worker, as ./run.sh does
      workerrmq queues ls            # the queues, asked of a running API
      workerrmq consumers create --help
    """


@main.command()
def api() -> None:
    """Serve the REST API with Gunicorn on BIND (default 0.0.0.0:5000); starts no worker.

    Run workers beside it (workerrmq worker): without one, nothing is delivered.

    \b
    Example:
      BIND=0.0.0.0:8000 API_WORKERS=4 workerrmq api
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_broker(settings)
    from workerrmq.server import Gunicorn, share_metrics_between_processes

    share_metrics_between_processes()
    prepare_database(settings)
    Gunicorn(settings).run()


def prepare_database(settings: Settings) -> None:
    """Migrate the schema and create the first admin key before any worker process starts."""
    from workerrmq.services.container import Services

    services = Services.build(settings)
    try:
        services.prepare()
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc.message}") from None
    except WorkerRMQError as exc:
        raise click.ClickException(f"database {exc.message}") from None
    finally:
        services.close()


@main.command()
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Engine processes to run and supervise (default: one per core).",
)
def worker(processes: int | None) -> None:
    """Run the consumer engine: deliver every running consumer's messages until SIGTERM.

    \b
    Example:
      workerrmq worker --processes 4
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_broker(settings)
    processes = processes or os.cpu_count() or 1
    if processes == 1:
        from workerrmq.worker.engine import run_worker

        run_worker(settings)
        return
    # The supervisor only starts and watches the engines: it becomes a bare interpreter
    # (same pid, so signals still reach it) that never imports the engine's libraries.
    from workerrmq.supervisor import nth_bind

    binds = [nth_bind(settings.worker_bind, i) for i in range(processes)]
    os.execv(
        sys.executable,
        [sys.executable, "-m", "workerrmq.supervisor", settings.log_level, settings.log_format, *binds],
    )


@main.command()
def run() -> None:
    """Run the API and one worker together; Ctrl-C or SIGTERM stops both cleanly.

    \b
    Example:
      LOG_FORMAT=json workerrmq run
    """
    from workerrmq.supervisor import API, ENGINE, supervise

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    check_broker(settings)
    prepare_database(settings)
    sys.exit(supervise([API, ENGINE]))


@click.group("db", cls=client.ClientGroup)
def keys_db() -> None:
    """Manage API keys straight in the database (DATABASE_URL), without the API.

    For the first key, before the API runs; once it runs, workerrmq keys ls|create|revoke
    do the same through it. Each command prints the database it uses, and refuses to
    start a new SQLite file unless given --create: a key made in a database the API does
    not read is one the API rejects.

    \b
    Examples:
      workerrmq keys db create ops-admin --scope admin --create
      workerrmq keys db ls
    """


def _key_store(create: bool = False) -> tuple[KeyStore, Database]:
    from workerrmq.store import Database
    from workerrmq.store.keys import KeyStore

    settings = load_settings()
    url = settings.database_url
    file = _sqlite_file(url)
    new = file is not None and not file.exists()
    if new and not create:
        raise click.ClickException(
            f"no database at {file} (DATABASE_URL={redact_url(url)}); the API you mean may use "
            "another DATABASE_URL (set it, or run this where its .env is), or give --create to start "
            "a new one"
        )
    where = f" ({'new file ' if new else ''}{file})" if file is not None else ""
    click.echo(f"database: {redact_url(url)}{where}", err=True)
    db = Database(url)
    db.migrate()
    return KeyStore(db), db


def _sqlite_file(url: str) -> Path | None:
    """The absolute path of the SQLite file *url* names (None for another database)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise click.ClickException(f"configuration: DATABASE_URL {redact_url(url)!r} is not a URL") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).absolute()


_CREATE = click.option(
    "--create",
    is_flag=True,
    help="start a new SQLite database when DATABASE_URL names a file that does not exist",
)


@keys_db.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="read",
    show_default=True,
    help="read: GET only; publish: read and publish; admin: everything",
)
@_CREATE
def keys_db_create(name: str, scope: str, create: bool) -> None:
    """Create a key NAME and print its token (shown only this once).

    \b
    Example:
      workerrmq keys db create ci-publisher --scope publish
    """
    store, _ = _key_store(create)
    try:
        info, token = store.create(name, scope)
    except WorkerRMQError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created key {info.id} {info.name!r} with scope {info.scope}:", err=True)
    click.echo(token)


@keys_db.command("ls")
@click.option("--json", "as_json", is_flag=True, help='print {"items": [...], "total": n} instead of lines')
def keys_db_ls(as_json: bool) -> None:
    """List keys, never their tokens.

    Each line: id, name, scope, the token's first characters, active or revoked.

    \b
    Example:
      workerrmq keys db ls
    """
    store, _ = _key_store()
    items = store.list()
    if as_json:
        views = [
            {
                "id": k.id,
                "name": k.name,
                "scope": k.scope,
                "prefix": k.prefix,
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in items
        ]
        click.echo(json.dumps({"items": views, "total": len(views)}, indent=2))
        return
    for k in items:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.id:>4}  {k.name:<30} {k.scope:<8} {k.prefix}…  {state}")


@keys_db.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
def keys_db_revoke(key_id: int) -> None:
    """Revoke the key with id ID.

    ID is the first column of workerrmq keys db ls.

    \b
    Example:
      workerrmq keys db revoke 3
    """
    store, _ = _key_store()
    try:
        info = store.revoke(key_id)
    except WorkerRMQError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked key {info.id} {info.name!r}")


client.register(main)
client.keys.add_command(keys_db)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
