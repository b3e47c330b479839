"""``workerrmq keys ls|create|revoke``: API keys through the API (needs an admin key).

``workerrmq keys db ...`` (added by :mod:`workerrmq.cli`) is the other way in: straight to
the database, for the first key.
"""

from __future__ import annotations

import click

from workerrmq.client.base import ClientGroup, Context, api_command
from workerrmq.core.scopes import SCOPES

__all__ = ["keys"]


@click.group("keys", cls=ClientGroup)
def keys() -> None:
    """List, create and revoke API keys through the API (admin key needed).

    Before the API runs, or to make its first key, keys db does the same straight
    in the database (DATABASE_URL).

    \b
    Examples:
      workerrmq keys ls
      workerrmq keys create ci-publisher --scope publish
      workerrmq keys revoke 7
      workerrmq keys db create ops-admin --scope admin
    """


@api_command(keys, "ls")
def keys_ls(ops: Context) -> None:
    """List keys, revoked ones included (never their tokens).

    \b
    Example:
      workerrmq keys ls --json | jq '.items[] | select(.revoked_at == null) | .name'
    """
    items = ops.client.get("/api/v1/keys")
    if ops.as_json:
        ops.print_json({"items": items, "total": len(items)})
        return
    ops.table(
        ["id", "name", "scope", "prefix", "created", "state"],
        (
            [
                k["id"],
                k.get("name"),
                k.get("scope"),
                f"{k.get('prefix')}…",
                _when(k.get("created_at")),
                f"revoked {_when(k['revoked_at'])}" if k.get("revoked_at") else "active",
            ]
            for k in items
        ),
        empty="no keys",
    )


def _when(stamp: str | None) -> str | None:
    """An ISO timestamp to the minute."""
    return stamp[:16].replace("T", " ") if stamp else None


@api_command(keys, "create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="read",
    show_default=True,
    help="read: GET only; publish: read and publish; admin: everything",
)
def keys_create(ops: Context, name: str, scope: str) -> None:
    """Create key NAME and print its token on stdout (shown only this once).

    \b
    Example:
      export WORKERRMQ_KEY=$(workerrmq keys create ci-publisher --scope publish)
    """
    key = ops.client.post("/api/v1/keys", {"name": name, "scope": scope})
    if ops.as_json:
        ops.print_json(key)
        return
    ops.note(
        f"created key {key['id']} {key['name']!r} with scope {key['scope']}; "
        "its token is shown only this once:"
    )
    click.echo(key["key"])


@api_command(keys, "revoke")
@click.argument("key_id", metavar="ID", type=int)
def keys_revoke(ops: Context, key_id: int) -> None:
    """Revoke the key with id ID; it stops working within 2 s.

    \b
    Example:
      workerrmq keys revoke 7
    """
    key = ops.client.delete(f"/api/v1/keys/{key_id}")
    if ops.as_json:
        ops.print_json(key)
    else:
        ops.say(f"revoked key {key['id']} {key['name']!r}")
