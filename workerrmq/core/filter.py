"""A consumer's ``filter``: a CEL expression that says which messages its endpoint gets.

The expression sees four variables:

- ``routing_key``: a string;
- ``headers``: the message's AMQP headers, a map;
- ``properties``: a map of :data:`PROPERTIES` (absent ones are ``null``; ``timestamp``
  is a CEL timestamp);
- ``body``: the body decoded as JSON when it parses as JSON and is at most
  :data:`MAX_JSON_BODY` bytes, else the bytes.

It is compiled when the consumer is saved (:func:`compile_filter`, whose
:class:`FilterError` names the position of the mistake) and evaluated for each
message by the worker (:meth:`CompiledFilter.matches`).

The library is `common-expression-language` (the ``cel`` module, bindings to the
Rust ``cel`` crate). Measured on one message (a 60-byte JSON body, an expression over
the routing key, a header and a body field): about 25 µs per evaluation, against
555 µs for ``cel-python`` (pure Python) and 8 µs for ``cel-expr-python`` (Google's C++
runtime). The C++ runtime was faster still but cuts strings and bytes at the first NUL
(``size(b"ab\\x00cd")`` is 2 there), so a filter on a binary body would give wrong
answers; it is also a 0.1 release. Only the variables an expression names are built
for it: a filter on the routing key alone costs about 2 µs a message.

The Rust library parses and evaluates but does not type-check, so a type mistake
shows when a message is evaluated (:class:`FilterEvalError`: the worker counts it
apart and drops the message). Two mistakes are caught here at save time anyway, with
their position: a name that is none of the four variables, and a comprehension
(``all``, ``exists``, ``exists_one``, ``map``, ``filter``) inside another, whose cost
per message would grow with the product of the lists' lengths (a 1 MiB JSON list
nested in itself is 10^11 steps on the worker's event loop).

The library has no cost limit and holds the GIL while it evaluates, so a costly
expression would stall every consumer of the worker; the cost rules below are checked at
save time instead: no ``map``/``filter`` (quadratic in the library), no ``body`` or
``headers`` inside a comprehension, at most :data:`MAX_COMPREHENSIONS` comprehensions,
:data:`MAX_MESSAGE_MENTIONS` mentions of ``body``/``headers`` and :data:`MAX_PLUS` ``+``;
``matches`` takes only literal patterns, at most :data:`MAX_MATCHES`, each compiled once
here and refused past :data:`MAX_REGEX_SECONDS` (the library compiles them at every message).
The costliest expression they let through took about 0.5 s on a 0.9 MB JSON body
(90,000 items); without them, a 4 KB expression ran for minutes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import cel
import orjson

__all__ = [
    "MAX_EXPRESSION",
    "MAX_JSON_BODY",
    "PROPERTIES",
    "VARIABLES",
    "CompiledFilter",
    "FilterError",
    "FilterEvalError",
    "compile_filter",
    "decode_body",
]

#: The longest expression accepted, in characters: bounds the time and memory compiling takes.
MAX_EXPRESSION = 4096
#: Bodies up to this many bytes are decoded as JSON for ``body``; larger ones stay bytes.
MAX_JSON_BODY = 1 << 20
#: The variables an expression may name.
VARIABLES = ("routing_key", "headers", "properties", "body")
#: The message properties in ``properties`` (AMQP's ``type`` property is ``type`` here).
PROPERTIES = (
    "content_type",
    "correlation_id",
    "message_id",
    "reply_to",
    "type",
    "app_id",
    "timestamp",
    "priority",
    "delivery_mode",
    "expiration",
    "user_id",
)
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
#: Macros refused: the library builds their result list by copying it at every step, so their
#: cost grows with the square of the list's length (3,000 items: 1 s on the worker's event loop).
_QUADRATIC_MACROS = frozenset({"map", "filter"})
#: The variables that may be large (a 1 MiB JSON body, a frame of headers). The library copies
#: a list or map each time an expression reaches it, so each mention costs up to the size of the
#: message: a mention inside a comprehension costs that at every step (quadratic), and the
#: mentions and comprehensions an expression may hold are counted.
_LARGE = frozenset({"body", "headers"})
#: At most this many mentions of ``body`` or ``headers`` in one expression.
MAX_MESSAGE_MENTIONS = 32
#: At most this many comprehensions in one expression (each walks a list of up to the body's size).
MAX_COMPREHENSIONS = 4
#: At most this many ``matches`` in one expression: the library compiles each pattern at every
#: message (there is no cache), so each costs its compile time per message.
MAX_MATCHES = 4
#: A ``matches`` pattern that takes longer than this to compile is refused (simple ones take µs).
MAX_REGEX_SECONDS = 0.01
#: At most this many ``+`` in one expression: a chain of k concatenations of a large string or
#: list copies k²/2 times its size.
MAX_PLUS = 16
#: Identifiers CEL reads as type names (``type(body) == map``), not as variables.
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)
_ERROR_AT = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_DETAIL_MAX = 300


class FilterError(ValueError):
    """An expression that cannot be compiled; the message names where (line and column,
    1-based, as the expression is written) and why."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class FilterEvalError(Exception):
    """The expression failed on one message (a type mismatch, a missing key, not a bool)."""


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledFilter:
    """A compiled expression; :meth:`matches` evaluates it on one message."""

    expression: str
    _program: Any = dataclasses.field(repr=False)
    #: The variables the expression names: only those are built for each message.
    uses: frozenset[str] = frozenset(VARIABLES)
    #: The properties the expression reads (all when it uses ``properties`` otherwise than by
    #: name): only those go into the map, since the library converts each entry at some cost.
    properties: tuple[str, ...] = PROPERTIES

    def matches(
        self,
        routing_key: str,
        headers: Mapping[str, Any] | None,
        properties: Mapping[str, Any] | None,
        body: bytes,
    ) -> bool:
        """True if the message passes; :class:`FilterEvalError` if the expression fails on it
        or gives anything but a bool."""
        context: dict[str, Any] = {}
        uses = self.uses
        if "routing_key" in uses:
            context["routing_key"] = routing_key
        if "headers" in uses:
            context["headers"] = _cel_value(dict(headers or {}))
        if "properties" in uses:
            given = properties or {}
            context["properties"] = {name: _cel_value(given.get(name)) for name in self.properties}
        if "body" in uses:
            context["body"] = decode_body(body)
        try:
            result = self._program.execute(context)
        except Exception as exc:
            raise FilterEvalError(_short(f"{type(exc).__name__}: {exc}")) from None
        except BaseException as exc:  # the Rust library's panics derive from BaseException
            if not _is_panic(exc):
                raise
            raise FilterEvalError(_short(f"the evaluator failed: {exc}")) from None
        if not isinstance(result, bool):
            raise FilterEvalError(f"the expression gave {type(result).__name__}, not a bool")
        return result


