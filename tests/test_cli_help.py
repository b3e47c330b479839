"""Every ``workerrmq`` command and group has ``--help`` with an example, and every option a
description and its default; ``ls`` answers to ``list`` in every group.

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
    assert {"publish", "apply", "export", "keys revoke", "keys db create", "consumers update"} <= paths
    assert {"dlq show", "dlq discard", "messages attempts"} <= paths


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


def _help_records(path: tuple[str, ...], command: click.Command) -> Iterator[tuple[click.Option, str]]:
    """Each option of *command* with its help line as ``--help`` shows it (with the
    ``show_default`` that ``workerrmq`` hands down to every command)."""
    context = click.Context(main, info_name="workerrmq", **main.context_settings)
    for name in path:
        context = click.Context(
            command if name == path[-1] else context.command, parent=context, info_name=name
        )
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            record = param.get_help_record(context)
            assert record is not None
            yield param, record[1]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "workerrmq" for p, _ in COMMANDS])
def test_every_option_shows_its_default(path, command):
    """An option shows its default, as click's ``[default: ...]`` or in its own words; a flag is off
    unless given, which needs no saying."""
    silent = [
        param.opts[0]
        for param, text in _help_records(path, command)
        if "default" not in text.lower() and not (param.is_flag and not param.secondary_opts)
    ]
    assert not silent, f"workerrmq {' '.join(path)}: options that do not show their default: {silent}"


def test_list_is_ls_in_every_group():
    groups = [(path, c) for path, c in COMMANDS if isinstance(c, click.Group) and "ls" in c.commands]
    assert len(groups) >= 5  # queues, consumers, dlq, keys, keys db
    for path, _ in groups:
        shown = CliRunner().invoke(main, [*path, "list", "--help"], catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        assert shown.stdout == CliRunner().invoke(main, [*path, "ls", "--help"]).stdout.replace(
            " ls ", " list ", 1
        )
        listing = CliRunner().invoke(main, [*path, "--help"]).stdout
        assert "ls, list" in listing, f"workerrmq {' '.join(path)} --help does not name the alias"
