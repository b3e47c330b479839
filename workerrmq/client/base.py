"""What every operator command shares: options, the client, output, and exit codes."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from workerrmq.client.config import ConfigProblem, resolve
from workerrmq.client.http import EXIT, ApiClient, ApiError

__all__ = [
    "ALIASES",
    "Context",
    "ClientCommand",
    "ClientGroup",
    "api_command",
    "fail",
    "name_values",
    "time_value",
]


class CommandFailed(click.ClickException):
    """Printed as ``Error: <message>`` on stderr; exits with *exit_code*."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click types it ClassVar; it reads the instance's


def fail(message: str, exit_code: int = EXIT["other"]) -> CommandFailed:
    return CommandFailed(message, exit_code)


def _exits_other(exc: click.UsageError) -> click.UsageError:
    """*exc*, exiting 1 rather than click's 2: exit code 2 means the API refused the input."""
    exc.exit_code = EXIT["other"]  # type: ignore[misc]  # click types it ClassVar; it reads the instance's
    return exc


class ClientCommand(click.Command):
    """Usage errors exit 1: exit code 2 means the API refused the input."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _exits_other(exc) from None


#: Other names a subcommand answers to, in every group.
ALIASES = {"list": "ls"}


class ClientGroup(click.Group):
    """Usage errors exit 1, and ``list`` is ``ls`` (both spellings work everywhere)."""

    command_class = ClientCommand

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section, ``ls`` shown as ``ls, list``."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            label = ", ".join([name, *(alias for alias, to in ALIASES.items() if to == name)])
            rows.append((label, command.get_short_help_str(limit=formatter.width - 6 - len(label))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _exits_other(exc) from None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _exits_other(exc) from None


ClientGroup.group_class = ClientGroup


_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def time_value(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An ISO 8601 time (UTC when it names no zone), or an age such as 30m, 2h or 1d."""
    if value is None:
        return None
    relative = _RELATIVE.match(value.strip())
    if relative:
        delta = dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return (dt.datetime.now(dt.UTC) - delta).isoformat()
    try:
        stamp = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2024-05-01T12:00:00Z) nor an age (30m, 2h, 1d)",
            param=param,
        ) from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).isoformat()


def name_values(items: Iterable[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict; a usage error names *option* otherwise."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        pairs[name] = value
    return pairs


@dataclass
class Context:
    """Handed to each command: the client, the output mode and consoles."""

    client: ApiClient
    as_json: bool
    out: Console
    err: Console

    def list_all(self, path: str, *, page_size: int | None = 500, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged listing (``items``/``total``), read *page_size* at a time
        (None: the API's own page size)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.client.get(path, **params, page=page, page_size=page_size)
            if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                raise fail(
                    f"{self.client.url}{path} answered JSON without a list of items: expected the "
                    "WorkerRMQ API's base URL, such as http://127.0.0.1:5000; is --url right?"
                )
            items += answer["items"]
            if not answer["items"] or len(items) >= answer["total"]:
                return items
            page += 1

    def print_json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def say(self, text: str) -> None:
        """A line for people: on stdout, or on stderr in --json mode."""
        (self.err if self.as_json else self.out).print(Text(text))

    def note(self, text: str) -> None:
        """A line that is never the command's result (stderr)."""
        self.err.print(Text(text))

    def table(
        self,
        columns: Iterable[str],
        rows: Iterable[Iterable[Any]],
        *,
        title: str | None = None,
        empty: str = "nothing to show",
    ) -> None:
        lines = [list(row) for row in rows]
        if not lines:
            self.note(empty)
            return
        table = Table(title=title, header_style="bold", title_justify="left")
        for i, column in enumerate(columns):
            numbers = all(_is_number(line[i]) for line in lines if line[i] is not None)
            # The first column names the row: never wrapped, so it can be grepped.
            table.add_column(column, no_wrap=i == 0, overflow="fold", justify="right" if numbers else "left")
        for line in lines:
            table.add_row(*(_cell(v) for v in line))
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column table of name and value."""
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in pairs:
            table.add_row(name, _cell(value))
        self.out.print(table)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> Text:
    """A table cell; Text keeps names such as "[red]" from being read as markup."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.2f}".rstrip("0").rstrip(".") if value else "0")
    if isinstance(value, Text):
        return value
    return Text(str(value))


def _console(stream: Any) -> Console:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped: wide enough that rows stay whole for grep and awk
        console = Console(file=stream, highlight=False, width=max(console.width, 200))
    return console


def api_command(group: click.Group | None, name: str, **settings: Any) -> Callable[..., Any]:
    """Declare command *name* (under *group*, if given) with the shared options; the
    function gets ``ops`` first.

    API failures become exit codes here, and nowhere else.
    """

    def decorate(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def run(
            url: str | None, key: str | None, config: str | None, timeout: float, as_json: bool, **kwargs: Any
        ) -> None:
            try:
                access = resolve(url, key, config)
            except ConfigProblem as exc:
                raise fail(str(exc)) from None
            ops = Context(
                ApiClient(access.url, access.key, timeout=timeout),
                as_json,
                _console(sys.stdout),
                _console(sys.stderr),
            )
            try:
                f(ops, **kwargs)
            except ApiError as exc:
                raise fail(exc.message, exc.exit_code) from None
            except click.UsageError as exc:  # found by the command itself
                raise _exits_other(exc) from None

        own = getattr(f, "__click_params__", [])
        run.__click_params__ = []  # type: ignore[attr-defined]
        for option in reversed(_SHARED):
            run = option(run)
        run.__click_params__.extend(own)  # type: ignore[attr-defined]  # the command's first
        command = click.command(name, cls=ClientCommand, **settings)(run)
        if group is not None:
            group.add_command(command)
        return command

    return decorate


_SHARED = [
    click.option(
        "--url",
        envvar="WORKERRMQ_URL",
        metavar="URL",
        help="API base URL [env WORKERRMQ_URL; config 'url'; default http://127.0.0.1:5000]",
    ),
    click.option(
        "--key",
        envvar="WORKERRMQ_KEY",
        metavar="KEY",
        help="API key [env WORKERRMQ_KEY; config 'key'; default: none]; prefer those two, a flag shows in "
        "the process list",
    ),
    click.option(
        "--config",
        envvar="WORKERRMQ_CONFIG",
        metavar="FILE",
        help="TOML file with url and key [env WORKERRMQ_CONFIG; default ~/.config/workerrmq/config.toml]",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        envvar="WORKERRMQ_TIMEOUT",
        help="seconds to wait for each API answer",
    ),
    click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of a table"),
]