def compile_filter(expression: str) -> CompiledFilter:
    """Compile *expression*; :class:`FilterError` naming the position of a mistake."""
    if not isinstance(expression, str):
        raise FilterError("must be a string")
    if not expression.strip():
        raise FilterError("must not be empty")
    if len(expression) > MAX_EXPRESSION:
        raise FilterError(f"longer than {MAX_EXPRESSION} characters ({len(expression)})")
    try:
        program = cel.compile(expression)
    except Exception as exc:
        raise _syntax_error(expression, str(exc)) from None
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        raise FilterError("the expression could not be parsed") from None
    scan = _Scan.of(expression)
    names = set(program.variables())
    for name in sorted(names - set(VARIABLES) - scan.bound - _TYPE_NAMES):
        line, column = _line_column(expression, scan.first.get(name, 0))
        raise FilterError(
            f"line {line}, column {column}: undeclared reference to {name!r} "
            f"(the variables are {', '.join(VARIABLES)})",
            line=line,
            column=column,
        )
    if scan.nested is not None:
        line, column = _line_column(expression, scan.nested)
        raise FilterError(
            f"line {line}, column {column}: a comprehension inside another is not allowed "
            "(its cost per message grows with the product of the lists' lengths)",
            line=line,
            column=column,
        )
    if scan.costly is not None:
        line, column = _line_column(expression, scan.costly[0])
        raise FilterError(f"line {line}, column {column}: {scan.costly[1]}", line=line, column=column)
    for offset, literal in scan.regexes:
        _check_regex(expression, offset, literal)
    read = (
        tuple(name for name in PROPERTIES if name in scan.properties)
        if scan.properties is not None
        else PROPERTIES
    )
    return CompiledFilter(expression, program, frozenset(names & set(VARIABLES)), read)


