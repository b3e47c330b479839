"""Every ``workerrmq`` command and group has ``--help`` with an example, and every option a description.

Walks :data:`workerrmq.cli.main` recursively, so a command added later is held to it too.
Needs no broker, database or API: ``--help`` runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from workerrmq.cli import main


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """*command* and every command under it, each with the arguments that reach it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(main))


def test_the_walk_reaches_the_client_commands_and_the_server_ones():
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"api", "worker", "run", "keys create", "queues create", "consumers create", "dlq replay"} <= paths
    assert {"publish", "apply", "export", "api-keys revoke"} <= paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "workerrmq" for p, _ in COMMANDS])
def test_help_shows_an_example_and_describes_every_option(path, command):
    shown = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "Example" in shown.stdout, f"workerrmq {' '.join(path)} --help has no example"
    undescribed = [
        param.opts[0]
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not undescribed, f"workerrmq {' '.join(path)}: options without a description: {undescribed}"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.opts[0] in shown.stdout  # the option is listed in the help it describes