def decode_body(body: bytes) -> Any:
    """*body* as ``body`` sees it: decoded JSON when it is JSON of at most
    :data:`MAX_JSON_BODY` bytes, else the bytes themselves."""
    if len(body) <= MAX_JSON_BODY and body[:1] not in (b"", b"\x00"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return bytes(body)


def _cel_value(value: Any) -> Any:
    """An AMQP header or property value as the CEL library takes it: decimals as doubles,
    times as UTC timestamps, tables and arrays walked."""
    if isinstance(value, dict):
        return {str(k): _cel_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cel_value(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # AMQP timestamps are seconds since the epoch, UTC
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def _syntax_error(expression: str, text: str) -> FilterError:
    found = _ERROR_AT.search(text)
    if found is None:
        return FilterError(_short(text.split("\n", 1)[0]))
    line, column, detail = int(found[1]), int(found[2]), found[3]
    return FilterError(f"line {line}, column {column}: {_short(detail)}", line=line, column=column)


def _line_column(expression: str, offset: int) -> tuple[int, int]:
    before = expression[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


# -- a scan of the expression's tokens, for what the library does not report ------------------

_TOKEN = re.compile(
    r"""
    (?P<string>[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<quoted>`[^`\n]*`)
    | (?P<number>[0-9][0-9A-Za-z_.]*)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)


@dataclasses.dataclass
class _Scan:
    """What the tokens show: the names comprehensions bind, where each other name is
    first used (not after a ``.``), where a comprehension opens inside another, and which
    properties are read by name (``properties.type``, ``properties["type"]``; None when
    ``properties`` is used any other way)."""

    bound: set[str]
    first: dict[str, int]
    nested: int | None
    properties: set[str] | None
    #: Where the expression breaks a cost rule (offset, why), or None.
    costly: tuple[int, str] | None = None
    #: The literal patterns of its ``matches`` calls, with their offsets.
    regexes: tuple[tuple[int, str], ...] = ()

    @classmethod
    def of(cls, expression: str) -> _Scan:
        tokens = list(_tokens(expression))
        bound: set[str] = set()
        first: dict[str, int] = {}
        nested: int | None = None
        properties: set[str] | None = set()
        stack: list[bool] = []  # per open "(": does it open a comprehension's arguments?
        costly: tuple[int, str] | None = None
        mentions = comprehensions = plus = 0
        regexes: list[tuple[int, str]] = []
        for i, (kind, text, offset) in enumerate(tokens):
            after_dot = i > 0 and tokens[i - 1][1] == "."
            if costly is None:
                if kind == "ident" and not after_dot and text in _LARGE:
                    mentions += 1
                    if any(stack):
                        costly = (
                            offset,
                            (
                                f"{text} inside a comprehension is not allowed (each step would copy it: "
                                "the cost grows with the square of the message's size); test the "
                                "comprehension's own variable"
                            ),
                        )
                    elif mentions > MAX_MESSAGE_MENTIONS:
                        costly = offset, f"more than {MAX_MESSAGE_MENTIONS} mentions of body or headers"
                elif kind == "punct" and text == "+":
                    plus += 1
                    if plus > MAX_PLUS:
                        costly = offset, f"more than {MAX_PLUS} '+' (concatenations copy their operands)"
                elif (
                    kind == "ident" and text == "matches" and i + 1 < len(tokens) and tokens[i + 1][1] == "("
                ):
                    literal = _regex_literal(tokens, i + 1, method=after_dot)
                    if literal is None:
                        costly = (
                            offset,
                            (
                                "matches() takes a string literal as its pattern (the library compiles "
                                "the pattern at every message)"
                            ),
                        )
                    elif len(regexes) >= MAX_MATCHES:
                        costly = offset, f"more than {MAX_MATCHES} matches()"
                    else:
                        regexes.append((offset, literal))
            if kind == "ident" and not after_dot and text == "properties" and properties is not None:
                named = _property_named(tokens, i + 1)
                properties = None if named is None else properties | {named}
            if kind == "ident" and not after_dot:
                first.setdefault(text, offset)
            if text == "(":
                macro = i >= 2 and tokens[i - 1][0] == "ident" and tokens[i - 2][1] == "."
                macro = macro and tokens[i - 1][1] in _MACROS
                if macro:
                    if any(stack) and nested is None:
                        nested = tokens[i - 1][2]
                    comprehensions += 1
                    if costly is None and tokens[i - 1][1] in _QUADRATIC_MACROS:
                        costly = (
                            tokens[i - 1][2],
                            (
                                f"{tokens[i - 1][1]}() is not allowed (its cost grows with the square of "
                                "the list's length); use all(), exists() or exists_one()"
                            ),
                        )
                    elif costly is None and comprehensions > MAX_COMPREHENSIONS:
                        costly = tokens[i - 1][2], f"more than {MAX_COMPREHENSIONS} comprehensions"
                    bound.update(_bound_names(tokens, i + 1))
                stack.append(macro)
            elif text == ")" and stack:
                stack.pop()
        return cls(bound, first, nested, properties, costly, tuple(regexes))


def _regex_literal(tokens: list[tuple[str, str, int]], start: int, *, method: bool) -> str | None:
    """The pattern of the ``matches`` call whose ``(`` is at *start* when it is a string
    literal (its only argument, or the second of the global form), else None."""
    depth = 0
    for end in range(start, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[end][1], 0) if tokens[end][0] == "punct" else 0
        if depth == 0:
            break
    else:
        return None
    arguments = tokens[start + 1 : end]
    if method:
        return arguments[0][1] if len(arguments) == 1 and arguments[0][0] == "string" else None
    if len(arguments) >= 3 and arguments[-1][0] == "string" and arguments[-2][1] == ",":
        return arguments[-1][1]
    return None


def _check_regex(expression: str, offset: int, literal: str) -> None:
    """Refuse a ``matches`` pattern the library cannot compile, or that takes it longer than
    :data:`MAX_REGEX_SECONDS`: it compiles the pattern again at every message, holding the
    worker's event loop (``\\w{150}``: 0.26 s, 110 of them 31 s a message)."""
    line, column = _line_column(expression, offset)
    probe = cel.compile(f'"".matches({literal})')
    took = float("inf")
    for _ in range(3):  # the best of three: a busy machine must not refuse a cheap pattern
        started = time.perf_counter()
        try:
            probe.execute({})
        except Exception as exc:
            detail = str(exc).split("\n", 1)[0]
            raise FilterError(
                f"line {line}, column {column}: {_short(detail)}", line=line, column=column
            ) from None
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise FilterError(
                f"line {line}, column {column}: the pattern failed", line=line, column=column
            ) from None
        took = min(took, time.perf_counter() - started)
        if took <= MAX_REGEX_SECONDS:
            break
    if took > MAX_REGEX_SECONDS:
        raise FilterError(
            f"line {line}, column {column}: this pattern takes {took * 1000:.0f} ms to compile, "
            f"which the library does at every message (at most {MAX_REGEX_SECONDS * 1000:.0f} ms)",
            line=line,
            column=column,
        )


def _tokens(expression: str) -> Iterator[tuple[str, str, int]]:
    for found in _TOKEN.finditer(expression):
        kind = found.lastgroup or "punct"
        yield kind, found.group(), found.start()


def _bound_names(tokens: list[tuple[str, str, int]], start: int) -> list[str]:
    """The names a comprehension whose arguments start at *start* binds: its leading
    identifiers each followed by a comma (``x`` in ``all(x, ...)``, ``k, v`` in ``all(k, v, ...)``)."""
    names: list[str] = []
    i = start
    while i + 1 < len(tokens) and tokens[i][0] == "ident" and tokens[i + 1][1] == "," and len(names) < 2:
        names.append(tokens[i][1])
        i += 2
    return names


def _property_named(tokens: list[tuple[str, str, int]], start: int) -> str | None:
    """The name in ``properties.<name>`` or ``properties["<name>"]`` whose ``properties``
    ends before *start*, or None when the map is used otherwise."""
    following = [text for _, text, _ in tokens[start : start + 3]]
    if len(following) >= 2 and following[0] == "." and tokens[start + 1][0] == "ident":
        return following[1]
    if (
        len(following) == 3
        and following[0] == "["
        and following[2] == "]"
        and tokens[start + 1][0] == "string"
    ):
        literal = following[1]
        if literal[:1] in "\"'" and literal[-1:] == literal[:1] and len(literal) >= 2 and "\\" not in literal:
            return literal[1:-1]
    return None
